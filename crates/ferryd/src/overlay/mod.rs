//! ferryd's half of the overlay: turning the cluster's records into this host's networks
//! and tunnel entries, and this host's endpoints into records. This module holds this
//! host's membership ([`Overlay`]: the cluster client, the view) and the pure
//! translations (`records`, `entries`); the daemon's tasks and operations that use them
//! are in `crate::ops::overlay` (`agent`, `entries`, `network`).
//!
//! Design note. An overlay network has a local copy on every host, kept in the embedded
//! store like any network: a bridge (`fo-<id8>`) with the network's gateway address,
//! answering ARP for remote addresses (proxy ARP), and a routed VXLAN device (`fv-<id8>`)
//! that carries each remote host's blocks ([`ferry_overlay::Tunnel`]). Sandboxes join the
//! bridge exactly as they join a bridge network, so addresses, the firewall, DNS and
//! published ports need nothing new; the
//! local pool's `--ip-range` is the block this host claimed, so allocation needs no
//! etcd round trip. What crosses hosts:
//!
//! * `agent` — one task per host: the lease keep-alive, and one watch of the whole
//!   prefix. Each change is applied to the [`View`]; then the local copies are made or
//!   removed (`Daemon::sync_networks`), the routes and the VXLAN device's entries are
//!   made to match the remote hosts' blocks ([`entries`]) and the DNS table learns the
//!   remote endpoints' names. A compacted
//!   watch, or a watch that ended because etcd went away, is followed by a fresh range
//!   and a full resync: nothing missed, nothing doubled.
//! * `publish` — this host's endpoints (live ones, and ones holding a static address) are
//!   written under its lease whenever a commit touches a sandbox, and again when the
//!   lease was lost; the view's record of what etcd holds is the diff's other side.
//! * operations that must ask etcd — creating or removing an overlay, the first endpoint
//!   on a host (its block), a static `--ip` outside the block — fail at once with an
//!   error naming etcd when it cannot be reached; nothing is guessed locally.

pub(crate) mod entries;
pub(crate) mod records;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_overlay::{Cluster, ClusterError, View};
use ferry_store::EtcdConfig;
use tokio::sync::Notify;

pub(crate) use records::DOCKER_HELD;

/// The overlay encapsulation over an IPv4 underlay: outer IPv4 (20) + UDP (8) +
/// VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

/// This host's membership of the cluster.
pub struct Overlay {
    pub cluster: Arc<Cluster>,
    /// The cluster as last seen: the range at start, then every watch message.
    /// Shared, copied on write: a reader takes the `Arc`, the watch copies only when
    /// a reader still holds the one it changes.
    pub(crate) view: std::sync::Mutex<Arc<View>>,
    /// Per VXLAN device, the routes and entries programmed for its overlay.
    pub(crate) programmed: tokio::sync::Mutex<BTreeMap<String, entries::Programmed>>,
    /// Wakes the publisher: a commit touched a sandbox, or the lease was renewed anew.
    pub(crate) poke: Notify,
    /// The MTU of the interface holding the tunnel address.
    pub underlay_mtu: u32,
    pub vxlan_port: u16,
    pub started: String,
}

impl Overlay {
    /// An overlay's MTU on this host: the one it was created with, else the underlay's
    /// less the encapsulation.
    pub fn mtu_for(&self, asked: Option<u32>) -> u32 {
        asked.unwrap_or(self.underlay_mtu.saturating_sub(VXLAN_OVERHEAD))
    }

    pub fn node(&self) -> &str {
        &self.cluster.node
    }

    /// The view as it is now, for work that outlives the lock (a call into etcd): a
    /// reference count, not a copy.
    pub fn view(&self) -> Arc<View> {
        self.view.lock().expect("view").clone()
    }

    /// Read the view in place: no copy of a thousand records for a question about a few.
    /// `f` must not wait on anything (the lock is a plain mutex the watch also takes).
    pub fn with_view<T>(&self, f: impl FnOnce(&View) -> T) -> T {
        f(&self.view.lock().expect("view"))
    }
}

/// Run a cluster call (synchronous: etcd round trips) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    cluster: &Arc<Cluster>,
    f: impl FnOnce(&Cluster) -> Result<T, ClusterError> + Send + 'static,
) -> Result<T, ClusterError> {
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || f(&c))
        .await
        .unwrap_or_else(|e| {
            Err(ClusterError::Contention(if e.is_panic() {
                "a panic"
            } else {
                "a cancelled call"
            }))
        })
}

/// How long the agent waits before trying etcd again.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// `--cluster-store`, `--cluster-advertise` and friends.
#[derive(Debug, Clone)]
pub struct ClusterConf {
    pub store: EtcdConfig,
    /// An interface name or an IPv4 address (a `:PORT` suffix, as dockerd took, is ignored).
    pub advertise: String,
    pub node: String,
    pub ttl: Duration,
    /// How long a dead host's blocks stay its own after its lease expired.
    pub grace: Duration,
    pub vxlan_port: u16,
}
