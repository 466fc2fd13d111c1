//! Other machines on the host's network: a [`Peer`] is a network namespace of its own,
//! joined to the test host (ferryd's namespace) by a veth pair with an address on each end,
//! so a scenario can reach published ports "from another machine", route to a bridge's
//! subnet through the host, or check what source address leaves the host. Nothing routes
//! further: the peer has no default route, and the host's end is named `tp…`, a prefix
//! ferry never owns. Dropping the peer kills what it started, deletes both ends and the
//! namespace.

use crate::cmd::{run_bounded, Output};
use crate::host::TestHost;
use crate::kernel::program_in;
use anyhow::{Context, Result};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const IP: &str = "ip";
const BOUND: Duration = Duration::from_secs(15);

pub struct Peer {
    /// The namespace's name under /run/netns.
    pub netns: String,
    /// The host's end of the link, in ferryd's namespace.
    pub host_if: String,
    /// The host's address on the link (what the peer connects to).
    pub host_ip: String,
    /// The peer's own address.
    pub ip: String,
    host_netns: File,
    probe: PathBuf,
    children: Vec<Child>,
}

fn ip_ok(args: &[&str]) -> Result<()> {
    run_bounded(Command::new(IP).args(args), BOUND)?.expect_success()?;
    Ok(())
}

impl TestHost {
    /// Any program run in the host's (ferryd's) network namespace, bounded.
    pub fn in_host(&self, program: &str, args: &[&str]) -> Result<Output> {
        program_in(self.netns()?, program, args, BOUND)
    }

    /// `nft ARGS…` in the host's namespace; must succeed.
    pub fn nft(&self, args: &[&str]) -> Result<String> {
        Ok(self.in_host("nft", args)?.expect_success()?.stdout)
    }

    /// The host namespace's conntrack table (`/proc/net/nf_conntrack`), one flow a line.
    pub fn conntrack_table(&self) -> Result<String> {
        Ok(self
            .in_host("cat", &["/proc/net/nf_conntrack"])?
            .expect_success()?
            .stdout)
    }

    /// A new peer: `host_cidr` on the host's end, `peer_cidr` on the peer's `eth0`.
    pub fn add_peer(&self, host_cidr: &str, peer_cidr: &str) -> Result<Peer> {
        self.add_peer_named(&format!("tp{}", crate::unique("")), host_cidr, peer_cidr)
    }

    /// [`TestHost::add_peer`] with the host's end called `host_if` (a test can name it
    /// `docker0` to stand for another container engine's bridge).
    pub fn add_peer_named(&self, host_if: &str, host_cidr: &str, peer_cidr: &str) -> Result<Peer> {
        let tag = crate::unique("");
        let netns = format!("fyt-peer-{tag}");
        let host_if = host_if.to_string();
        ip_ok(&["netns", "add", &netns])?;
        let peer = Peer {
            netns: netns.clone(),
            host_if: host_if.clone(),
            host_ip: host_cidr.split('/').next().unwrap_or("").to_string(),
            ip: peer_cidr.split('/').next().unwrap_or("").to_string(),
            host_netns: self.netns()?.try_clone().context("dup the host netns fd")?,
            probe: self.bins.probe.clone(),
            children: vec![],
        };
        let h = |args: &[&str]| -> Result<()> {
            self.in_host(IP, args)?.expect_success()?;
            Ok(())
        };
        h(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        h(&["addr", "add", host_cidr, "dev", &host_if])?;
        h(&["link", "set", &host_if, "up"])?;
        h(&["link", "set", "lo", "up"])?;
        peer.ip_in(&["addr", "add", peer_cidr, "dev", "eth0"])?;
        peer.ip_in(&["link", "set", "eth0", "up"])?;
        peer.ip_in(&["link", "set", "lo", "up"])?;
        Ok(peer)
    }
}

impl Peer {
    fn ip_in(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["-n", self.netns.as_str()];
        a.extend(args);
        ip_ok(&a)
    }

    /// A program run inside the peer, bounded; any exit status is Ok.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut a = vec!["netns", "exec", self.netns.as_str(), program];
        a.extend(args);
        run_bounded(Command::new(IP).args(&a), BOUND)
    }

    /// A program started inside the peer, killed when the peer is dropped.
    pub fn spawn(&mut self, program: &str, args: &[&str]) -> Result<()> {
        let child = Command::new(IP)
            .args(["netns", "exec", &self.netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {program} in {}", self.netns))?;
        self.children.push(child);
        Ok(())
    }

    /// A `ferry-probe` server (`proto` "tcp" or "udp") on `port`, for the peer's lifetime.
    pub fn serve(&mut self, proto: &str, port: u16) -> Result<()> {
        let probe = self.probe.to_string_lossy().into_owned();
        self.spawn(&probe, &[&format!("serve-{proto}"), &port.to_string()])
    }

    /// Route `subnet` through the host, as a machine on the host's LAN might.
    pub fn route_via_host(&self, subnet: &str) -> Result<()> {
        self.ip_in(&["route", "add", subnet, "via", &self.host_ip])
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = program_in(&self.host_netns, IP, &["link", "del", &self.host_if], BOUND);
        let _ = run_bounded(Command::new(IP).args(["netns", "del", &self.netns]), BOUND);
    }
}
