//! `ferry-probe`: the traffic the firewall scenarios need and busybox lacks (this busybox's
//! `nc` has no UDP), run inside sandboxes and test namespaces. Servers answer each client
//! with the address they saw it come from, so a test can tell masquerade from no NAT.
//! Clients are bounded: 2 s to connect and 2 s to get the answer.
//!
//!   ferry-probe serve-tcp PORT      ferry-probe tcp IP PORT
//!   ferry-probe serve-udp PORT      ferry-probe udp IP PORT
//!   ferry-probe ping-all SECONDS IP…
//!
//! `ping-all` sends ICMP echo requests to every address, again every 100 ms to those that
//! have not answered, until all have or SECONDS pass; it prints `reached N/M in T ms`
//! (timeout if not all answered). For the overlay's scale benchmark: the kernel answers,
//! so the sandboxes probed need no server.
//!
//! A client that fails says why in its exit code, so a test can tell a firewall's drop from
//! a closed port from a broken setup (the codes avoid 1, which `ferry` uses for a daemon
//! error and `ip netns exec` for a failed exec, and 125–127, `ferry exec`'s own):
//!
//!   10 refused      the connection was refused (TCP RST, or ICMP port unreachable on UDP)
//!   11 timeout      no connection or no answer within the bound: dropped on the way
//!   12 unreachable  ICMP host/network unreachable, or no route
//!   13 other        another network error (reset after connect, short answer, …)
//!   20 tool         bad arguments or a local failure (bind, socket): nothing was tested
//!
//! The same kind is printed first on stderr (`ferry-probe: timeout: …`), so a test can also
//! check that the probe itself ran and reported, not a wrapper that happened to exit 10–13.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(2);

/// Why a client failed: the exit code and the word on stderr.
#[derive(Clone, Copy)]
enum Kind {
    Refused = 10,
    Timeout = 11,
    Unreachable = 12,
    Other = 13,
    Tool = 20,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Refused => "refused",
            Kind::Timeout => "timeout",
            Kind::Unreachable => "unreachable",
            Kind::Other => "other",
            Kind::Tool => "tool",
        }
    }

    /// A network error from connect, send or receive, by its errno.
    fn of(e: &std::io::Error) -> Kind {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Kind::Refused,
            // A timed connect gives ETIMEDOUT, a timed read EAGAIN.
            Some(libc::ETIMEDOUT | libc::EAGAIN) => Kind::Timeout,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => Kind::Unreachable,
            // std's connect_timeout reports its own deadline without an errno.
            None if e.kind() == std::io::ErrorKind::TimedOut => Kind::Timeout,
            _ => Kind::Other,
        }
    }
}

struct Fail(Kind, String);

fn tool(e: impl std::fmt::Display) -> Fail {
    Fail(Kind::Tool, e.to_string())
}

fn net(what: String, e: std::io::Error) -> Fail {
    Fail(Kind::of(&e), format!("{what}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve-tcp", port] => serve_tcp(port),
        ["serve-udp", port] => serve_udp(port),
        ["tcp", ip, port] => tcp(ip, port),
        ["udp", ip, port] => udp(ip, port),
        ["ping-all", secs, ips @ ..] => ping_all(secs, ips),
        _ => Err(tool(
            "usage: ferry-probe serve-tcp|serve-udp PORT | tcp|udp IP PORT | ping-all SECONDS IP…",
        )),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(kind, e)) => {
            eprintln!("ferry-probe: {}: {e}", kind.word());
            ExitCode::from(kind as u8)
        }
    }
}

type R = Result<(), Fail>;

fn serve_tcp(port: &str) -> R {
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(tool)?;
    for mut s in l.incoming().flatten() {
        if let Ok(peer) = s.peer_addr() {
            let _ = s.write_all(format!("from {}\n", peer.ip()).as_bytes());
        }
    }
    Ok(())
}

fn serve_udp(port: &str) -> R {
    let s = UdpSocket::bind(format!("0.0.0.0:{port}")).map_err(tool)?;
    let mut buf = [0u8; 512];
    loop {
        if let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("from {}\n", peer.ip()).as_bytes(), peer);
        }
    }
}

fn target(ip: &str, port: &str) -> Result<SocketAddr, Fail> {
    format!("{ip}:{port}")
        .parse()
        .map_err(|e| tool(format!("{ip}:{port}: {e}")))
}

/// The answer must be the servers' one line, `from ADDR`; anything else is not a reach.
fn answer(to: SocketAddr, got: &str) -> R {
    if got.starts_with("from ") && got.ends_with('\n') {
        print!("{got}");
        Ok(())
    } else {
        Err(Fail(
            Kind::Other,
            format!("{to} answered {got:?}, not a probe server's line"),
        ))
    }
}

fn tcp(ip: &str, port: &str) -> R {
    let to = target(ip, port)?;
    let mut s =
        TcpStream::connect_timeout(&to, WAIT).map_err(|e| net(format!("connect {to}"), e))?;
    s.set_read_timeout(Some(WAIT)).map_err(tool)?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| net(format!("read from {to}"), e))?;
    answer(to, &out)
}

fn udp(ip: &str, port: &str) -> R {
    let to = target(ip, port)?;
    let s = UdpSocket::bind("0.0.0.0:0").map_err(tool)?;
    s.set_read_timeout(Some(WAIT)).map_err(tool)?;
    // Connected, so an ICMP port unreachable comes back as "refused" rather than silence.
    s.connect(to).map_err(|e| net(format!("connect {to}"), e))?;
    s.send(b"hello")
        .map_err(|e| net(format!("send to {to}"), e))?;
    let mut buf = [0u8; 512];
    // A timed recv is not restarted after a stop or freeze of this process: wait again.
    let n = loop {
        match s.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.map_err(|e| net(format!("answer from {to}"), e))?,
        }
    };
    answer(to, &String::from_utf8_lossy(&buf[..n]))
}

/// An ICMP echo request with this identifier and sequence number, checksummed.
fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 8;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(b"ferryfer");
    let mut sum: u32 = p
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

/// The sender of an echo reply with identifier `id` in a raw IPv4 datagram, if it is one.
fn echo_reply_from(d: &[u8], id: u16) -> Option<std::net::Ipv4Addr> {
    let ihl = usize::from(*d.first()? & 0x0f) * 4;
    let icmp = d.get(ihl..ihl + 8)?;
    let ours = icmp[0] == 0 && u16::from_be_bytes([icmp[4], icmp[5]]) == id;
    ours.then(|| std::net::Ipv4Addr::new(d[12], d[13], d[14], d[15]))
}

fn ping_all(secs: &str, ips: &[&str]) -> R {
    use nix::sys::socket::{
        recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag,
        SockProtocol, SockType, SockaddrIn,
    };
    use std::collections::BTreeSet;
    use std::os::fd::AsRawFd;
    let limit = Duration::from_secs(secs.parse().map_err(tool)?);
    let mut left: BTreeSet<std::net::Ipv4Addr> = ips
        .iter()
        .map(|s| s.parse().map_err(|e| tool(format!("{s}: {e}"))))
        .collect::<Result<_, _>>()?;
    let total = left.len();
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::Icmp,
    )
    .map_err(tool)?;
    let tick = nix::sys::time::TimeVal::new(0, 20_000);
    setsockopt(&fd, sockopt::ReceiveTimeout, &tick).map_err(tool)?;
    let id = (std::process::id() & 0xffff) as u16;
    let start = std::time::Instant::now();
    let mut seq = 0u16;
    let mut buf = [0u8; 1500];
    while !left.is_empty() && start.elapsed() < limit {
        seq = seq.wrapping_add(1);
        for ip in &left {
            let to = SockaddrIn::from(std::net::SocketAddrV4::new(*ip, 0));
            let _ = sendto(
                fd.as_raw_fd(),
                &echo_request(id, seq),
                &to,
                MsgFlags::empty(),
            );
        }
        let round = std::time::Instant::now();
        while round.elapsed() < Duration::from_millis(100) {
            match recvfrom::<SockaddrIn>(fd.as_raw_fd(), &mut buf) {
                Ok((n, _)) => {
                    if let Some(from) = echo_reply_from(&buf[..n], id) {
                        left.remove(&from);
                    }
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(tool(e)),
            }
        }
    }
    let ms = start.elapsed().as_millis();
    println!("reached {}/{total} in {ms} ms", total - left.len());
    match left.first() {
        None => Ok(()),
        Some(ip) => Err(Fail(
            Kind::Timeout,
            format!("{} of {total} did not answer, {ip} among them", left.len()),
        )),
    }
}
