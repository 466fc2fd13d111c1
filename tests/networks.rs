//! Networks: sandboxes on one network talk; dynamic addresses follow the ip-range; connect and
//! disconnect add and remove eth1, also many at once; the host and none drivers behave as
//! Docker's.
//!
//! Each test builds its own TestHost (ferryd in a throwaway network namespace) and proves
//! reachability with a real TCP request and its reply (busybox httpd ← an HTTP request over busybox nc).

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Result};
use ferry_testkit::{host_or_skip, unique, At, NoReach};
use std::collections::BTreeSet;

fn set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

#[test]
fn two_sandboxes_on_one_user_network_reach_each_other() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(&net, &["--subnet", "10.20.0.0/24"])?;
    let a = host.run_web("alpha", &["--network", &net])?;
    let b = host.run_web("beta", &["--network", &net])?;
    let a_ip = host.ip_of("alpha", &net)?;
    let b_ip = host.ip_of("beta", &net)?;
    ensure!(
        a_ip.starts_with("10.20.0.") && b_ip.starts_with("10.20.0."),
        "addresses outside the subnet: {a_ip}, {b_ip}"
    );
    ensure!(a_ip != b_ip, "both sandboxes got {a_ip}");

    host.expect_fetch("alpha", &b_ip, &b)?;
    host.expect_fetch("beta", &a_ip, &a)?;
    host.finish()
}

#[test]
fn two_sandboxes_on_the_default_bridge_reach_each_other() -> Result<()> {
    let host = host_or_skip!();
    let a = host.run_web("alpha", &[])?;
    host.run_idle("beta", &[])?;
    let a_ip = host.ip_of("alpha", "bridge")?;
    ensure!(
        a_ip.starts_with("172.17."),
        "default bridge address {a_ip} is not in 172.17.0.0/16"
    );
    let top = host.inspect("alpha")?["NetworkSettings"]["IPAddress"].clone();
    ensure!(
        top == a_ip.as_str(),
        ".NetworkSettings.IPAddress is {top}, expected {a_ip} on the default bridge"
    );
    ensure!(
        host.links()?.iter().any(|l| l == "ferry0"),
        "no ferry0 bridge in the host: {:?}",
        host.links()?
    );

    host.expect_fetch("beta", &a_ip, &a)?;
    host.finish()
}

#[test]
fn dynamic_addresses_follow_the_ip_range_sequence() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("net");
    host.create_network(
        &net,
        &["--subnet", "10.40.0.0/24", "--ip-range", "10.40.0.128/25"],
    )?;
    let first = host.run_web("s1", &["--network", &net])?;
    host.run_idle("s2", &["--network", &net])?;
    host.run_idle("s3", &["--network", &net])?;
    for (name, want) in [
        ("s1", "10.40.0.128"),
        ("s2", "10.40.0.129"),
        ("s3", "10.40.0.130"),
    ] {
        let got = host.ip_of(name, &net)?;
        ensure!(
            got == want,
            "{name} got {got}, expected {want} (next in the ip-range)"
        );
    }

    // A freed address is not handed out again at once: allocation moves on.
    host.ferry_ok(&["rm", "-f", "s2"])?;
    host.run_idle("s4", &["--network", &net])?;
    let got = host.ip_of("s4", &net)?;
    ensure!(
        got == "10.40.0.131",
        "after freeing .129 the next sandbox got {got}, expected 10.40.0.131"
    );
    let inside = host.sandbox_ipv4("s4")?;
    ensure!(
        inside.contains(&("eth0".into(), "10.40.0.131/24".into())),
        "inside s4, eth0 does not hold 10.40.0.131/24: {inside:?}"
    );
    host.expect_fetch("s4", "10.40.0.128", &first)?;
    host.finish()
}

#[test]
fn connect_adds_eth1_and_disconnect_removes_it() -> Result<()> {
    let host = host_or_skip!();
    let (front, back) = (unique("front"), unique("back"));
    host.create_network(&front, &["--subnet", "10.50.0.0/24"])?;
    host.create_network(&back, &["--subnet", "10.51.0.0/24"])?;
    let web = host.run_web("web", &["--network", &back])?;
    host.run_idle("client", &["--network", &front])?;
    let web_ip = host.ip_of("web", &back)?;
    let links = host.sandbox_links("client")?;
    ensure!(
        links.contains(&"eth0".into()) && !links.contains(&"eth1".into()),
        "client before connect: {links:?}"
    );
    let host_links_before = set(host.links()?);

    host.ferry_ok(&[
        "network",
        "connect",
        "--ip",
        "10.51.0.50",
        "--alias",
        "cli",
        &back,
        "client",
    ])?;
    let links = host.sandbox_links("client")?;
    ensure!(
        links.contains(&"eth1".into()),
        "no eth1 in client after connect: {links:?}"
    );
    let addrs = host.sandbox_ipv4("client")?;
    ensure!(
        addrs.contains(&("eth1".into(), "10.51.0.50/24".into())),
        "eth1 does not hold 10.51.0.50/24: {addrs:?}"
    );
    ensure!(
        host.ip_of("client", &back)? == "10.51.0.50",
        "inspect does not show 10.51.0.50 on {back}"
    );
    let added: Vec<_> = set(host.links()?)
        .difference(&host_links_before)
        .cloned()
        .collect();
    ensure!(
        added.len() == 1,
        "connect should add one host-side veth, added {added:?}"
    );
    host.expect_fetch("client", &web_ip, &web)?;

    host.ferry_ok(&["network", "disconnect", &back, "client"])?;
    let links = host.sandbox_links("client")?;
    ensure!(
        !links.contains(&"eth1".into()) && links.contains(&"eth0".into()),
        "client after disconnect: {links:?}"
    );
    let nets = host.networks_of("client")?;
    ensure!(
        nets == [front.clone()],
        "client's networks after disconnect: {nets:?}"
    );
    let containers = host.network_inspect(&back)?["Containers"].clone();
    ensure!(
        containers
            .as_object()
            .is_some_and(|m| m.len() == 1 && m.values().all(|c| c["Name"] == "web")),
        "{back} should list only web after disconnect: {containers}"
    );
    let after = set(host.links()?);
    ensure!(
        after == host_links_before,
        "host links after disconnect {after:?} differ from before connect {host_links_before:?}"
    );
    host.finish()
}

/// The default route goes where dockerd 20.10 puts it: through the network whose name
/// sorts first (libnetwork's endpoint order), not the first one joined. A sandbox on
/// `zz-…` connected to `aa-…` leaves through `aa-…`; disconnected, through `zz-…` again;
/// connected to `mm-…` (which sorts after `aa-…` but before `zz-…`, with `aa-…` gone)
/// through `mm-…`. Shown by a peer outside the host that sees each network's own source
/// address (masquerade off on all three).
#[test]
fn the_default_route_moves_to_the_network_whose_name_sorts_first() -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.93.0.1/24", "10.93.0.2/24")?;
    peer.serve("udp", 80)?;
    let suffix = unique("");
    let nets = [
        (format!("zz{suffix}"), "10.94.1.0/24"),
        (format!("aa{suffix}"), "10.94.2.0/24"),
        (format!("mm{suffix}"), "10.94.3.0/24"),
    ];
    for (name, subnet) in &nets {
        peer.route_via_host(subnet)?;
        host.create_network(
            name,
            &[
                "--subnet",
                subnet,
                "-o",
                "com.docker.network.bridge.enable_ip_masquerade=false",
            ],
        )?;
    }
    let [(zz, _), (aa, _), (mm, _)] = &nets;
    host.run_idle("sb", &["--network", zz])?;
    let seen = |want: &str| -> Result<()> {
        let ip = host.ip_of("sb", want)?;
        let from = host.expect_reach(At::Sandbox("sb"), "udp", &peer.ip, 80)?;
        ensure!(
            from == ip,
            "the peer saw {from}, not sb's address on {want} ({ip})"
        );
        Ok(())
    };
    seen(zz)?;
    host.ferry_ok(&["network", "connect", aa, "sb"])?;
    seen(aa)?;
    host.ferry_ok(&["network", "disconnect", aa, "sb"])?;
    seen(zz)?;
    host.ferry_ok(&["network", "connect", mm, "sb"])?;
    seen(mm)?;
    drop(peer);
    host.finish()
}

#[test]
fn connects_and_disconnects_at_once_leave_each_sandbox_as_inspect_says() -> Result<()> {
    let host = host_or_skip!();
    let (home, busy) = (unique("home"), unique("busy"));
    host.create_network(&home, &["--subnet", "10.52.0.0/24"])?;
    host.create_network(&busy, &["--subnet", "10.53.0.0/24"])?;
    let web = host.run_web("web", &["--network", &busy])?;
    let names: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for n in &names {
        host.run_idle(n, &["--network", &home])?;
    }
    let links_before = set(host.links()?);
    // Six clients at once, each connecting its sandbox, disconnecting it and connecting
    // it again: ferryd lets its state lock go during each one's kernel work.
    std::thread::scope(|s| {
        let clients: Vec<_> = names
            .iter()
            .map(|n| {
                let (host, busy) = (&host, &busy);
                s.spawn(move || -> Result<()> {
                    host.ferry_ok(&["network", "connect", busy, n])?;
                    host.ferry_ok(&["network", "disconnect", busy, n])?;
                    host.ferry_ok(&["network", "connect", busy, n])?;
                    Ok(())
                })
            })
            .collect();
        clients
            .into_iter()
            .try_for_each(|c| c.join().expect("client thread"))
    })?;
    let mut seen = BTreeSet::new();
    for n in &names {
        let ip = host.ip_of(n, &busy)?;
        ensure!(seen.insert(ip.clone()), "{ip} handed out twice");
        let addrs = host.sandbox_ipv4(n)?;
        ensure!(
            addrs.contains(&("eth1".into(), format!("{ip}/24"))),
            "{n}: inspect says {ip}, the sandbox holds {addrs:?}"
        );
        ensure!(
            addrs.iter().filter(|(i, _)| i.starts_with("eth")).count() == 2,
            "{n} should hold eth0 and eth1 only: {addrs:?}"
        );
    }
    let added = set(host.links()?).difference(&links_before).count();
    ensure!(
        added == names.len(),
        "{added} host-side veths for {} sandboxes",
        names.len()
    );
    host.expect_fetch("s0", &host.ip_of("web", &busy)?, &web)?;
    host.expect_fetch("s5", &host.ip_of("web", &busy)?, &web)?;
    host.finish()
}

#[test]
fn host_network_sandbox_shares_the_hosts_links_and_ports() -> Result<()> {
    let host = host_or_skip!();
    let web = host.run_web("hostweb", &["--network", "host"])?;
    let inside = set(host.sandbox_links("hostweb")?);
    let outside = set(host.links()?);
    ensure!(
        inside == outside,
        "links inside the host-network sandbox {inside:?} differ from ferryd's {outside:?}"
    );
    ensure!(
        inside.contains("ferry0"),
        "the host-network sandbox does not see ferry0: {inside:?}"
    );

    // A default-bridge sandbox reaches the host-network server at the bridge's gateway.
    let bridge = host.network_inspect("bridge")?;
    let gateway = bridge["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap_or("172.17.0.1")
        .to_string();
    host.run_idle("client", &[])?;
    host.expect_fetch("client", &gateway, &web)?;
    host.finish()
}

#[test]
fn none_network_sandbox_has_only_lo() -> Result<()> {
    let host = host_or_skip!();
    let before = set(host.links()?);
    host.run_idle("alone", &["--network", "none"])?;
    let links = host.sandbox_links("alone")?;
    ensure!(
        links == ["lo"],
        "a none-network sandbox should have only lo, has {links:?}"
    );
    let addrs = host.sandbox_ipv4("alone")?;
    ensure!(
        addrs.iter().all(|(l, _)| l == "lo"),
        "addresses outside lo: {addrs:?}"
    );
    let after = set(host.links()?);
    ensure!(
        after == before,
        "a none-network sandbox changed the host's links: {before:?} → {after:?}"
    );

    // Nothing to reach: a server on the host's network answers at the default bridge's
    // gateway (control, from a default-bridge sandbox), and the none sandbox has no route
    // to it.
    host.run_server("hostsrv", &["--network", "host"], "tcp", 8099)?;
    host.run_idle("bridged", &[])?;
    host.expect_reach(At::Sandbox("bridged"), "tcp", "172.17.0.1", 8099)?;
    host.expect_no_reach(
        At::Sandbox("alone"),
        "tcp",
        "172.17.0.1",
        8099,
        NoReach::Unreachable,
    )?;
    host.finish()
}
