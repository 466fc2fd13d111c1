//! Where ferryd keeps things. Every global path is a flag so several ferryd can run
//! side by side (the privileged tests start one per test).

use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::br_netfilter::BrNetfilter;

#[derive(Debug, Clone)]
pub struct Config {
    /// Persistent state (the store).
    pub data_root: PathBuf,
    /// Runtime state: pinned namespaces, sandbox files, logs.
    pub exec_root: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// Where `ferry-<name>` links make sandboxes visible to `ip netns`.
    pub netns_dir: PathBuf,
    /// The default bridge's address and prefix.
    pub bip: Ipv4Net,
    /// `--br-netfilter`: whether bridged frames keep walking the IP hooks.
    pub br_netfilter: BrNetfilter,
    /// `--shortcut`: whether same-network traffic is carried past the bridge.
    pub shortcut: crate::shortcut::Mode,
    /// plughost: where third-party plugins are found, and how long they are waited for.
    pub plughost: crate::plughost::Conf,
}

impl Config {
    /// Every path under `root` and the default bridge at 172.17.0.1/16: a ferryd of its
    /// own for a test (or beside another one).
    pub fn under(root: &std::path::Path) -> Config {
        Config {
            data_root: root.join("data"),
            exec_root: root.join("run"),
            socket: root.join("ferry.sock"),
            netns_dir: root.join("netns"),
            bip: Ipv4Net::new(std::net::Ipv4Addr::new(172, 17, 0, 1), 16).expect("a /16"),
            br_netfilter: BrNetfilter::Keep,
            shortcut: crate::shortcut::Mode::On,
            plughost: crate::plughost::Conf::none(&root.join("run")),
        }
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_root.join("ferry.redb")
    }
    pub fn netns_root(&self) -> PathBuf {
        self.exec_root.join("netns")
    }
    /// The pinned namespace of ferryd itself, used by `--network host`.
    pub fn host_netns(&self) -> PathBuf {
        self.netns_root().join("default")
    }
    pub fn sandbox_netns(&self, id: &str) -> PathBuf {
        self.netns_root().join(&id[..12])
    }
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.exec_root.join("sandboxes").join(id)
    }
    /// Present while `ip_forward` is on because ferryd turned it on (the exec root is on
    /// a tmpfs, as the sysctl forgets its value at boot).
    pub fn forwarding_marker(&self) -> PathBuf {
        self.exec_root.join("ip_forward-by-ferry")
    }
    /// The br_netfilter calls ferryd turned off (`--br-netfilter off`), one per line.
    pub fn br_netfilter_marker(&self) -> PathBuf {
        self.exec_root.join("br_netfilter-off-by-ferry")
    }
    pub fn netns_link(&self, name: &str) -> PathBuf {
        self.netns_dir.join(format!("ferry-{name}"))
    }
}
