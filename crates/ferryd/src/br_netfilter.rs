//! `--br-netfilter off`: stop the bridge from handing bridged frames to the IP hooks.
//!
//! With br_netfilter loaded (built into many kernels, this project's CI among them),
//! every frame a Linux bridge forwards from one port to another also walks the IPv4
//! (IPv6, ARP) prerouting, forward and postrouting hooks: conntrack, and every chain any
//! tool hooked there. Docker needs that for `icc=false`; ferry does not. Its ICC-off rule
//! is in the bridge family, its hairpin to a published port is masqueraded so replies are
//! routed, and everything else it filters is routed traffic. So, when asked, ferryd turns
//! `net.bridge.bridge-nf-call-{iptables,ip6tables,arptables}` off in its namespace and
//! bridged traffic between sandboxes costs what a bare bridge costs (docs/PERFORMANCE.md).
//!
//! The switches belong to the namespace, not to ferry's bridges: other bridges there
//! (dockerd's, with `icc=false`) lose their bridged filtering too, which is why this is a
//! flag and not the default. What ferryd turned off is written to a marker in the exec
//! root (a tmpfs, as the sysctls forget their value at boot) and `ferry system cleanup`
//! turns it back on.

use std::path::Path;

use ferry_kernel::KernelOps;

/// What ferryd does with br_netfilter's calls into the IP hooks (`--br-netfilter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BrNetfilter {
    /// Leave them as the host has them.
    #[default]
    Keep,
    /// Turn them off in ferryd's namespace while ferry has networks.
    Off,
}

/// The three switches, as `/proc/sys` segments.
const CALLS: [[&str; 3]; 3] = [
    ["net", "bridge", "bridge-nf-call-iptables"],
    ["net", "bridge", "bridge-nf-call-ip6tables"],
    ["net", "bridge", "bridge-nf-call-arptables"],
];

impl BrNetfilter {
    /// Apply the setting: with `off`, turn each call off, recording in `marker` the ones
    /// that were on. Without br_netfilter in the kernel there is nothing to turn off.
    pub(crate) async fn apply(self, kernel: &impl KernelOps, marker: &Path) {
        if self != BrNetfilter::Off {
            return;
        }
        let mut turned_off = vec![];
        for key in CALLS {
            match kernel.sysctl(&key, "0").await {
                Ok(true) => turned_off.push(key.join(".")),
                Ok(false) => {}
                Err(e) if e.errno() == Some(libc::ENOENT) => return,
                Err(e) => tracing::warn!("--br-netfilter off: {e}"),
            }
        }
        if turned_off.is_empty() {
            return;
        }
        tracing::info!(
            "--br-netfilter off: turned off {} in ferryd's namespace (other bridges here lose bridged filtering too)",
            turned_off.join(", ")
        );
        let mut had = std::fs::read_to_string(marker).unwrap_or_default();
        for k in turned_off {
            if !had.lines().any(|l| l == k) {
                had.push_str(&k);
                had.push('\n');
            }
        }
        if let Err(e) = std::fs::write(marker, had) {
            tracing::warn!("--br-netfilter off: write {}: {e}", marker.display());
        }
    }
}

/// `system cleanup`: turn back on what [`BrNetfilter::apply`] turned off, as `marker`
/// lists it, whatever the setting is now.
pub(crate) async fn undo(kernel: &impl KernelOps, marker: &Path) -> Vec<String> {
    let Ok(listed) = std::fs::read_to_string(marker) else {
        return vec![];
    };
    let mut errors = vec![];
    for key in CALLS
        .iter()
        .filter(|k| listed.lines().any(|l| l == k.join(".")))
    {
        if let Err(e) = kernel.sysctl(key, "1").await {
            errors.push(e.to_string());
        }
    }
    let _ = std::fs::remove_file(marker);
    errors
}
