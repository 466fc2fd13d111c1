//! The real docker CLI (docker 28, API negotiated down to 1.41) pointed at ferryd with
//! DOCKER_HOST: networks and sandboxes are managed and seen as on dockerd.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Context, Result};
use ferry_testkit::{host_or_skip, is_full_id, scenario_name, unique, DockerCli};

#[test]
fn docker_cli_creates_lists_inspects_and_removes_ferry_networks() -> Result<()> {
    let Some(bin) = DockerCli::find_or_skip(scenario_name!()) else {
        return Ok(());
    };
    let host = host_or_skip!();
    let docker = DockerCli::new(&host, &bin)?;
    let net = unique("dnet");

    let id = docker.ok(&[
        "network",
        "create",
        "--subnet",
        "10.90.0.0/24",
        "--label",
        "team=ferry",
        &net,
    ])?;
    ensure!(is_full_id(&id), "docker network create printed {id:?}");
    ensure!(
        host.network_inspect(&net)?["Id"] == id.as_str(),
        "ferry does not know the network docker created"
    );

    let ls = docker.ok(&["network", "ls"])?;
    ensure!(ls.starts_with("NETWORK ID"), "docker network ls:\n{ls}");
    for name in [net.as_str(), "bridge", "host", "none"] {
        ensure!(
            ls.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "docker network ls lacks {name}:\n{ls}"
        );
    }
    let filtered = docker.ok(&["network", "ls", "-q", "--filter", "label=team=ferry"])?;
    ensure!(
        filtered == id[..12],
        "docker network ls -q --filter label=team=ferry printed {filtered:?}"
    );

    let json: serde_json::Value = serde_json::from_str(&docker.ok(&["network", "inspect", &net])?)?;
    let n = &json[0];
    ensure!(
        n["Name"] == net.as_str() && n["Id"] == id.as_str() && n["Driver"] == "bridge",
        "docker network inspect: {n}"
    );
    ensure!(
        n["IPAM"]["Config"][0]["Subnet"] == "10.90.0.0/24",
        "subnet in docker network inspect: {}",
        n["IPAM"]
    );
    let formatted = docker.ok(&[
        "network",
        "inspect",
        "--format",
        "{{.Name}} {{.Driver}}",
        &net,
    ])?;
    ensure!(
        formatted == format!("{net} bridge"),
        "docker network inspect --format printed {formatted:?}"
    );

    let removed = docker.ok(&["network", "rm", &net])?;
    ensure!(removed == net, "docker network rm printed {removed:?}");
    ensure!(
        host.user_networks()?.is_empty(),
        "ferry still has {:?}",
        host.user_networks()?
    );

    let (p1, p2) = (unique("prune"), unique("prune"));
    docker.ok(&["network", "create", &p1])?;
    docker.ok(&["network", "create", &p2])?;
    let pruned = docker.ok(&["network", "prune", "-f"])?;
    ensure!(
        pruned.contains(&p1) && pruned.contains(&p2),
        "docker network prune -f printed:\n{pruned}"
    );
    ensure!(
        host.user_networks()?.is_empty(),
        "prune left {:?}",
        host.user_networks()?
    );
    let ls = host.ferry_ok(&["network", "ls"])?;
    ensure!(
        ls.contains("bridge") && ls.contains("host") && ls.contains("none"),
        "prune removed a predefined network:\n{ls}"
    );
    host.finish()
}

#[test]
fn docker_cli_sees_sandboxes_and_connects_them_to_networks() -> Result<()> {
    let Some(bin) = DockerCli::find_or_skip(scenario_name!()) else {
        return Ok(());
    };
    let host = host_or_skip!();
    let docker = DockerCli::new(&host, &bin)?;
    let id = host.run_idle("fxbr", &[])?;

    let ps = docker.ok(&["ps"])?;
    ensure!(
        ps.lines()
            .skip(1)
            .any(|l| l.starts_with(&id[..12]) && l.split_whitespace().last() == Some("fxbr")),
        "docker ps:\n{ps}"
    );
    let quiet = docker.ok(&["ps", "-q"])?;
    ensure!(quiet == id[..12], "docker ps -q printed {quiet:?}");

    let ip = docker.ok(&[
        "inspect",
        "--format",
        "{{ .NetworkSettings.IPAddress }}",
        "fxbr",
    ])?;
    ensure!(
        ip.starts_with("172.17."),
        "docker inspect --format .NetworkSettings.IPAddress printed {ip:?}"
    );
    ensure!(
        ip == host.ip_of("fxbr", "bridge")?,
        "docker and ferry disagree on fxbr's address"
    );

    let net = unique("dnet");
    docker.ok(&["network", "create", "--subnet", "10.91.0.0/24", &net])?;
    docker.ok(&[
        "network",
        "connect",
        "--ip",
        "10.91.0.50",
        "--alias",
        "db",
        &net,
        "fxbr",
    ])?;
    ensure!(
        host.ip_of("fxbr", &net)? == "10.91.0.50",
        "after docker network connect"
    );
    let links = host.sandbox_links("fxbr")?;
    ensure!(
        links.contains(&"eth1".into()),
        "no eth1 after docker network connect: {links:?}"
    );
    let members = docker.ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .Containers}}{{.Name}} {{end}}",
        &net,
    ])?;
    ensure!(
        members == "fxbr",
        "docker network inspect lists containers {members:?}"
    );

    docker.ok(&["network", "disconnect", &net, "fxbr"])?;
    let links = host.sandbox_links("fxbr")?;
    ensure!(
        !links.contains(&"eth1".into()),
        "eth1 remains after docker network disconnect: {links:?}"
    );
    let nets = host.networks_of("fxbr")?;
    ensure!(
        nets == ["bridge"],
        "fxbr's networks after disconnect: {nets:?}"
    );

    let refused = docker.run(&["network", "rm", "bridge"])?.expect_failure()?;
    ensure!(
        refused.stderr.contains("pre-defined") || refused.stderr.contains("predefined"),
        "docker network rm bridge:\n{refused}"
    );
    docker
        .ok(&["network", "rm", &net])
        .context("docker network rm after disconnect")?;
    host.finish()
}

#[test]
fn docker_port_and_ps_show_a_sandboxs_published_ports() -> Result<()> {
    let Some(bin) = DockerCli::find_or_skip(scenario_name!()) else {
        return Ok(());
    };
    let host = host_or_skip!();
    let docker = DockerCli::new(&host, &bin)?;
    let net = unique("dnet");
    host.create_network(&net, &["--subnet", "10.91.0.0/24"])?;
    host.run_idle(
        "web",
        &[
            "--network",
            &net,
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:9000-9001:90-91/udp",
        ],
    )?;
    let port = docker.ok(&["port", "web"])?;
    for want in [
        "80/tcp -> 0.0.0.0:8080",
        "90/udp -> 127.0.0.1:9000",
        "91/udp -> 127.0.0.1:9001",
    ] {
        ensure!(
            port.lines().any(|l| l == want),
            "docker port web lacks {want:?}:\n{port}"
        );
    }
    let one = docker.ok(&["port", "web", "80/tcp"])?;
    ensure!(
        one == "0.0.0.0:8080",
        "docker port web 80/tcp printed {one:?}"
    );
    let ps = docker.ok(&["ps", "--format", "{{.Ports}}"])?;
    ensure!(
        ps.contains("0.0.0.0:8080->80/tcp"),
        "docker ps Ports: {ps:?}"
    );
    host.finish()
}
