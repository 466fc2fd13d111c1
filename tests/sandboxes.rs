//! Sandboxes: a static --ip, the foreground run, and `rm` leaving nothing behind — checked
//! against the kernel (links and addresses in ferryd's namespace, namespace files, `ip netns`
//! links, mounts in /proc/self/mountinfo, processes), never against ferryd's own account.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Context, Result};
use ferry_testkit::{host_or_skip, process_gone, unique, TestHost, BUSYBOX};
use std::time::Duration;

fn pid_of(host: &TestHost, name: &str) -> Result<i32> {
    let v = host.inspect(name)?;
    ensure!(
        v["State"]["Running"] == true,
        "{name} is not running: {}",
        v["State"]
    );
    let pid = v["State"]["Pid"].as_i64().context("no .State.Pid")?;
    ensure!(pid > 0, "{name} has .State.Pid {pid}");
    Ok(pid as i32)
}

#[test]
fn sandbox_gets_the_ip_it_asks_for() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.21.0.0/24"])?;
    let web = host.run_web("web", &["--network", &net, "--ip", "10.21.0.77"])?;

    let inside = host.sandbox_ipv4("web")?;
    ensure!(
        inside.contains(&("eth0".into(), "10.21.0.77/24".into())),
        "eth0 inside web: {inside:?}"
    );
    ensure!(
        host.ip_of("web", &net)? == "10.21.0.77",
        "inspect disagrees with --ip"
    );
    let template = format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}");
    let formatted = host.ferry_ok(&["inspect", "--format", &template, "web"])?;
    ensure!(
        formatted == "10.21.0.77",
        "inspect --format {template} printed {formatted:?}"
    );
    let top = host.ferry_ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        "web",
    ])?;
    ensure!(
        top.is_empty(),
        ".NetworkSettings.IPAddress is filled only on the default bridge, got {top:?}"
    );

    host.run_idle("client", &["--network", &net])?;
    host.expect_fetch("client", "10.21.0.77", &web)?;
    host.finish()
}

#[test]
fn rm_leaves_no_veth_bridge_namespace_mount_or_address_behind() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    let id = host.create_network(&net, &["--subnet", "10.60.0.0/24"])?;
    let bridge = format!("fy-{}", &id[..8]);
    let web = host.run_web("web", &["--network", &net])?;
    host.run_idle("client", &["--network", &net])?;
    host.expect_fetch("client", &host.ip_of("web", &net)?, &web)?;

    // While they run, the kernel holds what rm must remove — so the checks below can see it.
    let during = host.leftovers()?;
    ensure!(
        during.links.contains(&bridge),
        "no bridge {bridge} in the host: {during}"
    );
    ensure!(
        during.links.len() >= 3,
        "expected the bridge and two host-side veths: {during}"
    );
    ensure!(
        during
            .addresses
            .contains(&(bridge.clone(), "10.60.0.1/24".into())),
        "the bridge should hold the gateway 10.60.0.1/24: {during}"
    );
    ensure!(
        during.netns_files.len() == 2,
        "expected two sandbox namespace files: {during}"
    );
    for name in ["ferry-web", "ferry-client"] {
        ensure!(
            during.ip_netns_links.iter().any(|l| l == name),
            "no {name} in the ip netns directory: {during}"
        );
    }
    ensure!(
        during.etc_mounts.is_empty(),
        "sandbox /etc mounts leaked into the host's mount namespace: {during}"
    );
    let pids = [pid_of(&host, "web")?, pid_of(&host, "client")?];

    host.ferry_ok(&["rm", "-f", "web"])?;
    host.ferry_ok(&["rm", "-f", "client"])?;
    for pid in pids {
        ensure!(
            process_gone(pid, Duration::from_secs(3)),
            "sandbox process {pid} still runs after rm -f"
        );
    }
    ensure!(
        host.sandbox_ids()?.is_empty(),
        "ferry ps -a still lists sandboxes"
    );
    let containers = host.network_inspect(&net)?["Containers"].clone();
    ensure!(
        containers.as_object().is_none_or(|m| m.is_empty()),
        "{net} still lists endpoints: {containers}"
    );
    let left = host.leftovers()?.except_links(&[&bridge, "ferry0"]);
    ensure!(
        left.is_empty(),
        "after rm, with the network still there:\n{left}"
    );

    host.ferry_ok(&["network", "rm", &net])?;
    let left = host.leftovers()?.except_links(&["ferry0"]);
    ensure!(left.is_empty(), "after network rm:\n{left}");
    let stray: Vec<_> = host
        .addresses()?
        .into_iter()
        .filter(|(_, a)| a.starts_with("10.60."))
        .collect();
    ensure!(
        stray.is_empty(),
        "addresses of the removed network remain: {stray:?}"
    );
    host.finish()
}

#[test]
fn rm_of_a_default_bridge_sandbox_leaves_only_ferry0() -> Result<()> {
    let host = host_or_skip!();
    host.run_idle("solo", &[])?;
    let pid = pid_of(&host, "solo")?;
    host.ferry_ok(&["rm", "-f", "solo"])?;
    ensure!(
        process_gone(pid, Duration::from_secs(3)),
        "sandbox process {pid} still runs after rm -f"
    );
    let left = host.leftovers()?.except_links(&["ferry0"]);
    ensure!(left.is_empty(), "after rm:\n{left}");
    host.finish()
}

#[test]
fn foreground_run_passes_the_exit_code_and_output_through() -> Result<()> {
    let host = host_or_skip!();
    let out = host.ferry(&[
        "run",
        "--name",
        "fg",
        "--",
        BUSYBOX,
        "sh",
        "-c",
        "echo hello from fg; exit 7",
    ])?;
    ensure!(out.code() == Some(7), "expected exit code 7:\n{out}");
    ensure!(
        out.stdout.contains("hello from fg"),
        "the sandbox's output did not come through:\n{out}"
    );

    // It exited: listed by ps -a, not by ps; a plain rm removes it and what it held.
    let all = host.ferry_ok(&["ps", "-a"])?;
    ensure!(
        all.contains("fg"),
        "ferry ps -a does not list the exited sandbox:\n{all}"
    );
    let running = host.ferry_ok(&["ps"])?;
    ensure!(
        !running.contains("fg"),
        "ferry ps lists an exited sandbox:\n{running}"
    );
    host.ferry_ok(&["rm", "fg"])?;
    let left = host.leftovers()?.except_links(&["ferry0"]);
    ensure!(left.is_empty(), "after rm of an exited sandbox:\n{left}");
    host.finish()
}

#[test]
fn run_with_rm_removes_the_sandbox_when_it_exits() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.61.0.0/24"])?;
    let script = format!("{BUSYBOX} hostname; {BUSYBOX} ip -4 -o addr show eth0");
    let args = [
        "run",
        "--rm",
        "--name",
        "once",
        "--network",
        &net,
        "--hostname",
        "oncehost",
        "--",
        BUSYBOX,
        "sh",
        "-c",
        &script,
    ];
    let out = host.ferry(&args)?.expect_success()?;
    ensure!(
        out.stdout.contains("oncehost"),
        "--hostname not applied:\n{out}"
    );
    ensure!(
        out.stdout.contains("inet 10.61.0."),
        "eth0 has no address in {net}:\n{out}"
    );
    ensure!(
        host.sandbox_ids()?.is_empty(),
        "--rm left the sandbox in ferry ps -a"
    );
    let id = host.network_inspect(&net)?["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let left = host.leftovers()?;
    let bridge = format!("fy-{}", &id[..8.min(id.len())]);
    let left = left.except_links(&[&bridge, "ferry0"]);
    ensure!(left.is_empty(), "after a --rm run exited:\n{left}");
    host.finish()
}

/// ferryd in a mount namespace of its own, its exec root a tmpfs the CLI cannot see (as
/// under `ip netns exec` or a service's private mounts): foreground `run` and `exec`
/// still enter the sandbox, its network and its own /etc/hosts, through descriptors
/// ferryd passes over the API socket.
#[test]
fn foreground_run_and_exec_work_when_ferryds_mounts_are_not_visible() -> Result<()> {
    if !ferry_testkit::privileged("private-mounts") {
        return Ok(());
    }
    let host = TestHost::start_with_private_mounts("private-mounts")?;
    let net = unique("pm");
    host.create_network(&net, &["--subnet", "10.93.0.0/24"])?;
    host.run_idle("idle", &["--network", &net])?;
    // The premise: the pin ferryd names is not a namespace from here.
    let key = host.inspect("idle")?["NetworkSettings"]["SandboxKey"]
        .as_str()
        .context("no SandboxKey")?
        .to_string();
    ensure!(
        !std::path::Path::new(&key).exists()
            || std::fs::metadata(&key)?.len() == 0
                && !host
                    .mounts_under_root()?
                    .iter()
                    .any(|m| m.mount_point == key),
        "{key} is visible to the test: the scenario's premise does not hold"
    );
    let ip = host.ip_of("idle", &net)?;
    let out = host.exec(
        "idle",
        &[BUSYBOX, "sh", "-c", "ip -4 addr show eth0; cat /etc/hosts"],
    )?;
    ensure!(
        out.success() && out.stdout.contains(&ip) && out.stdout.contains("idle"),
        "exec did not run inside the sandbox (address {ip}, its /etc/hosts):\n{out}"
    );
    let out = host.ferry(&[
        "run",
        "--name",
        "fg",
        "--network",
        &net,
        "--",
        BUSYBOX,
        "sh",
        "-c",
        "ip -4 addr show eth0 | grep -q 10.93.0. && exit 7",
    ])?;
    ensure!(
        out.code() == Some(7),
        "foreground run, expected exit 7:\n{out}"
    );
    host.ferry_ok(&["rm", "-f", "idle", "fg"])?;
    host.finish()
}
