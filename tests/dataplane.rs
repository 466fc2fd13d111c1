//! The data plane's fast paths do not outlive the decisions they skip.
//!
//! Traffic that never leaves an ICC-on bridge is not tracked (`sourced` in
//! crates/ferry-core/src/nft/render.rs), and a fast path of any kind keeps a flow going
//! without asking the rules again. So a flow established before a `network disconnect`
//! must stop at the disconnect — bridged within the network, and routed to a published
//! port through DNAT — while flows on the same bridge that were not touched go on (the
//! controls). Each flow is one long-lived TCP connection carrying a line echoed back,
//! exchanged before and after the disconnect from the same socket.
//!
//! Traffic within an ICC-on network also takes the shortcut (a tc/BPF program on each
//! veth host end: crates/ferry-kernel/bpf/shortcut.c) past the bridge: the last test
//! shows it does, by the bridge port's counters, and that it steps aside while ferry's
//! `user` chain holds a rule and while ferryd is stopped, and that a ferryd started after
//! one was killed takes over the programs the dead one left (or, with `--shortcut off`,
//! takes them off). What a sandbox sends to be
//! routed goes straight up into the host, past the bridge, tracked and masqueraded as
//! before, and every endpoint's MAC is pinned on its bridge port (the last test).

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ferry_testkit::{host_or_skip, unique, PortCounter, TestHost};

/// A threaded line-echo server on TCP port 80.
const ECHO_SERVER: &str = "\
import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
            self.wfile.flush()
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
S(('0.0.0.0', 80), H).serve_forever()
";

/// One connection to IP PORT, kept: each line read on stdin is sent and its echo awaited
/// (2 s); prints `ok`, or `dead` and why.
const FLOW_CLIENT: &str = "\
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(2)
f = s.makefile('rb')
print('connected', flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode())
        got = f.readline()
        print('ok' if got == line.encode() else 'dead: answer %r' % got, flush=True)
    except Exception as e:
        print('dead: %s' % type(e).__name__, flush=True)
        break
";

/// A flow: the client process and its answers.
struct Flow {
    what: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    n: u32,
}

impl Flow {
    /// Start `FLOW_CLIENT` under `prefix` (the command that enters the client's namespace).
    fn open(what: &str, prefix: &[&str], ip: &str, port: u16) -> Result<Flow> {
        let mut child = Command::new(prefix[0])
            .args(&prefix[1..])
            .args(["python3", "-u", "-c", FLOW_CLIENT, ip, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("{what}: start the client"))?;
        let stdin = child.stdin.take().context("client stdin")?;
        let out = child.stdout.take().context("client stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let f = Flow {
            what: what.to_string(),
            child,
            stdin,
            lines,
            n: 0,
        };
        let first = f.next_line(Duration::from_secs(10))?;
        ensure!(first == "connected", "{what}: {first}");
        Ok(f)
    }

    fn next_line(&self, within: Duration) -> Result<String> {
        self.lines
            .recv_timeout(within)
            .with_context(|| format!("{}: no word from the client", self.what))
    }

    /// One exchange on the connection: Ok(true) if the line came back.
    fn exchange(&mut self) -> Result<bool> {
        self.n += 1;
        if writeln!(self.stdin, "line {}", self.n).is_err() {
            return Ok(false); // the client ended: the flow is gone
        }
        let _ = self.stdin.flush();
        match self.lines.recv_timeout(Duration::from_secs(6)) {
            Ok(l) => Ok(l == "ok"),
            Err(_) => Ok(false),
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// [`Flow::open`], retried for a while: the server may still be starting.
fn open_retrying(what: &str, prefix: &[&str], ip: &str, port: u16) -> Result<Flow> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Flow::open(what, prefix, ip, port) {
            Ok(f) => return Ok(f),
            Err(e) if std::time::Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// nsenter's argument that enters sandbox `id`'s network namespace (its pin).
fn nsenter_sandbox(host: &TestHost, id: &str, name: &str) -> Result<String> {
    let pin = host.exec_root().join("netns").join(&id[..12]);
    ensure!(
        pin.exists(),
        "no namespace pin for {name} at {}",
        pin.display()
    );
    Ok(format!("--net={}", pin.display()))
}

#[test]
fn a_flow_established_before_network_disconnect_stops_at_the_disconnect() -> Result<()> {
    let host = host_or_skip!();
    let peer = host.add_peer("10.94.0.1/24", "10.94.0.2/24")?;
    let net = unique("n");
    // ICC on: bridged traffic between srv, ctl and cli takes the untracked path.
    host.create_network(&net, &["--subnet", "10.93.0.0/24"])?;
    let echo = ["python3", "-c", ECHO_SERVER];
    host.run_detached("srv", &["--network", &net, "-p", "8090:80"], &echo)?;
    host.run_detached("ctl", &["--network", &net, "-p", "8091:80"], &echo)?;
    let cli_id = host.run_idle("cli", &["--network", &net])?;
    let (srv, ctl) = (host.ip_of("srv", &net)?, host.ip_of("ctl", &net)?);
    let cli_ns = nsenter_sandbox(&host, &cli_id, "cli")?;
    let in_cli = ["nsenter", cli_ns.as_str()];
    let in_peer = ["ip", "netns", "exec", peer.netns.as_str()];

    let open = open_retrying;
    let mut bridged = open("cli → srv (bridged)", &in_cli, &srv, 80)?;
    let mut bridged_ctl = open("cli → ctl (bridged, control)", &in_cli, &ctl, 80)?;
    let mut dnat = open("peer → srv's port (DNAT)", &in_peer, &peer.host_ip, 8090)?;
    let mut dnat_ctl = open(
        "peer → ctl's port (DNAT, control)",
        &in_peer,
        &peer.host_ip,
        8091,
    )?;
    // Several exchanges each, so any fast path has seen the flows established.
    for _ in 0..3 {
        for f in [&mut bridged, &mut bridged_ctl, &mut dnat, &mut dnat_ctl] {
            ensure!(f.exchange()?, "{}: no echo before the disconnect", f.what);
        }
    }

    host.ferry_ok(&["network", "disconnect", &net, "srv"])?;

    for f in [&mut bridged, &mut dnat] {
        if f.exchange()? {
            bail!(
                "{}: the flow still carries data after the disconnect",
                f.what
            );
        }
    }
    // Controls: the untouched flows on the same bridge and through the same DNAT rules
    // still answer, on the same connections.
    for f in [&mut bridged_ctl, &mut dnat_ctl] {
        ensure!(f.exchange()?, "{}: no echo after srv's disconnect", f.what);
    }
    drop((bridged, bridged_ctl, dnat, dnat_ctl));
    drop(peer);
    host.finish()
}

#[test]
fn a_flow_out_through_masquerade_established_before_network_disconnect_stops_at_it() -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.92.0.1/24", "10.92.0.2/24")?;
    peer.spawn("python3", &["-c", ECHO_SERVER])?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.91.0.0/24"])?;
    let gone_id = host.run_idle("gone", &["--network", &net])?;
    let stay_id = host.run_idle("stay", &["--network", &net])?;
    let gone_ns = nsenter_sandbox(&host, &gone_id, "gone")?;
    let stay_ns = nsenter_sandbox(&host, &stay_id, "stay")?;
    let open = |what: &str, ns: &str| open_retrying(what, &["nsenter", ns], &peer.ip, 80);
    let mut out = open("gone → peer (masquerade)", &gone_ns)?;
    let mut out_ctl = open("stay → peer (masquerade, control)", &stay_ns)?;
    for _ in 0..3 {
        for f in [&mut out, &mut out_ctl] {
            ensure!(f.exchange()?, "{}: no echo before the disconnect", f.what);
        }
    }
    host.ferry_ok(&["network", "disconnect", &net, "gone"])?;
    if out.exchange()? {
        bail!(
            "{}: the flow still carries data after the disconnect",
            out.what
        );
    }
    ensure!(
        out_ctl.exchange()?,
        "{}: no echo after the other's disconnect",
        out_ctl.what
    );
    drop((out, out_ctl));
    drop(peer);
    host.finish()
}

/// `f` run with a rule in ferry's `user` chain that matches nothing here (which closes the
/// shortcut's gate all the same), the chain emptied after.
fn with_a_user_rule<T>(host: &TestHost, f: impl FnOnce() -> Result<T>) -> Result<T> {
    host.nft(&[
        "add",
        "rule",
        "inet",
        "ferry",
        "user",
        "ip",
        "saddr",
        "192.0.2.1",
        "drop",
    ])?;
    std::thread::sleep(Duration::from_millis(500));
    let out = f();
    host.nft(&["flush", "chain", "inet", "ferry", "user"])?;
    std::thread::sleep(Duration::from_millis(500));
    out
}

/// How many packets the bridge carried to the counter's sandbox while `n` exchanges
/// went over `f`; every exchange must be answered.
fn bridged_during(port: &PortCounter, f: &mut Flow, n: u32) -> Result<u64> {
    let (sent, ()) = port.during(|| {
        for _ in 0..n {
            ensure!(f.exchange()?, "{}: no echo", f.what);
        }
        Ok(())
    })?;
    Ok(sent)
}

/// The programs of ferry's on `bridge`'s egress and on its ports' ingress, as
/// "DEVICE PROGRAM".
fn ferry_filters(host: &TestHost, bridge: &str) -> Result<Vec<String>> {
    let ports = host
        .in_host("ip", &["-j", "link", "show", "master", bridge])?
        .expect_success()?
        .stdout;
    let ports: serde_json::Value = serde_json::from_str(&ports)?;
    let ports = ports.as_array().context("ip -j link show master")?.iter();
    let ports = ports.filter_map(|l| Some((l["ifname"].as_str()?.to_string(), "ingress")));
    let mut found = vec![];
    for (dev, side) in ports.chain([(bridge.to_string(), "egress")]) {
        let filters = host
            .in_host("tc", &["filter", "show", "dev", &dev, side])?
            .stdout;
        for prog in ["shortcut", "deliver", "arrive"] {
            if filters.contains(&format!("{prog}:")) || filters.contains(&format!(" {prog} ")) {
                found.push(format!("{dev} {prog}"));
            }
        }
    }
    Ok(found)
}

#[test]
fn same_network_traffic_takes_the_shortcut_unless_the_user_chain_or_a_stopped_ferryd_says_otherwise(
) -> Result<()> {
    const BRIDGE: &str = "fshort0";
    let mut host = host_or_skip!();
    let net = unique("n");
    let name = format!("com.docker.network.bridge.name={BRIDGE}");
    host.create_network(&net, &["--subnet", "10.89.0.0/24", "-o", &name])?;
    let srv_id = host.run_detached("srv", &["--network", &net], &["python3", "-c", ECHO_SERVER])?;
    let cli_id = host.run_idle("cli", &["--network", &net])?;
    let (srv, cli) = (host.ip_of("srv", &net)?, host.ip_of("cli", &net)?);
    let cli_ns = nsenter_sandbox(&host, &cli_id, "cli")?;
    let in_cli = ["nsenter", cli_ns.as_str()];
    let open = |what: &str| open_retrying(what, &in_cli, &srv, 80);
    // 40 exchanges are 80+ TCP segments to srv (data and ACKs); through the bridge each
    // leaves srv's host end. A few broadcasts (ARP) may pass the bridge either way.
    const N: u32 = 40;
    let port = PortCounter::of(&host, &srv_id)?;
    let mut flow = open("cli → srv")?;
    bridged_during(&port, &mut flow, 3)?;
    let by_bridge = bridged_during(&port, &mut flow, N)?;
    ensure!(
        by_bridge < 10,
        "the shortcut is not carrying cli → srv: the bridge sent {by_bridge} packets to srv"
    );

    // A rule in `user`, even one that matches nothing here, closes the gate: the same
    // flow goes on through the bridge (the control for the counter above); a rule that
    // matches the flow then stops it, as it would without the shortcut.
    let by_bridge = with_a_user_rule(&host, || {
        let by_bridge = bridged_during(&port, &mut flow, N)?;
        host.nft(&[
            "add", "rule", "inet", "ferry", "user", "ip", "saddr", &cli, "ip", "daddr", &srv,
            "drop",
        ])?;
        ensure!(!flow.exchange()?, "cli → srv passed a drop rule in `user`");
        Ok(by_bridge)
    })?;
    ensure!(
        by_bridge >= u64::from(N),
        "with a rule in `user`, the bridge sent only {by_bridge} packets to srv"
    );
    let mut flow = open("cli → srv, the user chain empty again")?;
    bridged_during(&port, &mut flow, 3)?;
    let by_bridge = bridged_during(&port, &mut flow, N)?;
    ensure!(by_bridge < 10, "the shortcut did not come back with `user` empty: the bridge sent {by_bridge} packets to srv");

    // ferryd stopped (SIGTERM): it closes the gate, and the bridge carries the flow until
    // the next ferryd opens it.
    let pid = host.ferryd_pid().context("ferryd's pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let mut meanwhile = None;
    host.restart_after_exit_with(|| meanwhile = Some(bridged_during(&port, &mut flow, N)))?;
    let by_bridge = meanwhile.context("the stop's meanwhile did not run")??;
    ensure!(
        by_bridge >= u64::from(N),
        "with ferryd stopped, the bridge sent only {by_bridge} packets to srv"
    );
    let by_bridge = bridged_during(&port, &mut flow, N)?;
    ensure!(by_bridge < 10, "the restarted ferryd did not bring the shortcut back: the bridge sent {by_bridge} packets to srv");

    // ferryd killed: the programs are the kernel's and go on as they were (delivering
    // what the bridge would); the next ferryd replaces them with its own, which a rule in
    // `user` closes (so no program of the dead one's is left in front of them).
    let mut meanwhile = None;
    host.restart_kill9_with(|| meanwhile = Some(bridged_during(&port, &mut flow, N)))?;
    meanwhile.context("the kill's meanwhile did not run")??;
    let by_bridge = bridged_during(&port, &mut flow, N)?;
    ensure!(by_bridge < 10, "after the kill, the new ferryd's shortcut does not carry the flow: the bridge sent {by_bridge} packets to srv");
    let by_bridge = with_a_user_rule(&host, || bridged_during(&port, &mut flow, N))?;
    ensure!(
        by_bridge >= u64::from(N),
        "after the kill, a rule in `user` left the shortcut open: a program of the dead ferryd's is still there ({by_bridge} packets by the bridge)"
    );

    // ferryd killed, and the next one started with `--shortcut off`: it takes the dead
    // one's programs off (their gate was open), and the bridge carries the flow; no
    // filter of ferry's is left on the veths or the bridge.
    let before = ferry_filters(&host, BRIDGE)?;
    ensure!(
        before.len() == 3,
        "ferry's programs before the kill: {before:?}"
    );
    host.set_ferryd_args(&["--shortcut", "off"]);
    host.restart_kill9()?;
    let by_bridge = bridged_during(&port, &mut flow, N)?;
    ensure!(
        by_bridge >= u64::from(N),
        "with --shortcut off after a kill, the bridge sent only {by_bridge} packets to srv: the dead ferryd's programs still carry the flow"
    );
    let left = ferry_filters(&host, BRIDGE)?;
    ensure!(
        left.is_empty(),
        "with --shortcut off, ferry's programs are left: {left:?}"
    );
    drop(flow);
    host.finish()
}

#[test]
fn bridged_flows_are_untracked_routed_ones_tracked_and_no_raw_hook_waits_without_an_overlay(
) -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.86.0.1/24", "10.86.0.2/24")?;
    peer.spawn("python3", &["-c", ECHO_SERVER])?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.85.0.0/24"])?;
    host.run_detached("srv", &["--network", &net], &["python3", "-c", ECHO_SERVER])?;
    let cli_id = host.run_idle("cli", &["--network", &net])?;
    let (srv, cli) = (host.ip_of("srv", &net)?, host.ip_of("cli", &net)?);
    let cli_ns = nsenter_sandbox(&host, &cli_id, "cli")?;
    let in_cli = ["nsenter", cli_ns.as_str()];
    // Through the bridge and ferry's chains, not the shortcut: a rule in `user` closes
    // its gate.
    let table = with_a_user_rule(&host, || {
        let mut bridged = open_retrying("cli → srv (bridged)", &in_cli, &srv, 80)?;
        let mut routed = open_retrying("cli → peer (routed)", &in_cli, &peer.ip, 80)?;
        for _ in 0..3 {
            for f in [&mut bridged, &mut routed] {
                ensure!(f.exchange()?, "{}: no echo", f.what);
            }
        }
        host.conntrack_table()
    })?;
    // Control: the routed flow from the same sandbox is tracked (masquerade needs it).
    ensure!(
        table
            .lines()
            .any(|l| l.contains(&format!("src={cli} dst={} ", peer.ip)) && l.contains("dport=80 ")),
        "the routed flow to the peer is not tracked (is conntrack on?):\n{table}"
    );
    ensure!(
        !table
            .lines()
            .any(|l| l.contains(&format!("src={cli} dst={srv} "))),
        "the bridged flow cli → srv left a conntrack entry:\n{table}"
    );
    // The untracking is decided in the bridge family: no inet chain waits at prerouting
    // before conntrack on a host without overlays (its hook call would cost every packet).
    let inet = host.nft(&["list", "table", "inet", "ferry"])?;
    ensure!(
        !inet.contains("hook prerouting priority raw"),
        "a raw prerouting chain of ferry's on a host without overlays:\n{inet}"
    );
    drop(peer);
    host.finish()
}

/// What a sandbox sends to be routed (here out through masquerade to a peer) the shortcut
/// hands straight up into the host as if the bridge had passed it up, and what the host
/// routes back to it straight to its veth: the bridge takes in and sends out none of a
/// flow's packets, and the flow is tracked and masqueraded as before. Controls, on the
/// same sandbox: with a rule in `user` (the gate closed) the bridge carries every one; a
/// ping to the gateway (what the embedded DNS's queries are addressed to) keeps the
/// bridge's path all along. And since the sandbox's frames no longer teach the bridge its
/// MAC, that MAC is pinned on its port: a static, sticky forwarding entry. The bridge's
/// program goes with its last carried endpoint.
#[test]
fn routed_traffic_goes_up_past_the_bridge_and_each_endpoints_mac_is_pinned_on_its_port(
) -> Result<()> {
    let host = host_or_skip!();
    let mut peer = host.add_peer("10.84.0.1/24", "10.84.0.2/24")?;
    peer.spawn("python3", &["-c", ECHO_SERVER])?;
    let net = unique("n");
    host.create_network(
        &net,
        &[
            "--subnet",
            "10.83.0.0/24",
            "-o",
            "com.docker.network.bridge.name=frouted0",
        ],
    )?;
    let cli_id = host.run_idle("cli", &["--network", &net])?;
    let cli = host.ip_of("cli", &net)?;
    let cli_ns = nsenter_sandbox(&host, &cli_id, "cli")?;
    let in_cli = ["nsenter", cli_ns.as_str()];
    let taken_in = PortCounter::received_by(&host, "frouted0")?;
    let sent_out = PortCounter::sent_by(&host, "frouted0")?;
    const N: u32 = 40;
    let mut flow = open_retrying("cli → peer (masquerade)", &in_cli, &peer.ip, 80)?;
    let exchanges = |flow: &mut Flow| -> Result<()> {
        for _ in 0..N {
            ensure!(flow.exchange()?, "{}: no echo", flow.what);
        }
        Ok(())
    };
    exchanges(&mut flow)?;
    let (up, (down, ())) = taken_in.during(|| sent_out.during(|| exchanges(&mut flow)))?;
    ensure!(
        up < 10 && down < 10,
        "the shortcut is not carrying cli ⇄ peer: the bridge took in {up} packets and sent {down}"
    );
    let table = host.conntrack_table()?;
    ensure!(
        table
            .lines()
            .any(|l| l.contains(&format!("src={cli} dst={} ", peer.ip))
                && l.contains("dport=80 ")
                && l.contains("dst=10.84.0.1 ")),
        "the routed flow is not tracked and masqueraded to the host's address:\n{table}"
    );
    let gateway = "10.83.0.1";
    let (by_bridge, ()) = taken_in.during(|| {
        let out = Command::new("nsenter")
            .args([
                cli_ns.as_str(),
                "ping",
                "-c",
                "5",
                "-i",
                "0.05",
                "-W",
                "2",
                gateway,
            ])
            .output()?;
        ensure!(out.status.success(), "ping the gateway: {out:?}");
        Ok(())
    })?;
    ensure!(
        by_bridge >= 5,
        "pings to the gateway did not take the bridge's path: it took in {by_bridge} packets"
    );
    let (up, down) = with_a_user_rule(&host, || {
        let (up, (down, ())) = taken_in.during(|| sent_out.during(|| exchanges(&mut flow)))?;
        Ok((up, down))
    })?;
    ensure!(
        up >= u64::from(N) && down >= u64::from(N),
        "with a rule in `user`, the bridge took in only {up} packets of cli → peer and sent {down}"
    );

    let eth0 = Command::new("nsenter")
        .args([cli_ns.as_str(), "ip", "-j", "link", "show", "eth0"])
        .output()?;
    let eth0: serde_json::Value = serde_json::from_slice(&eth0.stdout)?;
    let mac = eth0[0]["address"]
        .as_str()
        .context("eth0's MAC")?
        .to_string();
    let fdb = host.in_host("bridge", &["-j", "fdb", "show", "br", "frouted0"])?;
    let fdb: serde_json::Value = serde_json::from_str(&fdb.expect_success()?.stdout)?;
    let entry = fdb
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["mac"].as_str() == Some(mac.as_str()))
        .with_context(|| format!("no forwarding entry for cli's MAC {mac}: {fdb}"))?;
    ensure!(
        entry["state"] == "static"
            && entry["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "sticky"))
            && entry["ifname"] != "frouted0",
        "cli's MAC is not pinned on its port: {entry}"
    );

    // The bridge's program is there while it has a carried endpoint, and goes with the last.
    let filters = || -> Result<String> {
        let out = host.in_host("tc", &["filter", "show", "dev", "frouted0", "egress"])?;
        Ok(out.expect_success()?.stdout)
    };
    let with_cli = filters()?;
    ensure!(
        with_cli.contains("deliver"),
        "no `deliver` on the bridge's egress: {with_cli}"
    );
    drop(flow);
    host.ferry_ok(&["rm", "-f", "cli"])?;
    let without = filters()?;
    ensure!(
        !without.contains("deliver"),
        "`deliver` stayed on the bridge after its last endpoint went: {without}"
    );
    drop(peer);
    host.finish()
}

/// Datagrams the host's IPv4 stack has forwarded (`Ip: ForwDatagrams` of its
/// /proc/net/snmp): what the conntrack fast path carries is not among them.
fn forwarded(host: &TestHost) -> Result<u64> {
    let snmp = host
        .in_host("cat", &["/proc/net/snmp"])?
        .expect_success()?
        .stdout;
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (
        ip.next().context("Ip: names")?,
        ip.next().context("Ip: values")?,
    );
    let at = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .context("no ForwDatagrams in /proc/net/snmp")?;
    Ok(values
        .split_whitespace()
        .nth(at)
        .context("ForwDatagrams' value")?
        .parse()?)
}

/// How many datagrams the host forwarded while `n` exchanges went over `f`; every
/// exchange must be answered.
fn forwarded_during(host: &TestHost, f: &mut Flow, n: u32) -> Result<u64> {
    let before = forwarded(host)?;
    for _ in 0..n {
        ensure!(f.exchange()?, "{}: no echo", f.what);
    }
    Ok(forwarded(host)? - before)
}

/// Whether the running kernel's own BTF has the conntrack kfuncs the fast path calls
/// (conntrack built in; a kernel that builds it as a module keeps them in the module's
/// BTF, which ferry cannot call yet, and routes every packet through the host's stack).
fn kernel_has_conntrack_kfuncs() -> bool {
    std::fs::read("/sys/kernel/btf/vmlinux")
        .is_ok_and(|btf| btf.windows(18).any(|w| w == b"bpf_skb_ct_lookup\0"))
}

/// Routed flows — in to a published port through DNAT, out through masquerade — take the
/// conntrack fast path once established (bpf/conntrack.h): the host's IPv4 stack
/// forwards next to none of their packets, the echo comes back through the same NAT
/// (from the published address, to the masquerade's), and each flow's entry stays
/// ESTABLISHED with its timeout renewed. Controls, on the same connections: with a rule
/// in `user` (the gate closed) the host forwards every packet and neither flow is reset,
/// and the fast path takes them again when the chain is empty; a `network disconnect`
/// stops the carried flow in while the one out goes on; a rule in `user` that refuses
/// the flow out stops it. A ferryd started after a kill with `--shortcut off` takes the
/// program off the uplink; one with `--shortcut same-network` leaves routed flows to the
/// host.
#[test]
fn routed_flows_are_carried_past_the_hosts_stack_and_stop_where_the_rules_say() -> Result<()> {
    let mut host = host_or_skip!();
    if !kernel_has_conntrack_kfuncs() {
        eprintln!("skipped: the kernel's own BTF has no conntrack kfuncs (conntrack is a module)");
        return host.finish();
    }
    let mut peer = host.add_peer("10.82.0.1/24", "10.82.0.2/24")?;
    peer.spawn("python3", &["-c", ECHO_SERVER])?;
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.81.0.0/24"])?;
    host.run_detached(
        "srv",
        &["--network", &net, "-p", "8093:80"],
        &["python3", "-c", ECHO_SERVER],
    )?;
    let cli_id = host.run_idle("cli", &["--network", &net])?;
    let (srv, cli) = (host.ip_of("srv", &net)?, host.ip_of("cli", &net)?);
    let cli_ns = nsenter_sandbox(&host, &cli_id, "cli")?;
    // The peer's link is an uplink: ferryd puts the fast path's program on it at its
    // first endpoint or its next periodic check.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let filters = host.in_host("tc", &["filter", "show", "dev", &peer.host_if, "ingress"])?;
        if filters.stdout.contains("ferry_inbound") {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no ferry_inbound on the uplink {}: {}\n{}",
            peer.host_if,
            filters.stdout,
            host.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let in_peer = ["ip", "netns", "exec", peer.netns.as_str()];
    let mut dnat = open_retrying("peer → srv's port (DNAT)", &in_peer, &peer.host_ip, 8093)?;
    let mut masq = open_retrying(
        "cli → peer (masquerade)",
        &["nsenter", &cli_ns],
        &peer.ip,
        80,
    )?;
    // The first exchanges go the host's path; the flows are named and marked liberal.
    for f in [&mut dnat, &mut masq] {
        forwarded_during(&host, f, 3)?;
    }
    std::thread::sleep(Duration::from_millis(200));
    const N: u32 = 40;
    for f in [&mut dnat, &mut masq] {
        let by_host = forwarded_during(&host, f, N)?;
        ensure!(
            by_host < 10,
            "{} is not carried past the host's stack: it forwarded {by_host} datagrams in {N} exchanges\n{}",
            f.what,
            host.log_tail(20)
        );
    }
    let table = host.conntrack_table()?;
    for (what, src, dst) in [
        ("DNAT", peer.ip.clone(), peer.host_ip.clone()),
        ("masquerade", cli.clone(), peer.ip.clone()),
    ] {
        let line = table
            .lines()
            .find(|l| l.contains(&format!("src={src} dst={dst} ")) && l.contains("ESTABLISHED"))
            .with_context(|| format!("the {what} flow has no ESTABLISHED entry:\n{table}"))?;
        let timeout: u64 = line.split_whitespace().nth(4).unwrap_or("0").parse()?;
        ensure!(
            timeout > 400_000,
            "the {what} flow's entry was not renewed: {line}"
        );
    }
    ensure!(
        table
            .lines()
            .any(|l| l.contains(&format!("src={srv} dst={} sport=80 ", peer.ip))),
        "the DNAT flow's reply is not from srv:\n{table}"
    );

    // Controls: the gate closed, the host forwards every exchange (a request in and its
    // echo out, at least), and neither flow is reset, then or when the chain empties.
    with_a_user_rule(&host, || {
        for f in [&mut dnat, &mut masq] {
            let by_host = forwarded_during(&host, f, N)?;
            ensure!(
                by_host >= u64::from(2 * N),
                "with a rule in `user`, the host forwarded only {by_host} datagrams of {}",
                f.what
            );
        }
        Ok(())
    })?;
    for f in [&mut dnat, &mut masq] {
        forwarded_during(&host, f, 3)?;
        let by_host = forwarded_during(&host, f, N)?;
        ensure!(
            by_host < 10,
            "{} is not carried again with `user` empty: the host forwarded {by_host} datagrams",
            f.what
        );
    }

    // A disconnect stops the carried flow in; the one out, carried too, goes on.
    host.ferry_ok(&["network", "disconnect", &net, "srv"])?;
    ensure!(
        !dnat.exchange()?,
        "{}: carried on after the disconnect",
        dnat.what
    );
    ensure!(
        masq.exchange()?,
        "{}: no echo after srv's disconnect",
        masq.what
    );
    // A rule in `user` refusing the flow out stops it, carried as it was.
    host.nft(&[
        "add", "rule", "inet", "ferry", "user", "ip", "saddr", &cli, "ip", "daddr", &peer.ip,
        "drop",
    ])?;
    std::thread::sleep(Duration::from_millis(500));
    let refused = masq.exchange();
    host.nft(&["flush", "chain", "inet", "ferry", "user"])?;
    ensure!(!refused?, "{}: passed a drop rule in `user`", masq.what);
    drop((dnat, masq));

    // ferryd killed, the next one started with `--shortcut off`: the dead one's program
    // comes off the uplink too.
    host.set_ferryd_args(&["--shortcut", "off"]);
    host.restart_kill9()?;
    let filters = host.in_host("tc", &["filter", "show", "dev", &peer.host_if, "ingress"])?;
    ensure!(
        !filters.stdout.contains("ferry_inbound"),
        "with --shortcut off after a kill, ferry_inbound is left on the uplink: {}",
        filters.stdout
    );

    // A ferryd started with `--shortcut same-network` carries traffic within a network
    // only: a new flow out goes through the host's stack, every exchange of it.
    host.set_ferryd_args(&["--shortcut", "same-network"]);
    host.restart_kill9()?;
    let what = "cli → peer (masquerade, --shortcut same-network)";
    let mut again = open_retrying(what, &["nsenter", &cli_ns], &peer.ip, 80)?;
    forwarded_during(&host, &mut again, 3)?;
    std::thread::sleep(Duration::from_millis(200));
    let by_host = forwarded_during(&host, &mut again, N)?;
    ensure!(
        by_host >= u64::from(2 * N),
        "with --shortcut same-network, the host forwarded only {by_host} datagrams of {what}"
    );
    drop(again);
    drop(peer);
    host.finish()
}
