//! The ledger of addresses IPAM plugins granted ferry (see `crate::ops::plughost::ipam`):
//! one file per lease under the exec root, swept against ferry's pools on every commit,
//! and a queue of `ReleaseAddress` calls sent by a task of ferryd's.

use std::net::Ipv4Addr;

use ferry_core::model::RemoteIpam;
use serde::{Deserialize, Serialize};

use super::{Conf, PlugHost};
use crate::state::{Key, State};

/// An address the plugin granted for a sandbox on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub driver: String,
    pub pool_id: String,
    pub network_id: String,
    pub ip: Ipv4Addr,
    pub owner: String,
    /// The MAC the plugin was told (`RequiresMACAddress`), which the endpoint takes.
    #[serde(default)]
    pub mac: Option<[u8; 6]>,
}

fn lease_path(conf: &Conf, network_id: &str, ip: Ipv4Addr) -> std::path::PathBuf {
    conf.records.join("leases").join(format!(
        "{}-{ip}.json",
        &network_id[..12.min(network_id.len())]
    ))
}

impl PlugHost {
    /// The IPAM pool a create in progress got for the network called `name`.
    pub fn take_pending_ipam(&self, name: &str) -> Option<(RemoteIpam, String)> {
        self.pending_ipam.lock().expect("pending lock").remove(name)
    }

    /// The MAC an IPAM plugin was told for the address `ip` of sandbox `owner`, if any.
    pub fn mac_of(&self, owner: &str, ip: std::net::IpAddr) -> Option<[u8; 6]> {
        let ip = ferry_core::family::v4(ip)?;
        let leases = self.leases.lock().expect("leases lock");
        leases
            .iter()
            .find(|l| l.owner == owner && l.ip == ip)
            .and_then(|l| l.mac)
    }

    pub(crate) fn leases_of(&self, pred: impl Fn(&Lease) -> bool) -> Vec<Lease> {
        self.leases
            .lock()
            .expect("leases lock")
            .iter()
            .filter(|l| pred(l))
            .cloned()
            .collect()
    }

    /// Load the leases a former ferryd recorded.
    pub fn load_leases(&self, conf: &Conf) {
        let dir = conf.records.join("leases");
        let found: Vec<Lease> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        self.leases.lock().expect("leases lock").extend(found);
    }

    pub(crate) fn record(&self, conf: &Conf, l: Lease) -> std::io::Result<()> {
        let p = lease_path(conf, &l.network_id, l.ip);
        std::fs::create_dir_all(p.parent().expect("a parent"))?;
        std::fs::write(&p, serde_json::to_vec(&l).expect("a lease serialises"))?;
        self.leases.lock().expect("leases lock").push(l);
        Ok(())
    }

    /// The next leases to release, once [`PlugHost::sweep`] queued some.
    pub(crate) async fn next_releases(&self) -> Vec<Lease> {
        self.released.notified().await;
        std::mem::take(&mut *self.releases.lock().expect("release queue"))
    }

    /// The leases on networks in `keys` that ferry's pool no longer holds for their
    /// sandbox leave the ledger and go to the release queue (sent by `crate::ops::plughost::release_leases`). Called with
    /// every commit, under the state lock.
    pub fn sweep(&self, conf: &Conf, st: &State, keys: &[Key]) {
        let nets: Vec<&String> = keys
            .iter()
            .filter_map(|k| match k {
                Key::Net(id) => Some(id),
                _ => None,
            })
            .collect();
        if nets.is_empty() {
            return;
        }
        let held = |l: &Lease| {
            st.networks
                .get(&l.network_id)
                .and_then(|n| n.pool.as_ref())
                .is_some_and(|p| p.owner(l.ip.into()) == Some(l.owner.as_str()))
        };
        let mut leases = self.leases.lock().expect("leases lock");
        let (gone, kept): (Vec<Lease>, Vec<Lease>) = leases
            .drain(..)
            .partition(|l| nets.contains(&&l.network_id) && !held(l));
        *leases = kept;
        drop(leases);
        if gone.is_empty() {
            return;
        }
        for l in &gone {
            let _ = std::fs::remove_file(lease_path(conf, &l.network_id, l.ip));
        }
        self.releases.lock().expect("release queue").extend(gone);
        self.released.notify_one();
    }
}
