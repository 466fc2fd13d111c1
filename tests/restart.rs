//! Restart: ferryd killed with SIGKILL and started again on the same roots, in the same host
//! network namespace, keeps every network and sandbox, leaves the running sandboxes talking,
//! and rebuilds its allocations from the store (moby/moby#27404, #49781).

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Result};
use ferry_testkit::{host_or_skip, unique};
use std::collections::BTreeSet;

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

#[test]
fn ferryd_killed_with_sigkill_and_restarted_keeps_networks_and_sandboxes() -> Result<()> {
    let mut host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.70.0.0/24"])?;
    // web takes the address the allocator would give first; client gets the next one; fixed
    // takes the address the allocator would give after that.
    let web = host.run_web("web", &["--network", &net, "--ip", "10.70.0.2"])?;
    host.run_idle("client", &["--network", &net])?;
    host.run_idle("fixed", &["--network", &net, "--ip", "10.70.0.4"])?;
    let client_ip = host.ip_of("client", &net)?;
    host.expect_fetch("client", "10.70.0.2", &web)?;

    let networks = sorted_lines(&host.ferry_ok(&["network", "ls"])?);
    let sandboxes = sorted_lines(&host.ferry_ok(&["ps", "-aq"])?);
    let pids: Vec<_> = ["web", "client", "fixed"]
        .iter()
        .map(|n| host.inspect(n).map(|v| v["State"]["Pid"].clone()))
        .collect::<Result<_>>()?;
    let links: BTreeSet<String> = host.links()?.into_iter().collect();
    let netns_files = host.netns_files()?;

    host.restart_kill9()?;

    let after = sorted_lines(&host.ferry_ok(&["network", "ls"])?);
    ensure!(
        after == networks,
        "networks before the restart {networks:?}, after {after:?}"
    );
    let after = sorted_lines(&host.ferry_ok(&["ps", "-aq"])?);
    ensure!(
        after == sandboxes,
        "sandboxes before the restart {sandboxes:?}, after {after:?}"
    );
    for (name, pid) in ["web", "client", "fixed"].iter().zip(&pids) {
        let v = host.inspect(name)?;
        ensure!(
            v["State"]["Running"] == true,
            "{name} not running after the restart: {}",
            v["State"]
        );
        ensure!(
            &v["State"]["Pid"] == pid,
            "{name}'s pid was {pid}, now {}",
            v["State"]["Pid"]
        );
    }
    ensure!(
        host.ip_of("web", &net)? == "10.70.0.2",
        "web lost its static address"
    );
    ensure!(
        host.ip_of("client", &net)? == client_ip,
        "client's address changed"
    );
    let after: BTreeSet<String> = host.links()?.into_iter().collect();
    ensure!(
        after == links,
        "host links before the restart {links:?}, after {after:?}"
    );
    ensure!(
        host.netns_files()? == netns_files,
        "sandbox namespace files changed across the restart"
    );
    host.expect_fetch("client", "10.70.0.2", &web)?;

    // A dynamic allocation now must not take either static address or a live dynamic one.
    host.run_idle("late", &["--network", &net])?;
    let late = host.ip_of("late", &net)?;
    for taken in ["10.70.0.1", "10.70.0.2", client_ip.as_str(), "10.70.0.4"] {
        ensure!(
            late != taken,
            "after the restart a new sandbox got {late}, which is taken"
        );
    }
    host.expect_fetch("late", "10.70.0.2", &web)?;
    host.finish()
}

#[test]
fn restart_reconciles_orphans_and_sandboxes_that_died_while_ferryd_was_away() -> Result<()> {
    let mut host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.71.0.0/24"])?;
    host.run_idle("doomed", &["--network", &net])?;
    let pid = host.inspect("doomed")?["State"]["Pid"]
        .as_i64()
        .unwrap_or(0);
    ensure!(pid > 0, "doomed has no pid");
    let links_with_doomed: BTreeSet<String> = host.links()?.into_iter().collect();

    // Kernel objects ferry owns by name but the store does not know.
    let ferryd = host.ferryd_pid().expect("ferryd runs");
    let netns = format!("--net=/proc/{ferryd}/ns/net");
    let status = std::process::Command::new("nsenter")
        .args([
            netns.as_str(),
            "ip",
            "link",
            "add",
            "fyorphan00001",
            "type",
            "bridge",
        ])
        .status()?;
    ensure!(status.success(), "could not add the orphan link");
    let ghost = host.netns_dir().join("ferry-ghost");
    std::os::unix::fs::symlink("/nonexistent", &ghost)?;

    // ferryd dies, and so does the sandbox's process while it is away.
    let doomed_links: Vec<String> = host.sandbox_links("doomed")?;
    host.restart_kill9_with(|| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    })?;

    let links: BTreeSet<String> = host.links()?.into_iter().collect();
    ensure!(
        !links.contains("fyorphan00001"),
        "the orphan link survived reconcile: {links:?}"
    );
    ensure!(
        !ghost.exists() && std::fs::symlink_metadata(&ghost).is_err(),
        "the orphan netns link survived"
    );
    let fy_before: BTreeSet<_> = links_with_doomed
        .iter()
        .filter(|l| l.starts_with("fy") && !l.starts_with("fy-"))
        .collect();
    let fy_after: BTreeSet<_> = links
        .iter()
        .filter(|l| l.starts_with("fy") && !l.starts_with("fy-"))
        .collect();
    ensure!(fy_after.is_empty(), "the dead sandbox's veth survived: before {fy_before:?} after {fy_after:?} (inside: {doomed_links:?})");
    ensure!(
        links.contains("ferry0"),
        "the default bridge is gone after restart: {links:?}"
    );
    let state = host.inspect("doomed")?["State"]["Status"].clone();
    ensure!(
        state == "exited",
        "a sandbox whose process died is {state}, not exited"
    );
    host.finish()
}
