//! `--format` is Go's template language: ferry's CLI renders the same objects as the
//! docker CLI (28.x, the reference implementation of docker's formatter) renders them
//! when pointed at the same ferryd, for Docker's documented examples and the `json`
//! and `table` shorthands.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Result};
use ferry_testkit::{host_or_skip, scenario_name, unique, DockerCli, TestHost};

/// `ferry ARGS` and `docker ARGS` print the same (the scenario's objects, one ferryd).
fn same(host: &TestHost, docker: &DockerCli, args: &[&str]) -> Result<String> {
    let f = host.ferry(args)?.expect_success()?;
    let d = docker.run(args)?.expect_success()?;
    ensure!(
        f.stdout == d.stdout,
        "ferry and docker differ on {args:?}:\nferry:\n{}\ndocker:\n{}",
        f.stdout,
        d.stdout
    );
    Ok(f.stdout)
}

#[test]
fn dockers_documented_inspect_templates_render_as_the_docker_cli_renders_them() -> Result<()> {
    let Some(bin) = DockerCli::find_or_skip(scenario_name!()) else {
        return Ok(());
    };
    let host = host_or_skip!();
    let docker = DockerCli::new(&host, &bin)?;
    let net = unique("tnet");
    host.create_network(
        &net,
        &[
            "--subnet",
            "10.92.0.0/24",
            "--label",
            "b=2",
            "--label",
            "a=1",
        ],
    )?;
    host.run_idle("web", &["--network", &net, "--ip", "10.92.0.9"])?;

    let index = format!(r#"{{{{ (index .NetworkSettings.Networks "{net}").IPAddress }}}}"#);
    for t in [
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        index.as_str(),
        r#"{{join .Args " , "}}"#,
        "{{.Name}} {{if .State.Running}}running{{end}}",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}",
        "{{json .Args}} {{len .Config.Cmd}} {{upper .Name}} {{title .State.Status}}",
        r#"{{split .NetworkSettings.SandboxKey "/"}} {{println .Path}}"#,
        "json",
    ] {
        let out = same(&host, &docker, &["inspect", "--format", t, "web"])?;
        ensure!(!out.contains("<no value>"), "{t:?} gave {out:?}");
    }
    let ip = host.ferry_ok(&["inspect", "--format", &index, "web"])?;
    ensure!(ip == "10.92.0.9", "index template printed {ip:?}");

    for t in [
        "{{.Name}} {{if .Internal}}internal{{end}}",
        "{{range $k, $v := .Labels}}{{$k}}={{$v}} {{end}}",
        "{{json .Labels}} {{json .IPAM.Config}}",
        "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
    ] {
        same(&host, &docker, &["network", "inspect", "--format", t, &net])?;
    }
    let labels = host.ferry_ok(&[
        "network",
        "inspect",
        "--format",
        "{{range $k, $v := .Labels}}{{$k}}={{$v}} {{end}}",
        &net,
    ])?;
    ensure!(labels == "a=1 b=2", "labels range printed {labels:?}");
    let bad = host.ferry_err(&["inspect", "--format", "{{.Name", "web"])?;
    ensure!(bad.stderr.contains("template"), "a broken template:\n{bad}");
    host.finish()
}

#[test]
fn list_formats_table_and_json_render_as_the_docker_cli_renders_them() -> Result<()> {
    let Some(bin) = DockerCli::find_or_skip(scenario_name!()) else {
        return Ok(());
    };
    let host = host_or_skip!();
    let docker = DockerCli::new(&host, &bin)?;
    let net = unique("tnet");
    host.create_network(&net, &["--internal", "--label", "team=ferry"])?;
    host.run_idle("web", &["--network", &net])?;

    for f in [
        "json",
        r"table {{.Name}}\t{{.ID}}\t{{.Driver}}",
        "{{.Name}} {{if eq .Internal \"true\"}}internal{{end}}",
        r"table {{.Name}}\t{{.Labels}}\t{{.CreatedAt}}\t{{.IPv6}}",
    ] {
        same(&host, &docker, &["network", "ls", "--format", f])?;
    }
    same(&host, &docker, &["network", "ls"])?;
    same(
        &host,
        &docker,
        &["network", "ls", "--no-trunc", "--format", "{{.ID}}"],
    )?;
    let table = host.ferry_ok(&["network", "ls", "--format", "table"])?;
    ensure!(
        table
            .lines()
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            == Some(vec!["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]),
        "ferry network ls --format table:\n{table}"
    );

    for f in [
        r"table {{.Names}}\t{{.Command}}\t{{.Networks}}\t{{.State}}",
        "{{.ID}} {{.Names}} {{.Ports}} {{.Labels}}",
    ] {
        same(&host, &docker, &["ps", "--format", f])?;
    }
    let json: serde_json::Value =
        serde_json::from_str(&host.ferry_ok(&["ps", "--format", "json"])?)?;
    ensure!(
        json["Names"] == "web" && json["Networks"] == net.as_str() && json["State"] == "running",
        "ferry ps --format json: {json}"
    );
    host.finish()
}
