//! The macvlan driver: `ferry network create -d macvlan -o parent=IFACE`, Docker's
//! bridge and private modes. Each sandbox's interface is a macvlan link on the parent,
//! with an address of its own on the parent's segment; ferry makes nothing else on the
//! host (no bridge, no veth).
//!
//! The parent's segment is a [`Peer`](ferry_testkit::peer::Peer): a namespace joined to
//! ferryd's by a veth pair whose host end is the parent, so "a machine on the LAN" is a
//! real namespace with a server of its own. Every refusal has its control in the same
//! setup.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Result};
use ferry_testkit::{host_or_skip, unique, At, NoReach, TestHost};

/// The segment: the peer at 10.88.0.2, sandboxes from 10.88.0.128/25.
const SUBNET: &str = "10.88.0.0/24";
const RANGE: &str = "10.88.0.128/25";
const PEER_IP: &str = "10.88.0.2";

fn macvlan(host: &TestHost, name: &str, parent: &str, mode: &str) -> Result<String> {
    host.create_network(
        name,
        &[
            "--driver",
            "macvlan",
            "--subnet",
            SUBNET,
            "--ip-range",
            RANGE,
            "--opt",
            &format!("parent={parent}"),
            "--opt",
            &format!("macvlan_mode={mode}"),
        ],
    )
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The links in ferryd's namespace that ferry owns (`fy…`): a macvlan network has none.
fn ferry_links(host: &TestHost) -> Result<Vec<String>> {
    Ok(host
        .links()?
        .into_iter()
        .filter(|l| l.starts_with("fy"))
        .collect())
}

#[test]
fn sandboxes_on_a_macvlan_network_talk_to_each_other_and_to_the_parents_segment() -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.88.0.1/24", &format!("{PEER_IP}/24"))?;
    peer.serve("tcp", 80)?;
    let net = unique("mv");
    macvlan(&host, &net, &peer.host_if, "bridge")?;
    let inspect = host.ferry_ok(&["network", "inspect", &net, "--format", "{{.Driver}}"])?;
    ensure!(inspect.trim() == "macvlan", "driver: {inspect}");

    host.run_server("alpha", &["--network", &net], "tcp", 80)?;
    host.run_idle("beta", &["--network", &net])?;
    let (a, b) = (host.ip_of("alpha", &net)?, host.ip_of("beta", &net)?);
    ensure!(
        a.starts_with("10.88.0.1") || a.starts_with("10.88.0.2"),
        "alpha's address {a} is not from {RANGE}"
    );
    // Sandbox to sandbox, sandbox to the segment, the segment to a sandbox.
    host.expect_reach(At::Sandbox("beta"), "tcp", &a, 80)?;
    host.expect_reach(At::Sandbox("beta"), "tcp", PEER_IP, 80)?;
    let seen = host.expect_reach(At::Peer(&peer), "tcp", &a, 80)?;
    ensure!(
        seen.starts_with(PEER_IP),
        "alpha saw the peer as {seen}: not straight from the segment"
    );
    ensure!(
        ferry_links(&host)?.is_empty(),
        "a macvlan network made links on the host: {:?}",
        ferry_links(&host)?
    );

    // Disconnect takes beta's link away inside the sandbox; alpha stays.
    host.ferry_ok(&["network", "disconnect", &net, "beta"])?;
    let addrs = host
        .exec("beta", &[ferry_testkit::BUSYBOX, "ip", "-4", "addr"])?
        .expect_success()?
        .stdout;
    ensure!(
        !addrs.contains(&b),
        "beta still holds {b} after disconnect:\n{addrs}"
    );
    host.expect_reach(At::Peer(&peer), "tcp", &a, 80)?;
    // And connect brings it back, on the same segment.
    host.ferry_ok(&["network", "connect", &net, "beta"])?;
    let b = host.ip_of("beta", &net)?;
    ensure!(b.starts_with("10.88.0."), "beta's new address {b}");
    host.expect_reach(At::Sandbox("beta"), "tcp", PEER_IP, 80)?;
    host.expect_reach(At::Sandbox("beta"), "tcp", &a, 80)?;
    host.ferry_ok(&["rm", "-f", "alpha", "beta"])?;
    host.ferry_ok(&["network", "rm", &net])?;
    drop(peer);
    host.finish()
}

#[test]
fn private_mode_keeps_sandboxes_apart_but_not_from_the_segment() -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.88.0.1/24", &format!("{PEER_IP}/24"))?;
    peer.serve("tcp", 80)?;
    let net = unique("mvp");
    macvlan(&host, &net, &peer.host_if, "private")?;
    host.run_server("alpha", &["--network", &net], "tcp", 80)?;
    host.run_server("beta", &["--network", &net], "tcp", 80)?;
    let (a, b) = (host.ip_of("alpha", &net)?, host.ip_of("beta", &net)?);
    // Controls: each sandbox is up and reaches the segment, and the segment reaches each.
    host.expect_reach(At::Sandbox("beta"), "tcp", PEER_IP, 80)?;
    host.expect_reach(At::Sandbox("alpha"), "tcp", PEER_IP, 80)?;
    host.expect_reach(At::Peer(&peer), "tcp", &a, 80)?;
    host.expect_reach(At::Peer(&peer), "tcp", &b, 80)?;
    // Private: the two never reach each other (no ARP answer: the probe times out).
    host.expect_no_reach(At::Sandbox("beta"), "tcp", &a, 80, NoReach::Timeout)?;
    host.expect_no_reach(At::Sandbox("alpha"), "tcp", &b, 80, NoReach::Timeout)?;
    host.ferry_ok(&["rm", "-f", "alpha", "beta"])?;
    host.ferry_ok(&["network", "rm", &net])?;
    drop(peer);
    host.finish()
}

#[test]
fn bad_macvlan_input_is_refused_by_name_and_changes_nothing() -> Result<()> {
    let host = host_or_skip!();
    let peer = host.add_peer("10.88.0.1/24", &format!("{PEER_IP}/24"))?;
    let before = host.ferry_ok(&["network", "ls", "-q"])?;
    let refused = |args: &[&str], says: &str| -> Result<()> {
        let out = host.ferry_err(args)?;
        ensure!(
            out.stderr.contains(says),
            "{args:?} must say {says:?}:\n{out}"
        );
        let now = host.ferry_ok(&["network", "ls", "-q"])?;
        ensure!(now == before, "{args:?} changed the networks:\n{now}");
        Ok(())
    };
    let create = ["network", "create", "-d", "macvlan", "--subnet", SUBNET];
    let with = |extra: &[&str]| -> Vec<String> {
        create.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    refused(&strs(&with(&["m1"])), "-o parent=IFACE")?;
    refused(
        &strs(&with(&["-o", "parent=nosuch0", "m1"])),
        "nosuch0 is not an interface of this host",
    )?;
    refused(
        &strs(&with(&[
            "-o",
            &format!("parent={}", peer.host_if),
            "-o",
            "macvlan_mode=vepa",
            "m1",
        ])),
        "macvlan_mode=vepa",
    )?;
    // Control: the same create with a real parent is taken.
    let first = unique("mv");
    macvlan(&host, &first, &peer.host_if, "bridge")?;
    let before = host.ferry_ok(&["network", "ls", "-q"])?;
    let out = host.ferry_err(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.89.0.0/24",
        "-o",
        &format!("parent={}", peer.host_if),
        "m2",
    ])?;
    ensure!(
        out.stderr.contains("already using parent interface"),
        "a second network on one parent:\n{out}"
    );
    ensure!(
        host.ferry_ok(&["network", "ls", "-q"])? == before,
        "m2 was made"
    );
    // Published ports: a macvlan sandbox is reached at its own address.
    let out = host.ferry_err(&[
        "run",
        "-d",
        "--name",
        "pub",
        "--network",
        &first,
        "-p",
        "8080:80",
        "--",
        ferry_testkit::BUSYBOX,
        "sleep",
        "60",
    ])?;
    ensure!(
        out.stderr.contains("ports cannot be published"),
        "-p on a macvlan network:\n{out}"
    );
    ensure!(
        host.ferry_ok(&["ps", "-aq"])?.trim().is_empty(),
        "the refused run left a sandbox"
    );
    host.ferry_ok(&["network", "rm", &first])?;
    drop(peer);
    host.finish()
}
