//! Anti-spoofing: a sandbox with CAP_NET_RAW cannot pass itself off as another.
//!
//! The attacker crafts whole Ethernet frames on a raw socket (what CAP_NET_RAW allows in
//! its own namespace) and sends them to a witness sandbox on the same bridge, which
//! records every frame that reaches its eth0 on a raw socket of its own. Frames carrying
//! another sandbox's IPv4 source (with the attacker's MAC or the victim's), the victim's
//! MAC with the attacker's own address, or ARP replies and gratuitous ARP claiming the
//! victim's address must not reach it; the same frames carrying the attacker's own MAC
//! and address (the controls) must, in the same window. The frames that would go past a
//! bridge (routed through the gateway to a peer outside) are checked the same way. After
//! the attempts the witness still has the victim's true MAC for its address and real
//! traffic flows both ways. See `sources` in crates/ferry-core/src/nft/mod.rs.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ferry_testkit::{host_or_skip, run_bounded, unique, At, TestHost};

/// Records, for ARGV[2] seconds, each frame that reaches interface ARGV[1] (not the ones
/// it sends): `ip SRC PROTO DPORT ETHSRC` for TCP/UDP over IPv4, `arp OP SHA SPA ETHSRC`
/// for ARP. Prints `ready` once bound.
const SNIFF: &str = r#"
import socket, sys, time
mac = lambda b: ':'.join('%02x' % x for x in b)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
print('ready', flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    s.settimeout(max(0.01, end - time.time()))
    try:
        f, addr = s.recvfrom(65535)
    except socket.timeout:
        break
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    et = f[12:14]
    if et == b'\x08\x00':
        ihl = (f[14] & 15) * 4
        proto = f[23]
        if proto in (6, 17):
            dport = int.from_bytes(f[14 + ihl + 2:14 + ihl + 4], 'big')
            print('ip', socket.inet_ntoa(f[26:30]), proto, dport, mac(f[6:12]), flush=True)
    elif et == b'\x08\x06':
        op = int.from_bytes(f[20:22], 'big')
        print('arp', op, mac(f[22:28]), socket.inet_ntoa(f[28:32]), mac(f[6:12]), flush=True)
"#;

/// Sends each frame described by an argument (3 times) out of interface ARGV[1]:
/// `udp|tcp,ETHSRC,IPSRC,ETHDST,IPDST,DPORT` (a datagram or a SYN) or
/// `arp,ETHSRC,SPA,ETHDST,TPA,OP` (SHA = ETHSRC).
const SEND: &str = r#"
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
m = lambda t: bytes.fromhex(t.replace(':', ''))
a = socket.inet_aton
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for spec in sys.argv[2:]:
    k, es, src, ed, dst, n = spec.split(',')
    n = int(n)
    if k == 'arp':
        body = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, n, m(es), a(src), m('00:00:00:00:00:00') if n == 1 else m(ed), a(dst))
        frame = m(ed) + m(es) + b'\x08\x06' + body
    else:
        if k == 'udp':
            l4 = struct.pack('!HHHH', 40000, n, 8 + 5, 0) + b'spoof'
            proto = 17
        else:
            l4 = struct.pack('!HHIIBBHHH', 40000, n, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
            proto = 6
            pseudo = a(src) + a(dst) + struct.pack('!BBH', 0, 6, len(l4))
            l4 = l4[:16] + struct.pack('!H', csum(pseudo + l4)) + l4[18:]
        h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, a(src), a(dst))
        h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
        frame = m(ed) + m(es) + b'\x08\x00' + h + l4
    for _ in range(3):
        s.send(frame)
"#;

/// `nsenter --net=PIN` for sandbox `id` (its namespace pin in ferryd's exec root).
fn in_sandbox(host: &TestHost, id: &str) -> Result<String> {
    let pin = host.exec_root().join("netns").join(&id[..12]);
    ensure!(pin.exists(), "no namespace pin at {}", pin.display());
    Ok(format!("--net={}", pin.display()))
}

/// A running sniffer: killed on drop, whatever happened.
struct Sniffer(Child);

impl Sniffer {
    fn start(
        ns: &str,
        ifname: &str,
        secs: u32,
    ) -> Result<(Sniffer, std::sync::mpsc::Receiver<String>)> {
        let mut child = Command::new("nsenter")
            .args([ns, "python3", "-u", "-c", SNIFF, ifname, &secs.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start the sniffer")?;
        let out = child.stdout.take().context("sniffer stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let s = Sniffer(child);
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .context("the sniffer never said ready")?;
        ensure!(first == "ready", "sniffer: {first}");
        Ok((s, rx))
    }

    /// Everything it saw, once its window is over (bounded).
    fn collect(mut self, rx: &std::sync::mpsc::Receiver<String>, secs: u32) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(u64::from(secs) + 5);
        let mut seen = vec![];
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        seen
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The MAC of `ifname` in the namespace `ns` (an nsenter argument) enters, by netlink
/// (nsenter leaves /sys showing the test's own namespace).
fn mac_of_link(ns: &str, ifname: &str) -> Result<String> {
    let out = run_bounded(
        Command::new("nsenter").args([ns, "ip", "-o", "link", "show", ifname]),
        Duration::from_secs(5),
    )?
    .expect_success()?;
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "link/ether")
        .with_context(|| format!("no MAC in {}", out.stdout))?;
    Ok(words[at + 1].to_string())
}

fn mac_of(ns: &str) -> Result<String> {
    mac_of_link(ns, "eth0")
}

fn send(ns: &str, frames: &[String]) -> Result<()> {
    let mut cmd = Command::new("nsenter");
    cmd.args([ns, "python3", "-c", SEND, "eth0"]).args(frames);
    run_bounded(&mut cmd, Duration::from_secs(10))?.expect_success()?;
    Ok(())
}

#[test]
fn a_sandbox_cannot_send_with_another_sandboxs_address_or_mac_nor_answer_arp_for_it() -> Result<()>
{
    let host = host_or_skip!();
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.97.0.0/24"])?;
    let wit_id = host.run_server("wit", &["--network", &net], "tcp", 80)?;
    let vic_id = host.run_server("vic", &["--network", &net], "tcp", 80)?;
    let att_id = host.run_server("att", &["--network", &net], "tcp", 80)?;
    let (wit, vic, att) = (
        host.ip_of("wit", &net)?,
        host.ip_of("vic", &net)?,
        host.ip_of("att", &net)?,
    );
    let (wit_ns, vic_ns, att_ns) = (
        in_sandbox(&host, &wit_id)?,
        in_sandbox(&host, &vic_id)?,
        in_sandbox(&host, &att_id)?,
    );
    let (wit_mac, vic_mac, att_mac) = (mac_of(&wit_ns)?, mac_of(&vic_ns)?, mac_of(&att_ns)?);
    // The witness knows the victim's true MAC (an exchange first).
    host.expect_reach(At::Sandbox("wit"), "tcp", &vic, 80)?;

    let frame = |k: &str, es: &str, src: &str, ed: &str, dst: &str, n: u16| {
        format!("{k},{es},{src},{ed},{dst},{n}")
    };
    let bcast = "ff:ff:ff:ff:ff:ff";
    // (frame, what it is, whether it must arrive)
    let cases = [
        (
            frame("udp", &att_mac, &att, &wit_mac, &wit, 41001),
            "UDP from its own MAC and address (control)",
            true,
        ),
        (
            frame("tcp", &att_mac, &att, &wit_mac, &wit, 41002),
            "TCP SYN from its own MAC and address (control)",
            true,
        ),
        (
            frame("udp", &att_mac, &vic, &wit_mac, &wit, 41003),
            "UDP with the victim's address",
            false,
        ),
        (
            frame("tcp", &att_mac, &vic, &wit_mac, &wit, 41004),
            "TCP SYN with the victim's address",
            false,
        ),
        (
            frame("udp", &vic_mac, &vic, &wit_mac, &wit, 41005),
            "UDP with the victim's MAC and address",
            false,
        ),
        (
            frame("udp", &vic_mac, &att, &wit_mac, &wit, 41006),
            "UDP with the victim's MAC and its own address",
            false,
        ),
        (
            frame("udp", &att_mac, "10.97.0.1", &wit_mac, &wit, 41007),
            "UDP with the gateway's address",
            false,
        ),
        (
            frame("arp", &att_mac, &att, &wit_mac, &wit, 2),
            "ARP reply for its own address (control)",
            true,
        ),
        (
            frame("arp", &att_mac, &vic, &wit_mac, &wit, 2),
            "ARP reply claiming the victim's address",
            false,
        ),
        (
            frame("arp", &att_mac, &vic, bcast, &vic, 1),
            "gratuitous ARP claiming the victim's address",
            false,
        ),
        (
            frame("arp", &att_mac, "10.97.0.1", bcast, "10.97.0.1", 1),
            "gratuitous ARP claiming the gateway's address",
            false,
        ),
    ];
    const WINDOW: u32 = 4;
    let (sniffer, rx) = Sniffer::start(&wit_ns, "eth0", WINDOW)?;
    let frames: Vec<String> = cases.iter().map(|c| c.0.clone()).collect();
    send(&att_ns, &frames)?;
    let seen = sniffer.collect(&rx, WINDOW);
    let arrived = |spec: &str| {
        let f: Vec<&str> = spec.split(',').collect();
        let want = match f[0] {
            "arp" => format!("arp {} {} {} {}", f[5], f[1], f[2], f[1]),
            k => format!(
                "ip {} {} {} {}",
                f[2],
                if k == "udp" { 17 } else { 6 },
                f[5],
                f[1]
            ),
        };
        seen.contains(&want)
    };
    let mut wrong = vec![];
    for (spec, what, must) in &cases {
        if arrived(spec) != *must {
            let verdict = if *must { "did not arrive" } else { "arrived" };
            wrong.push(format!("{what}: {verdict} ({spec})"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{}\nthe witness saw:\n{}",
        wrong.join("\n"),
        seen.join("\n")
    );

    // The witness still holds the victim's true MAC, and real traffic flows both ways.
    let neigh = run_bounded(
        Command::new("nsenter").args([wit_ns.as_str(), "ip", "neigh", "show", &vic]),
        Duration::from_secs(5),
    )?
    .expect_success()?;
    ensure!(
        !neigh.out().contains(&att_mac),
        "the witness took the attacker's MAC for {vic}: {}",
        neigh.out()
    );
    host.expect_reach(At::Sandbox("wit"), "tcp", &vic, 80)?;
    host.expect_reach(At::Sandbox("vic"), "tcp", &wit, 80)?;
    host.expect_reach(At::Sandbox("att"), "tcp", &wit, 80)?;

    // The ordinary way: the victim's address added inside the attacker's namespace and a
    // datagram sent from it through the kernel's stack (its ARP for the witness carries
    // the victim's address too) never arrives; one from its own address does.
    run_bounded(
        Command::new("nsenter").args([
            att_ns.as_str(),
            "ip",
            "addr",
            "add",
            &format!("{vic}/32"),
            "dev",
            "eth0",
        ]),
        Duration::from_secs(5),
    )?
    .expect_success()?;
    let (sniffer, rx) = Sniffer::start(&wit_ns, "eth0", WINDOW)?;
    let udp_from = |src: &str, port: u16| -> Result<()> {
        let py = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{src}', 0))\nfor _ in range(3): s.sendto(b'x', ('{wit}', {port}))"
        );
        run_bounded(
            Command::new("nsenter").args([att_ns.as_str(), "python3", "-c", &py]),
            Duration::from_secs(5),
        )?
        .expect_success()?;
        Ok(())
    };
    // The spoofed one first: it must not ride on an ARP entry the control makes.
    udp_from(&vic, 41008)?;
    std::thread::sleep(Duration::from_millis(1500));
    udp_from(&att, 41009)?;
    let seen = sniffer.collect(&rx, WINDOW);
    let got = |port: u16| {
        seen.iter()
            .any(|l| l.starts_with("ip ") && l.contains(&format!(" 17 {port} ")))
    };
    ensure!(
        got(41009),
        "the control datagram from {att} did not arrive: {seen:?}"
    );
    ensure!(
        !got(41008),
        "a datagram from the victim's {vic} arrived: {seen:?}"
    );
    ensure!(
        !seen
            .iter()
            .any(|l| l.starts_with("arp ") && l.contains(&format!(" {vic} "))),
        "an ARP claiming {vic} arrived: {seen:?}"
    );
    host.finish()
}

#[test]
fn a_spoofed_source_does_not_leave_through_the_gateway_either() -> Result<()> {
    let host = host_or_skip!();
    let through = ThroughGateway::set_up(&host, "10.98.0", "10.99.0")?;
    through.spoof_stays_and_control_leaves()?;
    drop(through);
    host.finish()
}

/// The anti-spoofing hook deleted by hand (the bridge table's `prerouting` chain, which
/// only jumps to `guard`) is put back by the periodic check, which counts each chain's
/// rules: within 15 s the chain jumps to `guard` again, and a spoofed datagram stays in
/// while the control leaves.
#[test]
fn the_anti_spoofing_hook_deleted_by_hand_comes_back_by_the_periodic_check() -> Result<()> {
    let host = host_or_skip!();
    let through = ThroughGateway::set_up(&host, "10.96.0", "10.97.0")?;
    host.nft(&["delete", "chain", "bridge", "ferry", "prerouting"])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let back = host
            .nft(&["list", "chain", "bridge", "ferry", "prerouting"])
            .is_ok_and(|l| l.contains("jump guard"));
        if back {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the hook is not back 15 s after it was deleted:\n{}",
            host.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    ensure!(
        host.log_tail(200)
            .contains("missing from chain prerouting (0 of 1)"),
        "ferryd did not say what it restored:\n{}",
        host.log_tail(40)
    );
    through.spoof_stays_and_control_leaves()?;
    drop(through);
    host.finish()
}

/// An attacker and a victim on one network with masquerade off, and a peer routed
/// through the host that records what reaches it.
struct ThroughGateway {
    peer: ferry_testkit::Peer,
    att_ns: String,
    att: String,
    vic: String,
    gateway: String,
}

impl ThroughGateway {
    /// `peer_net` and `net` are the first three octets of the peer's /24 and the
    /// network's.
    fn set_up(host: &TestHost, peer_net: &str, net_prefix: &str) -> Result<ThroughGateway> {
        let mut peer = host.add_peer(&format!("{peer_net}.1/24"), &format!("{peer_net}.2/24"))?;
        peer.serve("udp", 80)?;
        let subnet = format!("{net_prefix}.0/24");
        peer.route_via_host(&subnet)?;
        // Masquerade off: the peer sees the sandboxes' own addresses.
        let net = unique("n");
        host.create_network(
            &net,
            &[
                "--subnet",
                &subnet,
                "-o",
                "com.docker.network.bridge.enable_ip_masquerade=false",
            ],
        )?;
        host.run_idle("vic", &["--network", &net])?;
        let att_id = host.run_idle("att", &["--network", &net])?;
        let (vic, att) = (host.ip_of("vic", &net)?, host.ip_of("att", &net)?);
        let att_ns = in_sandbox(host, &att_id)?;
        // Control: the attacker reaches the peer from its own address.
        let seen = host.expect_reach(At::Sandbox("att"), "udp", &peer.ip, 80)?;
        ensure!(seen == att, "the peer saw {seen}, not {att}");
        Ok(ThroughGateway {
            peer,
            att_ns,
            att,
            vic,
            gateway: format!("{net_prefix}.1"),
        })
    }

    /// A datagram from the victim's address stays in; one from the attacker's leaves.
    fn spoof_stays_and_control_leaves(&self) -> Result<()> {
        let (att_ns, att, vic, peer) = (&self.att_ns, &self.att, &self.vic, &self.peer);
        let att_mac = mac_of(att_ns)?;
        // The gateway's MAC, as the attacker learnt it reaching the peer.
        let neigh = run_bounded(
            Command::new("nsenter").args([att_ns.as_str(), "ip", "neigh", "show", &self.gateway]),
            Duration::from_secs(5),
        )?
        .expect_success()?;
        let gw_mac = neigh
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .with_context(|| format!("no neighbour entry for the gateway: {}", neigh.stdout))?
            .to_string();
        // The peer's own sniffer sees what comes out of the host.
        const WINDOW: u32 = 4;
        let peer_ns = format!("--net=/run/netns/{}", peer.netns);
        let (sniffer, rx) = Sniffer::start(&peer_ns, "eth0", WINDOW)?;
        send(
            att_ns,
            &[
                format!("udp,{att_mac},{vic},{gw_mac},{},41011", peer.ip),
                format!("udp,{att_mac},{att},{gw_mac},{},41012", peer.ip),
            ],
        )?;
        let seen = sniffer.collect(&rx, WINDOW);
        let got = |port: u16| seen.iter().any(|l| l.contains(&format!(" 17 {port} ")));
        ensure!(
            got(41012),
            "the control from {att} did not reach the peer: {seen:?}"
        );
        ensure!(
            !got(41011),
            "a datagram from the victim's {vic} left the host: {seen:?}"
        );
        Ok(())
    }
}

#[test]
fn each_network_checks_its_own_address_for_a_sandbox_on_two() -> Result<()> {
    let host = host_or_skip!();
    let (n1, n2) = (unique("n"), unique("n"));
    host.create_network(&n1, &["--subnet", "10.95.0.0/24"])?;
    host.create_network(&n2, &["--subnet", "10.96.0.0/24"])?;
    let wit_id = host.run_idle("wit", &["--network", &n2])?;
    let both_id = host.run_idle("both", &["--network", &n1])?;
    host.ferry_ok(&["network", "connect", &n2, "both"])?;
    let (wit, one, two) = (
        host.ip_of("wit", &n2)?,
        host.ip_of("both", &n1)?,
        host.ip_of("both", &n2)?,
    );
    let (wit_ns, both_ns) = (in_sandbox(&host, &wit_id)?, in_sandbox(&host, &both_id)?);
    let wit_mac = mac_of(&wit_ns)?;
    // The sandbox's link on n2 (the one that is not eth0's network).
    let out = run_bounded(
        Command::new("nsenter").args([both_ns.as_str(), "ip", "-o", "-4", "addr", "show"]),
        Duration::from_secs(5),
    )?
    .expect_success()?;
    let if2 = out
        .stdout
        .lines()
        .find(|l| l.contains(&format!(" {two}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .context("the link with the n2 address")?
        .to_string();
    let mac2 = mac_of_link(&both_ns, &if2)?;
    const WINDOW: u32 = 4;
    let (sniffer, rx) = Sniffer::start(&wit_ns, "eth0", WINDOW)?;
    let mut cmd = Command::new("nsenter");
    cmd.args([both_ns.as_str(), "python3", "-c", SEND, &if2])
        .args([
            format!("udp,{mac2},{one},{wit_mac},{wit},41021"),
            format!("udp,{mac2},{two},{wit_mac},{wit},41022"),
        ]);
    run_bounded(&mut cmd, Duration::from_secs(10))?.expect_success()?;
    let seen = sniffer.collect(&rx, WINDOW);
    let got = |port: u16| seen.iter().any(|l| l.contains(&format!(" 17 {port} ")));
    ensure!(
        got(41022),
        "the control from its n2 address {two} did not arrive: {seen:?}"
    );
    ensure!(
        !got(41021),
        "a datagram on n2 from its n1 address {one} arrived: {seen:?}"
    );
    host.finish()
}

#[test]
fn a_sources_element_deleted_by_hand_cuts_only_that_sandbox_off_until_ferryd_restores_it(
) -> Result<()> {
    let mut host = host_or_skip!();
    let net = unique("n");
    host.create_network(&net, &["--subnet", "10.94.0.0/24"])?;
    host.run_server("srv", &["--network", &net], "tcp", 80)?;
    let cut_id = host.run_idle("cut", &["--network", &net])?;
    let ctl_id = host.run_idle("ctl", &["--network", &net])?;
    let (srv, cut) = (host.ip_of("srv", &net)?, host.ip_of("cut", &net)?);
    let (cut_ns, ctl_ns) = (in_sandbox(&host, &cut_id)?, in_sandbox(&host, &ctl_id)?);
    host.expect_reach(At::Sandbox("cut"), "tcp", &srv, 80)?;
    // With ferryd stopped (no periodic check to race with), the element goes by hand.
    let pid = host.ferryd_pid().context("ferryd's pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .context("SIGTERM the test's ferryd")?;
    ensure!(
        ferry_testkit::process_gone(pid as i32, Duration::from_secs(15)),
        "ferryd did not exit within 15 s of SIGTERM"
    );
    let element = host
        .nft_elements()?
        .into_iter()
        .find(|e| e.starts_with("bridge/sources ") && e.contains(&format!("\"{cut}\"")))
        .with_context(|| format!("no sources element for {cut}"))?;
    // `bridge/sources {"concat": ["fy…", "02:42:…", "10.94.0.3"]}` → nft's syntax.
    let json: serde_json::Value =
        serde_json::from_str(element.trim_start_matches("bridge/sources "))?;
    let parts: Vec<&str> = json["concat"]
        .as_array()
        .context("a concatenation")?
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    ensure!(parts.len() == 3, "unexpected element {element}");
    let key = format!("\"{}\" . {} . {}", parts[0], parts[1], parts[2]);
    host.nft(&[
        "delete",
        "element",
        "bridge",
        "ferry",
        "sources",
        &format!("{{ {key} }}"),
    ])?;
    // Fail-closed: the sandbox whose element went sends nothing (a bounded probe); the
    // other goes on (control).
    let probe = host.bins().probe.to_string_lossy().into_owned();
    let probe_from = |ns: &str| -> Result<bool> {
        let t = std::time::Instant::now();
        let out = run_bounded(
            Command::new("nsenter").args([ns, probe.as_str(), "tcp", srv.as_str(), "80"]),
            ferry_testkit::REFUSED_WITHIN + Duration::from_secs(2),
        )?;
        ensure!(t.elapsed() <= ferry_testkit::REFUSED_WITHIN + Duration::from_secs(2));
        Ok(out.success())
    };
    ensure!(probe_from(&ctl_ns)?, "the control sandbox lost its traffic");
    ensure!(
        !probe_from(&cut_ns)?,
        "a veth without its element still sends"
    );
    // A new ferryd loads the tables whole from the state: the element is back.
    host.restart_after_exit()?;
    host.expect_reach(At::Sandbox("cut"), "tcp", &srv, 80)?;
    // With ferryd running, the periodic check (every 5 s) finds the set short and loads
    // the tables again: the sandbox's traffic is back within 15 s.
    host.nft(&[
        "delete",
        "element",
        "bridge",
        "ferry",
        "sources",
        &format!("{{ {key} }}"),
    ])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !probe_from(&cut_ns)? {
        ensure!(
            std::time::Instant::now() < deadline,
            "the sandbox is still cut off 15 s after its element was deleted"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    host.finish()
}
