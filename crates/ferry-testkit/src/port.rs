//! What the bridge hands a sandbox: the packets sent out of its veth host end, counted
//! by the kernel. The shortcut (crates/ferry-kernel/bpf/shortcut.c) delivers into the
//! sandbox past the bridge, so this counter stays still for what it carries; tests prove
//! it with that, and with a control where the bridge must carry the same traffic.

use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{Context, Result};

use crate::TestHost;

/// A packet counter of one link in ferryd's namespace, readable whether or not ferryd
/// runs: what the bridge sent a sandbox (its host end's tx), what a bridge took in to be
/// routed (its rx), or what the host sent into a bridge (its tx).
pub struct PortCounter {
    /// nsenter's argument for ferryd's namespace (the test's own handle on it: valid as
    /// long as the [`TestHost`] lives).
    host_ns: String,
    link: Link,
    /// `tx` or `rx`.
    way: &'static str,
}

enum Link {
    Index(u64),
    Name(String),
}

impl PortCounter {
    /// The counter of sandbox `id`'s eth0 on `host`.
    pub fn of(host: &TestHost, id: &str) -> Result<PortCounter> {
        let pin = host.exec_root().join("netns").join(&id[..12]);
        let out = Command::new("nsenter")
            .arg(format!("--net={}", pin.display()))
            .args(["ip", "-j", "link", "show", "eth0"])
            .output()?;
        let eth0: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("ip -j link show eth0 in {}", pin.display()))?;
        let host_end = eth0[0]["link_index"]
            .as_u64()
            .context("eth0 has no link_index")?;
        Ok(PortCounter {
            host_ns: host_ns(host)?,
            link: Link::Index(host_end),
            way: "tx",
        })
    }

    /// The packets link `name` (a bridge) received: those it routed or delivered to the
    /// host, which a sandbox's frames to the gateway's MAC are.
    pub fn received_by(host: &TestHost, name: &str) -> Result<PortCounter> {
        Ok(PortCounter {
            host_ns: host_ns(host)?,
            link: Link::Name(name.to_string()),
            way: "rx",
        })
    }

    /// The packets link `name` (a bridge) sent: those the host routed to one of its
    /// ports.
    pub fn sent_by(host: &TestHost, name: &str) -> Result<PortCounter> {
        Ok(PortCounter {
            host_ns: host_ns(host)?,
            link: Link::Name(name.to_string()),
            way: "tx",
        })
    }

    /// Packets the link counted so far.
    pub fn sent(&self) -> Result<u64> {
        let out = Command::new("nsenter")
            .args([&self.host_ns, "ip", "-j", "-s", "link", "show"])
            .output()?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let link = links
            .as_array()
            .context("ip -j link")?
            .iter()
            .find(|l| match &self.link {
                Link::Index(i) => l["ifindex"].as_u64() == Some(*i),
                Link::Name(n) => l["ifname"].as_str() == Some(n),
            })
            .context("the link is not in ferryd's namespace")?;
        link["stats64"][self.way]["packets"]
            .as_u64()
            .context("no packet count")
    }

    /// How many packets the link counted while `f` ran.
    pub fn during<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(u64, T)> {
        let before = self.sent()?;
        let out = f()?;
        Ok((self.sent()? - before, out))
    }
}

/// nsenter's argument for `host`'s namespace, through the test's handle on it.
fn host_ns(host: &TestHost) -> Result<String> {
    let fd = host.netns()?.as_raw_fd();
    Ok(format!("--net=/proc/{}/fd/{fd}", std::process::id()))
}
