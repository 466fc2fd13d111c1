//! Restart: ferryd killed with SIGKILL and started again on the same roots, in the same host
//! network namespace, keeps every network and sandbox, leaves the running sandboxes talking,
//! and rebuilds its allocations from the store (moby/moby#27404, #49781).

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
