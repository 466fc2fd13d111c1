//! The firewall: isolation between networks, ICC off, internal networks, masquerade,
//! published ports (from a peer machine, from the host, hairpin, ranges, UDP, a source
//! range), no direct routing past them, the admin `user` chain, coexistence with Docker's
//! FORWARD policy DROP, repair after a flush, and teardown.
//!
//! Every allowed path is shown with a real exchange (a TCP or UDP request answered with the
//! source address the server saw, or an ICMP echo); every refused one fails within
//! REFUSED_WITHIN, the way it must (a drop times out; a port with no publication is
//! refused by the host), and has a control next to it: the same server answering someone,
//! the same client reaching something. Peers are namespaces joined to the test host by a
//! veth pair.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use anyhow::{ensure, Result};
use std::time::{Duration, Instant};

use ferry_testkit::{host_or_skip, unique, At, NoReach, Peer, TestHost, BUSYBOX};

/// A sandbox answering TCP and UDP on port 80 with the address it saw.
fn serve_both(host: &TestHost, name: &str, run_args: &[&str]) -> Result<String> {
    let p = host.bins().probe.to_string_lossy().into_owned();
    let script = format!("{p} serve-udp 80 & exec {p} serve-tcp 80");
    host.run_detached(name, run_args, &[BUSYBOX, "sh", "-c", &script])
}

#[test]
fn networks_are_isolated_for_tcp_udp_and_icmp_but_a_sandbox_on_both_reaches_both() -> Result<()> {
    let host = host_or_skip!();
    let (n1, n2) = (unique("n"), unique("n"));
    host.create_network(&n1, &["--subnet", "10.61.0.0/24"])?;
    host.create_network(&n2, &["--subnet", "10.62.0.0/24"])?;
    serve_both(&host, "a", &["--network", &n1])?;
    serve_both(&host, "b", &["--network", &n2])?;
    serve_both(&host, "both", &["--network", &n1])?;
    host.ferry_ok(&["network", "connect", &n2, "both"])?;
    let (a, b) = (host.ip_of("a", &n1)?, host.ip_of("b", &n2)?);
    let (both1, both2) = (host.ip_of("both", &n1)?, host.ip_of("both", &n2)?);

    for proto in ["tcp", "udp"] {
        // Controls: a and b answer, and each reaches its own network.
        host.expect_reach(At::Sandbox("both"), proto, &a, 80)?;
        host.expect_reach(At::Sandbox("both"), proto, &b, 80)?;
        host.expect_reach(At::Sandbox("a"), proto, &both1, 80)?;
        host.expect_reach(At::Sandbox("b"), proto, &both2, 80)?;
        host.expect_no_reach(At::Sandbox("a"), proto, &b, 80, NoReach::Timeout)?;
        host.expect_no_reach(At::Sandbox("b"), proto, &a, 80, NoReach::Timeout)?;
    }
    ensure!(
        host.pings("both", &a)? && host.pings("both", &b)?,
        "the sandbox on both networks cannot ping them"
    );
    ensure!(
        host.pings("a", &both1)? && host.pings("b", &both2)?,
        "a and b cannot ping a sandbox on their own network"
    );
    ensure!(!host.pings("a", &b)?, "{a} pinged {b} across networks");
    ensure!(!host.pings("b", &a)?, "{b} pinged {a} across networks");
    host.finish()
}

#[test]
fn icc_off_keeps_sandboxes_apart_but_lets_them_reach_the_gateway_and_the_outside() -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.70.0.1/24", "10.70.0.2/24")?;
    peer.serve("tcp", 80)?;
    let net = unique("n");
    host.create_network(
        &net,
        &[
            "--subnet",
            "10.63.0.0/24",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
        ],
    )?;
    host.run_server("a", &["--network", &net], "tcp", 80)?;
    host.run_server("b", &["--network", &net], "tcp", 80)?;
    let (a, b) = (host.ip_of("a", &net)?, host.ip_of("b", &net)?);
    // Controls: both answer the host, and each reaches the peer outside.
    host.expect_reach(At::Host, "tcp", &a, 80)?;
    host.expect_reach(At::Host, "tcp", &b, 80)?;
    host.expect_reach(At::Sandbox("b"), "tcp", &peer.ip, 80)?;
    host.expect_no_reach(At::Sandbox("a"), "tcp", &b, 80, NoReach::Timeout)?;
    host.expect_no_reach(At::Sandbox("b"), "tcp", &a, 80, NoReach::Timeout)?;
    // Nor by routing through the gateway, which the bridge-level rule alone would miss.
    let via = format!("{b}/32");
    host.exec(
        "a",
        &[BUSYBOX, "ip", "route", "add", &via, "via", "10.63.0.1"],
    )?
    .expect_success()?;
    host.expect_no_reach(At::Sandbox("a"), "tcp", &b, 80, NoReach::Timeout)?;
    host.expect_reach(At::Host, "tcp", &b, 80)?;
    ensure!(
        host.pings("a", "10.63.0.1")?,
        "ICC off must still let a sandbox reach its gateway"
    );
    let seen = host.expect_reach(At::Sandbox("a"), "tcp", &peer.ip, 80)?;
    ensure!(
        seen == peer.host_ip,
        "the peer saw {seen}, expected the host's {} (masquerade)",
        peer.host_ip
    );
    // The bridge-family hook lives only as long as an ICC-off port: every frame of every
    // bridge in the namespace pays for it.
    let hooked = |host: &TestHost| -> Result<bool> {
        Ok(host
            .nft(&["list", "table", "bridge", "ferry"])?
            .contains("hook forward"))
    };
    ensure!(hooked(&host)?, "no bridge-family hook with ICC-off ports");
    host.ferry_ok(&["rm", "-f", "a", "b"])?;
    ensure!(
        !hooked(&host)?,
        "the bridge-family hook outlived the last ICC-off port"
    );
    drop(peer);
    host.finish()
}

#[test]
fn an_internal_network_talks_inside_and_nothing_leaves_it() -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.71.0.1/24", "10.71.0.2/24")?;
    peer.serve("tcp", 80)?;
    peer.route_via_host("10.64.0.0/24")?;
    let net = unique("n");
    host.create_network(&net, &["--internal", "--subnet", "10.64.0.0/24"])?;
    host.run_server("a", &["--network", &net], "tcp", 80)?;
    host.run_idle("b", &["--network", &net])?;
    let a = host.ip_of("a", &net)?;
    host.expect_reach(At::Sandbox("b"), "tcp", &a, 80)?;
    // No default route inside, and the host drops forwarding both ways even when the
    // sandbox and the peer each route explicitly.
    host.exec(
        "b",
        &[
            BUSYBOX,
            "ip",
            "route",
            "add",
            "10.71.0.0/24",
            "via",
            "10.64.0.1",
        ],
    )?
    .expect_success()?;
    // Controls: the peer answers the host, and the peer's client reaches the host.
    host.expect_reach(At::Host, "tcp", &peer.ip, 80)?;
    host.expect_no_reach(At::Sandbox("b"), "tcp", &peer.ip, 80, NoReach::Timeout)?;
    host.expect_no_reach(At::Peer(&peer), "tcp", &a, 80, NoReach::Timeout)?;
    // Not even through a port published on another network, via the gateway.
    let other = unique("n");
    host.create_network(&other, &["--subnet", "10.60.0.0/24"])?;
    host.run_server("pub", &["--network", &other, "-p", "8080:80"], "tcp", 80)?;
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    host.expect_no_reach(At::Sandbox("b"), "tcp", "10.64.0.1", 8080, NoReach::Timeout)?;
    host.expect_reach(At::Sandbox("b"), "tcp", &a, 80)?;
    let rules = host.nft(&["list", "set", "inet", "ferry", "masq"])?;
    ensure!(
        !rules.contains(
            &host.network_inspect(&net)?["Options"]["com.docker.network.bridge.name"].to_string()
        ),
        "internal network in masq"
    );
    drop(peer);
    host.finish()
}

#[test]
fn outbound_traffic_is_masqueraded_unless_the_network_turns_it_off() -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.72.0.1/24", "10.72.0.2/24")?;
    peer.serve("tcp", 80)?;
    peer.route_via_host("10.66.0.0/24")?;
    let (masq, plain) = (unique("n"), unique("n"));
    host.create_network(&masq, &["--subnet", "10.65.0.0/24"])?;
    host.create_network(
        &plain,
        &[
            "--subnet",
            "10.66.0.0/24",
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=false",
        ],
    )?;
    host.run_idle("m", &["--network", &masq])?;
    host.run_idle("p", &["--network", &plain])?;
    let seen = host.expect_reach(At::Sandbox("m"), "tcp", &peer.ip, 80)?;
    ensure!(
        seen == peer.host_ip,
        "masqueraded traffic arrived from {seen}"
    );
    let seen = host.expect_reach(At::Sandbox("p"), "tcp", &peer.ip, 80)?;
    let p_ip = host.ip_of("p", &plain)?;
    ensure!(
        seen == p_ip,
        "traffic with masquerade off arrived from {seen}, not {p_ip}"
    );
    let fwd = host.in_host("cat", &["/proc/sys/net/ipv4/ip_forward"])?;
    ensure!(fwd.out() == "1", "ip_forward is {:?}", fwd.out());
    // ferryd turned forwarding on, so it does not route between the host's other
    // interfaces: a second peer cannot reach the first through the host.
    let mut other = host.add_peer("10.73.5.1/24", "10.73.5.2/24")?;
    other.route_via_host("10.72.0.0/24")?;
    peer.route_via_host("10.73.5.0/24")?;
    other.serve("tcp", 81)?;
    // Controls: the first peer answers the host, the second answers too, and the
    // second's client reaches a ferry sandbox's published port through the host.
    host.expect_reach(At::Host, "tcp", &peer.ip, 80)?;
    host.expect_reach(At::Host, "tcp", &other.ip, 81)?;
    host.run_server("pub", &["--network", &masq, "-p", "8088:80"], "tcp", 80)?;
    host.expect_reach(At::Peer(&other), "tcp", &other.host_ip, 8088)?;
    host.expect_no_reach(At::Peer(&other), "tcp", &peer.ip, 80, NoReach::Timeout)?;
    drop((peer, other));
    host.ferry_ok(&["system", "cleanup"])?;
    let fwd = host.in_host("cat", &["/proc/sys/net/ipv4/ip_forward"])?;
    ensure!(
        fwd.out() == "0",
        "cleanup left ip_forward at {:?}",
        fwd.out()
    );
    host.finish()
}

#[test]
fn a_published_port_answers_a_peer_the_host_and_a_sandbox_on_the_same_bridge() -> Result<()> {
    let host = host_or_skip!();
    let peer = host.add_peer("10.73.0.1/24", "10.73.0.2/24")?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.67.0.0/24"])?;
    // web also listens on TCP 81, unpublished: only the missing publication keeps it out.
    let p = host.bins().probe.to_string_lossy().into_owned();
    let script = format!("{p} serve-udp 80 & {p} serve-tcp 81 & exec {p} serve-tcp 80");
    host.run_detached(
        "web",
        &["--network", &net, "-p", "8080:80", "-p", "8080:80/udp"],
        &[BUSYBOX, "sh", "-c", &script],
    )?;
    host.run_idle("client", &["--network", &net])?;
    let web = host.ip_of("web", &net)?;
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    host.expect_reach(At::Peer(&peer), "udp", &peer.host_ip, 8080)?;
    host.expect_reach(At::Host, "tcp", "127.0.0.1", 8080)?;
    host.expect_reach(At::Host, "tcp", &peer.host_ip, 8080)?;
    // Hairpin: a sandbox on the same bridge, through the host's address and its gateway.
    host.expect_reach(At::Sandbox("client"), "tcp", &peer.host_ip, 8080)?;
    host.expect_reach(At::Sandbox("client"), "tcp", "10.67.0.1", 8080)?;
    // And the sandbox itself, through its own published port (hairpin mode on its port).
    host.expect_reach(At::Sandbox("web"), "tcp", &peer.host_ip, 8080)?;
    // Not published: port 81. web answers on it (control), the host refuses it.
    host.expect_reach(At::Sandbox("client"), "tcp", &web, 81)?;
    host.expect_no_reach(At::Peer(&peer), "tcp", &peer.host_ip, 81, NoReach::Refused)?;

    let port = host.ferry_ok(&["port", "web"])?;
    ensure!(
        port == "80/tcp -> 0.0.0.0:8080\n80/udp -> 0.0.0.0:8080".trim(),
        "ferry port printed {port:?}"
    );
    let v = host.inspect("web")?;
    ensure!(
        v["NetworkSettings"]["Ports"]["80/tcp"]
            == serde_json::json!([{"HostIp": "0.0.0.0", "HostPort": "8080"}]),
        "inspect Ports: {}",
        v["NetworkSettings"]["Ports"]
    );
    ensure!(
        v["HostConfig"]["PortBindings"]["80/tcp"]
            == serde_json::json!([{"HostIp": "", "HostPort": "8080"}]),
        "inspect PortBindings: {}",
        v["HostConfig"]["PortBindings"]
    );
    host.ferry_ok(&["rm", "-f", "web"])?;
    // A server at web's old address and port, unpublished, so a rule left behind would
    // reach it: the host must refuse 8080 while the server answers on the bridge.
    host.run_server("again", &["--network", &net, "--ip", &web], "tcp", 80)?;
    host.expect_reach(At::Sandbox("client"), "tcp", &web, 80)?;
    host.expect_no_reach(
        At::Peer(&peer),
        "tcp",
        &peer.host_ip,
        8080,
        NoReach::Refused,
    )?;
    host.expect_no_reach(
        At::Peer(&peer),
        "udp",
        &peer.host_ip,
        8080,
        NoReach::Refused,
    )?;
    drop(peer);
    host.finish()
}

#[test]
fn a_port_range_is_one_map_element_and_every_port_of_it_answers() -> Result<()> {
    let host = host_or_skip!();
    let peer = host.add_peer("10.74.0.1/24", "10.74.0.2/24")?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.68.0.0/24"])?;
    let p = host.bins().probe.to_string_lossy().into_owned();
    let script = format!("{p} serve-tcp 7001 & {p} serve-tcp 7003 & exec {p} serve-tcp 7000");
    host.run_detached(
        "r",
        &["--network", &net, "-p", "7000-7003:7000-7003"],
        &[BUSYBOX, "sh", "-c", &script],
    )?;
    host.run_server(
        "s",
        &["--network", &net, "-p", "9000-9001:80-81"],
        "tcp",
        81,
    )?;
    for port in [7000, 7001, 7003] {
        host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, port)?;
    }
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 9001)?;
    let same = host.nft(&["list", "map", "inet", "ferry", "pub_same"])?;
    let r = host.ip_of("r", &net)?;
    ensure!(
        same.matches("7000-7003").count() == 1 && same.contains(&format!(": {r}")),
        "the range is not one pub_same element:\n{same}"
    );
    let rules_before = host.nft(&["list", "chain", "inet", "ferry", "publish"])?;
    host.run_server("t", &["--network", &net, "-p", "6000:80"], "tcp", 80)?;
    let rules_after = host.nft(&["list", "chain", "inet", "ferry", "publish"])?;
    ensure!(rules_before == rules_after, "publishing a port added rules");
    drop(peer);
    host.finish()
}

#[test]
fn a_published_port_can_be_limited_to_a_source_range() -> Result<()> {
    let host = host_or_skip!();
    let inside = host.add_peer("10.0.9.1/24", "10.0.9.2/24")?;
    let outside = host.add_peer("10.75.0.1/24", "10.75.0.2/24")?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.69.0.0/24"])?;
    host.run_server(
        "web",
        &[
            "--network",
            &net,
            "-p",
            "1234:1234",
            "--publish-from",
            "10.0.0.0/16",
        ],
        "tcp",
        1234,
    )?;
    host.expect_reach(At::Peer(&inside), "tcp", &inside.host_ip, 1234)?;
    host.expect_no_reach(
        At::Peer(&outside),
        "tcp",
        &outside.host_ip,
        1234,
        NoReach::Refused,
    )?;
    // Control: the server answers the host at its own address, unchanged by the range.
    let web = host.ip_of("web", &net)?;
    host.expect_reach(At::Host, "tcp", &web, 1234)?;
    drop((inside, outside));
    host.finish()
}

#[test]
fn routing_to_a_bridge_through_the_host_reaches_no_unpublished_or_loopback_only_port() -> Result<()>
{
    let host = host_or_skip!();
    let peer = host.add_peer("10.76.0.1/24", "10.76.0.2/24")?;
    peer.route_via_host("10.77.0.0/24")?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.77.0.0/24"])?;
    let p = host.bins().probe.to_string_lossy().into_owned();
    let script = format!("{p} serve-tcp 82 & exec {p} serve-tcp 80");
    host.run_detached(
        "web",
        &[
            "--network",
            &net,
            "-p",
            "127.0.0.1:8081:80",
            "-p",
            "8082:82",
        ],
        &[BUSYBOX, "sh", "-c", &script],
    )?;
    let ip = host.ip_of("web", &net)?;
    // Controls: web answers the host directly, and the peer through the port published
    // on every address.
    host.expect_reach(At::Host, "tcp", &ip, 80)?;
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8082)?;
    host.expect_no_reach(At::Peer(&peer), "tcp", &ip, 80, NoReach::Timeout)?;
    // Not even the container port that is published, when routed to directly.
    host.expect_no_reach(At::Peer(&peer), "tcp", &ip, 82, NoReach::Timeout)?;
    host.expect_no_reach(
        At::Peer(&peer),
        "tcp",
        &peer.host_ip,
        8081,
        NoReach::Refused,
    )?;
    host.expect_reach(At::Host, "tcp", "127.0.0.1", 8081)?;
    drop(peer);
    host.finish()
}

#[test]
fn rules_in_the_user_chain_come_first_and_survive_restarts_and_network_changes() -> Result<()> {
    let mut host = host_or_skip!();
    let peer = host.add_peer("10.78.0.1/24", "10.78.0.2/24")?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.79.0.0/24"])?;
    host.run_server("web", &["--network", &net, "-p", "8080:80"], "tcp", 80)?;
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    host.nft(&[
        "add", "rule", "inet", "ferry", "user", "ip", "saddr", &peer.ip, "drop",
    ])?;
    host.expect_no_reach(
        At::Peer(&peer),
        "tcp",
        &peer.host_ip,
        8080,
        NoReach::Timeout,
    )?;
    host.create_network(&unique("n"), &["--subnet", "10.80.0.0/24"])?;
    host.restart_kill9()?;
    host.ferry_ok(&["system", "reconcile"])?;
    // Control: web still answers the host's own client.
    host.expect_reach(At::Host, "tcp", &peer.host_ip, 8080)?;
    host.expect_no_reach(
        At::Peer(&peer),
        "tcp",
        &peer.host_ip,
        8080,
        NoReach::Timeout,
    )?;
    host.nft(&["flush", "chain", "inet", "ferry", "user"])?;
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    drop(peer);
    host.finish()
}

/// The conntrack line of the flow to `port`, once it is established (bounded).
fn established_flow(host: &TestHost, port: u16) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let table = host.conntrack_table()?;
        let dport = format!("dport={port} ");
        if let Some(l) = table
            .lines()
            .find(|l| l.contains(&dport) && l.contains("ESTABLISHED"))
        {
            return Ok(l.to_string());
        }
        ensure!(
            Instant::now() < deadline,
            "no established flow to port {port}:\n{table}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Counts, in `peer`'s own input hook, the TCP packets that arrive for `port`.
fn count_arrivals(peer: &Peer, port: u16) -> Result<()> {
    let rule = format!("tcp dport {port} counter name arrived");
    for cmd in [
        "add table inet probe",
        "add counter inet probe arrived",
        "add chain inet probe input { type filter hook input priority 0 ; }",
        &format!("add rule inet probe input {rule}"),
    ] {
        let out = peer.run("nft", &[cmd])?;
        ensure!(
            out.status.success(),
            "nft {cmd} in the peer: {}",
            out.stderr
        );
    }
    Ok(())
}

/// What arrived at `peer` over `secs` seconds ([`count_arrivals`]).
fn arrived(peer: &Peer, secs: f64) -> Result<u64> {
    let read = || -> Result<u64> {
        let out = peer.run("nft", &["list counter inet probe arrived"])?;
        let n = out
            .stdout
            .split("packets ")
            .nth(1)
            .and_then(|r| r.split(' ').next());
        n.and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no packet count in {:?}", out.stdout))
    };
    let before = read()?;
    std::thread::sleep(Duration::from_secs_f64(secs));
    Ok(read()? - before)
}

#[test]
fn a_flow_keeps_ferrys_verdict_yet_a_user_rule_stops_it_midway() -> Result<()> {
    // ferry accepts a flow's later packets by its first ones' verdict, kept in its conntrack
    // entry (render.rs, forwarding_rules): right after the administrator's chain, which
    // still sees every packet.
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.82.0.1/24", "10.82.0.2/24")?;
    // The peer echoes what comes (nc alone would close at its stdin's end).
    peer.spawn(BUSYBOX, &["nc", "-l", "-p", "9100", "-e", "/bin/cat"])?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.83.0.0/24"])?;
    let ticks = "while true; do echo tick; sleep 0.1; done | nc 10.82.0.2 9100";
    host.run_detached(
        "ticker",
        &["--network", &net],
        &[BUSYBOX, "sh", "-c", ticks],
    )?;
    let flow = established_flow(&host, 9100)?;
    ensure!(
        flow.contains(&format!("mark={}", 0x0010_0000)),
        "the flow does not carry ferry's accept mark: {flow}"
    );
    count_arrivals(&peer, 9100)?;
    // Control: the ticks reach the peer.
    let flowing = arrived(&peer, 1.0)?;
    ensure!(flowing >= 3, "only {flowing} packets to the peer in 1 s");
    host.nft(&[
        "add", "rule", "inet", "ferry", "user", "ip", "daddr", &peer.ip, "tcp", "dport", "9100",
        "drop",
    ])?;
    std::thread::sleep(Duration::from_millis(300));
    let stopped = arrived(&peer, 1.5)?;
    ensure!(
        stopped == 0,
        "{stopped} packets reached the peer past a drop rule in `user`"
    );
    host.nft(&["flush", "chain", "inet", "ferry", "user"])?;
    // The same flow goes on (its retransmissions back off: bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrived(&peer, 0.5)? == 0 {
        ensure!(
            Instant::now() < deadline,
            "the flow did not resume once `user` was empty"
        );
    }
    drop(peer);
    host.finish()
}

#[test]
fn with_dockers_forward_policy_drop_ferry_networks_keep_working() -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.81.0.1/24", "10.81.0.2/24")?;
    peer.serve("tcp", 80)?;
    // What dockerd 20.10 sets up with iptables-nft: FORWARD policy DROP, jumping to
    // DOCKER-USER first.
    for args in [
        &["-P", "FORWARD", "DROP"][..],
        &["-N", "DOCKER-USER"],
        &["-A", "DOCKER-USER", "-j", "RETURN"],
        &["-I", "FORWARD", "-j", "DOCKER-USER"],
    ] {
        host.in_host("iptables-nft", args)?.expect_success()?;
    }
    // A stand-in for Docker's own bridge, with a "container" behind it.
    let mut docker0 = host.add_peer_named("docker0", "10.89.0.1/24", "10.89.0.2/24")?;
    docker0.serve("tcp", 80)?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.82.0.0/24"])?;
    host.run_server("web", &["--network", &net, "-p", "8080:80"], "tcp", 80)?;
    host.run_idle("client", &["--network", &net])?;
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    host.expect_reach(At::Sandbox("web"), "tcp", &peer.ip, 80)?;
    // Hairpin: routed from the bridge back into it.
    host.expect_reach(At::Sandbox("client"), "tcp", &peer.host_ip, 8080)?;
    // ferry's rule does not open Docker's containers to ferry's sandboxes: dockerd's own
    // chains (here, its policy DROP) still decide.
    host.expect_reach(At::Host, "tcp", &docker0.ip, 80)?;
    host.expect_reach(At::Sandbox("client"), "tcp", &peer.ip, 80)?;
    host.expect_no_reach(
        At::Sandbox("client"),
        "tcp",
        &docker0.ip,
        80,
        NoReach::Timeout,
    )?;
    let chain = host
        .in_host("iptables-nft", &["-S", "DOCKER-USER"])?
        .expect_success()?;
    ensure!(
        chain.stdout.contains("ferry"),
        "no ferry rule in DOCKER-USER:\n{chain}"
    );
    drop((peer, docker0));
    host.ferry_ok(&["system", "cleanup"])?;
    let chain = host
        .in_host("iptables-nft", &["-S", "DOCKER-USER"])?
        .expect_success()?;
    ensure!(
        !chain.stdout.contains("ferry"),
        "cleanup left ferry's rule in DOCKER-USER:\n{chain}"
    );
    host.finish()
}

#[test]
fn a_flushed_ruleset_comes_back_on_reconcile() -> Result<()> {
    let host = host_or_skip!();
    let peer = host.add_peer("10.83.0.1/24", "10.83.0.2/24")?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.84.0.0/24"])?;
    host.run_server("web", &["--network", &net, "-p", "8080:80"], "tcp", 80)?;
    let web = host.ip_of("web", &net)?;
    host.nft(&["flush", "ruleset"])?;
    // The server is up (control); only the flushed DNAT keeps the peer out.
    host.expect_reach(At::Host, "tcp", &web, 80)?;
    host.expect_no_reach(
        At::Peer(&peer),
        "tcp",
        &peer.host_ip,
        8080,
        NoReach::Refused,
    )?;
    host.ferry_ok(&["system", "reconcile"])?;
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    host.nft(&["flush", "ruleset"])?;
    // The periodic check (every 5 s) restores it without being asked.
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    drop(peer);
    host.finish()
}

/// The rules of one of ferry's chains deleted by hand (the published ports' DNAT, with
/// the table and its sets intact) come back by the periodic check, which counts each
/// chain's rules as it counts each set's elements: the port answers again unasked.
#[test]
fn a_chains_rules_deleted_by_hand_come_back_by_the_periodic_check() -> Result<()> {
    let host = host_or_skip!();
    let peer = host.add_peer("10.88.0.1/24", "10.88.0.2/24")?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.89.0.0/24"])?;
    host.run_server("web", &["--network", &net, "-p", "8080:80"], "tcp", 80)?;
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    host.nft(&["flush", "chain", "inet", "ferry", "prerouting"])?;
    let chain = host.nft(&["list", "chain", "inet", "ferry", "prerouting"])?;
    // Not a probe that must fail here: the periodic check may already be repairing.
    ensure!(
        !chain.contains("dnat") || host.log_tail(200).contains("missing from chain prerouting"),
        "the chain was not flushed:\n{chain}"
    );
    // The check runs every 5 s; expect_reach retries for 10 s.
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    ensure!(
        host.log_tail(200)
            .contains("missing from chain prerouting (0 of"),
        "ferryd did not say what it restored:\n{}",
        host.log_tail(40)
    );
    drop(peer);
    host.finish()
}

/// A published port's element deleted by hand (the table and its chains intact) is put
/// back by the periodic check: the port answers again, without anyone asking.
#[test]
fn a_set_element_deleted_by_hand_comes_back_by_the_periodic_check() -> Result<()> {
    let host = host_or_skip!();
    let peer = host.add_peer("10.86.0.1/24", "10.86.0.2/24")?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.87.0.0/24"])?;
    host.run_server("web", &["--network", &net, "-p", "8080:80"], "tcp", 80)?;
    let web = host.ip_of("web", &net)?;
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    let element = format!("{{ tcp . 8080 : {web} . 80 }}");
    host.nft(&["delete", "element", "inet", "ferry", "pub_any", &element])?;
    let map = host.nft(&["list", "map", "inet", "ferry", "pub_any"])?;
    // Not a probe that must fail here: the periodic check may already be repairing.
    ensure!(
        !map.contains("8080") || map.contains(&web),
        "the element was not deleted:\n{map}"
    );
    // The check runs every 5 s; expect_reach retries for 10 s.
    host.expect_reach(At::Peer(&peer), "tcp", &peer.host_ip, 8080)?;
    let map = host.nft(&["list", "map", "inet", "ferry", "pub_any"])?;
    ensure!(map.contains("8080"), "the element is not back:\n{map}");
    ensure!(
        host.log_tail(200).contains("missing from set pub_any"),
        "ferryd did not say what it restored:\n{}",
        host.log_tail(40)
    );
    drop(peer);
    host.finish()
}

#[test]
fn the_live_ruleset_holds_exactly_the_elements_of_the_desired_state() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("n");
    host.create_network(
        &net,
        &[
            "--subnet",
            "10.85.0.0/24",
            "--ip-range",
            "10.85.0.16/28",
            "-o",
            "com.docker.network.bridge.name=fyt-fixed",
        ],
    )?;
    host.run_idle(
        "a",
        &[
            "--network",
            &net,
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:9000-9001:9000-9001/udp",
        ],
    )?;
    let list = |what: &str, name: &str| -> Result<String> {
        let out = host.nft(&["list", what, "inet", "ferry", name])?;
        Ok(out.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let any = list("map", "pub_any")?;
    ensure!(
        any.contains("elements = { tcp . 8080 : 10.85.0.16 . 80 }"),
        "pub_any: {any}"
    );
    let shift = list("map", "pub_shift")?;
    ensure!(!shift.contains("elements"), "pub_shift: {shift}");
    let same = host.nft(&["list", "map", "inet", "ferry", "pub_same"])?;
    let same = same.split_whitespace().collect::<Vec<_>>().join(" ");
    ensure!(
        same.contains("elements = { 0.0.0.0/0 . 127.0.0.1 . udp . 9000-9001 : 10.85.0.16 }"),
        "pub_same: {same}"
    );
    let bridges = list("set", "bridges")?;
    ensure!(
        bridges.contains("elements = { \"ferry0\", \"fyt-fixed\" }")
            || bridges.contains("elements = { \"fyt-fixed\", \"ferry0\" }"),
        "bridges: {bridges}"
    );
    host.finish()
}

#[test]
fn removing_the_last_network_removes_its_elements_and_cleanup_removes_everything() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.86.0.0/24"])?;
    host.run_idle("a", &["--network", &net, "-p", "8080:80"])?;
    host.ferry_ok(&["rm", "-f", "a"])?;
    host.ferry_ok(&["network", "rm", &net])?;
    let rs = host.nft(&["list", "ruleset"])?;
    ensure!(
        !rs.contains("10.86.0.0/24") && !rs.contains("8080"),
        "elements left:\n{rs}"
    );
    host.nft(&["add", "rule", "inet", "ferry", "user", "counter"])?;
    host.ferry_ok(&["system", "cleanup"])?;
    let rs = host.nft(&["list", "ruleset"])?;
    ensure!(
        !rs.contains("ferry"),
        "ferry's tables are still there:\n{rs}"
    );
    let links = host.links()?;
    ensure!(
        !links.iter().any(|l| l.starts_with("fy") || l == "ferry0"),
        "links left: {links:?}"
    );
    host.finish()
}

#[test]
fn bad_publish_specs_are_refused_with_the_reason_and_change_nothing() -> Result<()> {
    let host = host_or_skip!();
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.87.0.0/24"])?;
    let before = host.nft(&["list", "ruleset"])?;
    for (spec, why) in [
        ("8080:80x", "ports are numbers"),
        ("8080:70000", "ports are numbers"),
        ("8000-8010:80-85", "same length"),
        ("8080:80/sctp", "tcp or udp"),
    ] {
        let out = host.ferry_err(&[
            "run",
            "-d",
            "--name",
            "bad",
            "--network",
            &net,
            "-p",
            spec,
            "--",
            BUSYBOX,
            "true",
        ])?;
        ensure!(out.stderr.contains(why), "-p {spec}: {out}");
    }
    let out = host.ferry_err(&[
        "run",
        "-d",
        "--name",
        "bad",
        "--network",
        &net,
        "-p",
        "80",
        "--publish-from",
        "nonsense",
        "--",
        BUSYBOX,
        "true",
    ])?;
    ensure!(out.stderr.contains("--publish-from"), "{out}");
    let ruleset = || host.nft(&["list", "ruleset"]);
    ensure!(
        ruleset()? == before,
        "refused publish specs changed the ruleset:\n{}",
        ruleset()?
    );
    host.run_idle("first", &["--network", &net, "-p", "8080:80"])?;
    let before = ruleset()?;
    ensure!(
        before.contains("8080"),
        "first's published port is not in the ruleset:\n{before}"
    );
    let out = host.ferry_err(&[
        "run",
        "-d",
        "--name",
        "second",
        "--network",
        &net,
        "-p",
        "8080:81",
        "--",
        BUSYBOX,
        "sleep",
        "60",
    ])?;
    ensure!(out.stderr.contains("port is already allocated"), "{out}");
    // A host process holding the port: the DNAT rule would shadow it, so it is refused.
    let probe = host.bins().probe.to_string_lossy().into_owned();
    let holder = host
        .in_host(
            "sh",
            &[
                "-c",
                &format!("{probe} serve-tcp 9999 >/dev/null 2>&1 & echo $!"),
            ],
        )?
        .expect_success()?;
    let pid: i32 = holder.out().parse()?;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let held = host.ferry_err(&[
        "run",
        "-d",
        "--name",
        "fourth",
        "--network",
        &net,
        "-p",
        "9999:80",
        "--",
        BUSYBOX,
        "sleep",
        "60",
    ]);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let held = held?;
    ensure!(held.stderr.contains("port is already allocated"), "{held}");
    ensure!(
        ruleset()? == before,
        "refused ports changed the ruleset:\n{}",
        ruleset()?
    );
    let internal = unique("n");
    host.create_network(&internal, &["--internal", "--subnet", "10.88.0.0/24"])?;
    let before = ruleset()?;
    let out = host.ferry_err(&[
        "run",
        "-d",
        "--name",
        "third",
        "--network",
        &internal,
        "-p",
        "8081:80",
        "--",
        BUSYBOX,
        "sleep",
        "60",
    ])?;
    ensure!(out.stderr.contains("internal"), "{out}");
    ensure!(
        ruleset()? == before,
        "a refused port on an internal network changed the ruleset:\n{}",
        ruleset()?
    );
    // `run` creates, then starts: a start refused for its ports leaves the created
    // sandbox, as `docker run` leaves its container; nothing else was made.
    let ids = host.sandbox_ids()?;
    ensure!(ids.len() == 3, "refused runs left sandboxes: {ids:?}");
    host.ferry_ok(&["rm", "-f", "first", "second", "fourth"])?;
    host.finish()
}

/// br_netfilter's three calls in the host's namespace, as `0`/`1` lines; None when the
/// kernel has no br_netfilter.
fn br_netfilter_calls(host: &TestHost) -> Result<Option<String>> {
    let out = host.in_host(
        BUSYBOX,
        &[
            "cat",
            "/proc/sys/net/bridge/bridge-nf-call-iptables",
            "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
            "/proc/sys/net/bridge/bridge-nf-call-arptables",
        ],
    )?;
    Ok(out
        .success()
        .then(|| out.out().split_whitespace().collect()))
}

#[test]
fn with_br_netfilter_off_the_firewall_holds() -> Result<()> {
    let scenario = ferry_testkit::scenario_name!();
    if !ferry_testkit::privileged(scenario) {
        return Ok(());
    }
    // A fresh namespace starts with the three calls on; ferryd turns them off as it
    // loads its tables (the default bridge's, at start).
    let host = TestHost::start_with_args(scenario, &["--br-netfilter", "off"])?;
    let (on, noicc, other) = (unique("n"), unique("n"), unique("n"));
    host.create_network(&on, &["--subnet", "10.87.0.0/24"])?;
    host.create_network(
        &noicc,
        &[
            "--subnet",
            "10.88.0.0/24",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
        ],
    )?;
    host.create_network(&other, &["--subnet", "10.89.0.0/24"])?;
    // Bridged, ICC on: passes. Hairpin to a published port, through the gateway and the
    // sandbox's own port: routed and masqueraded, so it needs no bridged filtering.
    serve_both(&host, "web", &["--network", &on, "-p", "8080:80"])?;
    host.run_idle("client", &["--network", &on])?;
    let web = host.ip_of("web", &on)?;
    host.expect_reach(At::Sandbox("client"), "tcp", &web, 80)?;
    host.expect_reach(At::Sandbox("client"), "udp", &web, 80)?;
    host.expect_reach(At::Sandbox("client"), "tcp", "10.87.0.1", 8080)?;
    host.expect_reach(At::Sandbox("web"), "tcp", "10.87.0.1", 8080)?;
    // ICC off is a bridge-family rule: still enforced.
    host.run_server("a", &["--network", &noicc], "tcp", 80)?;
    host.run_server("b", &["--network", &noicc], "tcp", 80)?;
    let b = host.ip_of("b", &noicc)?;
    // Controls: b answers the host; a reaches its gateway.
    host.expect_reach(At::Host, "tcp", &b, 80)?;
    ensure!(host.pings("a", "10.88.0.1")?, "a cannot ping its gateway");
    host.expect_no_reach(At::Sandbox("a"), "tcp", &b, 80, NoReach::Timeout)?;
    // Isolation between networks is routed traffic: still enforced.
    host.run_server("far", &["--network", &other], "tcp", 80)?;
    let far = host.ip_of("far", &other)?;
    // Controls: far answers the host; web answers client (above).
    host.expect_reach(At::Host, "tcp", &far, 80)?;
    host.expect_reach(At::Host, "tcp", &web, 80)?;
    host.expect_no_reach(At::Sandbox("client"), "tcp", &far, 80, NoReach::Timeout)?;
    host.expect_no_reach(At::Sandbox("far"), "tcp", &web, 80, NoReach::Timeout)?;

    host.ferry_ok(&["system", "cleanup"])?;
    host.finish()
}

#[test]
fn with_br_netfilter_off_ferryd_turns_the_calls_off_and_cleanup_turns_them_back_on() -> Result<()> {
    let scenario = ferry_testkit::scenario_name!();
    if !ferry_testkit::privileged(scenario) {
        return Ok(());
    }
    let host = TestHost::start_with_args(scenario, &["--br-netfilter", "off"])?;
    // On a kernel without br_netfilter there is nothing to turn off, and nothing to
    // check: a skip, counted as one, not a pass.
    let Some(during) = br_netfilter_calls(&host)? else {
        ferry_testkit::skip(
            scenario,
            "this kernel has no br_netfilter (/proc/sys/net/bridge)",
        );
        return host.finish();
    };
    ensure!(during == "000", "bridge-nf-call-* are {during:?}");
    host.create_network(&unique("n"), &["--subnet", "10.90.0.0/24"])?;
    let during = br_netfilter_calls(&host)?;
    ensure!(
        during.as_deref() == Some("000"),
        "with a network: bridge-nf-call-* are {during:?}"
    );
    host.ferry_ok(&["system", "cleanup"])?;
    let after = br_netfilter_calls(&host)?;
    ensure!(
        after.as_deref() == Some("111"),
        "cleanup left bridge-nf-call-* at {after:?}"
    );
    host.finish()
}
