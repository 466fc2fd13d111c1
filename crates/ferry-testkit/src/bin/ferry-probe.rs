//! `ferry-probe`: the traffic the firewall scenarios need and busybox lacks (this busybox's
//! `nc` has no UDP), run inside sandboxes and test namespaces. Servers answer each client
//! with the address they saw it come from, so a test can tell masquerade from no NAT.
//! Clients are bounded: 2 s to connect and 2 s to get the answer.
//!
//!   ferry-probe serve-tcp PORT      ferry-probe tcp IP PORT
//!   ferry-probe serve-udp PORT      ferry-probe udp IP PORT

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(2);

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
        _ => Err("usage: ferry-probe serve-tcp|serve-udp PORT | tcp|udp IP PORT".into()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

type R = Result<(), String>;

fn serve_tcp(port: &str) -> R {
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| e.to_string())?;
    for mut s in l.incoming().flatten() {
        if let Ok(peer) = s.peer_addr() {
            let _ = s.write_all(format!("from {}\n", peer.ip()).as_bytes());
        }
    }
    Ok(())
}

fn serve_udp(port: &str) -> R {
    let s = UdpSocket::bind(format!("0.0.0.0:{port}")).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    loop {
        if let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("from {}\n", peer.ip()).as_bytes(), peer);
        }
    }
}

fn target(ip: &str, port: &str) -> Result<SocketAddr, String> {
    format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("{ip}:{port}: {e}"))
}

fn tcp(ip: &str, port: &str) -> R {
    let to = target(ip, port)?;
    let mut s = TcpStream::connect_timeout(&to, WAIT).map_err(|e| format!("connect {to}: {e}"))?;
    s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read from {to}: {e}"))?;
    print!("{out}");
    Ok(())
}

fn udp(ip: &str, port: &str) -> R {
    let to = target(ip, port)?;
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    s.send_to(b"hello", to)
        .map_err(|e| format!("send to {to}: {e}"))?;
    let mut buf = [0u8; 512];
    // A timed recv is not restarted after a stop or freeze of this process: wait again.
    let (n, _) = loop {
        match s.recv_from(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.map_err(|e| format!("no answer from {to}: {e}"))?,
        }
    };
    print!("{}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}
