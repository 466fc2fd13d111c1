//! The daemon keeps each local overlay copy's routes, neighbour and FDB entries as the
//! view says (see crate::overlay::entries for what is programmed and why), and the DNS
//! table's remote names.

use std::net::Ipv4Addr;

use ferry_core::model::tunnel_mac;
use ferry_kernel::KernelOps;
use ferry_overlay::Tunnel;
use ipnet::Ipv4Net;

use crate::ops::Daemon;
use crate::overlay::entries::{desired, remote_records, Programmed};
use crate::overlay::Overlay;

/// The shortcut's tunnels: each ICC-on local copy's device, bridge and remote routes.
fn shortcut_tunnels(
    st: &crate::state::State,
    want: &std::collections::BTreeMap<String, (String, Tunnel)>,
    me: Ipv4Addr,
) -> Vec<ferry_core::shortcut::Tunnel> {
    st.networks
        .values()
        .filter_map(|n| {
            let (_, t) = want.get(n.overlay()?.vxlan.as_str())?;
            ferry_core::shortcut::tunnel(n, me, &t.remote, &t.local)
        })
        .collect()
}

impl<K: KernelOps> Daemon<K> {
    /// Make every local copy's routes and entries match the view, and the DNS table its
    /// names.
    pub(crate) async fn sync_entries(&self, ov: &Overlay) {
        let (want, names, tunnels) = {
            let st = self.state.lock().await;
            ov.with_view(|view| {
                let want = desired(&st, view, ov.node());
                let tunnels = shortcut_tunnels(&st, &want, ov.cluster.addr);
                (want, remote_records(&st, view, ov.node()), tunnels)
            })
        };
        self.dns.set_remote(names);
        let mut programmed = ov.programmed.lock().await;
        for (dev, (bridge, tunnel)) in &want {
            if !programmed.contains_key(dev) {
                let held = self.held_in_kernel(dev, bridge).await;
                programmed.insert(dev.clone(), held);
            }
            let had = programmed.get_mut(dev).expect("inserted above");
            self.sync_hosts(dev, had, &tunnel.hosts()).await;
            self.sync_routes(dev, had, tunnel).await;
        }
        programmed.retain(|dev, _| want.contains_key(dev));
        drop(programmed);
        // The routes are in: the shortcut takes the same blocks to the same hosts.
        self.shortcut.tunnels(&self.kernel, tunnels);
    }

    /// The periodic check: a device whose routes or host entries the kernel no longer
    /// holds as programmed (set down and up by hand, which flushes them, or an entry
    /// deleted) is forgotten and programmed again from the view.
    pub(crate) async fn check_entries(&self, ov: &Overlay) {
        let stale: Vec<String> = {
            let mut programmed = ov.programmed.lock().await;
            let mut stale = vec![];
            for (dev, had) in programmed.iter() {
                let held = self.held_in_kernel(dev, &had.bridge).await;
                let same = held.remote.keys().eq(had.remote.keys())
                    && held.local == had.local
                    && held.hosts == had.hosts;
                if !same {
                    stale.push(dev.clone());
                }
            }
            for dev in &stale {
                programmed.remove(dev);
            }
            stale
        };
        if !stale.is_empty() {
            tracing::warn!(
                "overlay: {} lost routes or entries; programming them again",
                stale.join(", ")
            );
            self.sync_entries(ov).await;
        }
    }

    /// First sight of a device in this ferryd: what the kernel holds may be a previous
    /// run's, made stale while no ferryd watched. Routes are taken as through an unknown
    /// host, so each is either replaced or removed.
    async fn held_in_kernel(&self, dev: &str, bridge: &str) -> Programmed {
        let or_none = |r: Result<Vec<Ipv4Net>, _>| r.unwrap_or_default().into_iter();
        Programmed {
            bridge: bridge.to_string(),
            remote: or_none(self.kernel.tunnel_routes(dev).await)
                .map(|r| (r, Ipv4Addr::UNSPECIFIED))
                .collect(),
            local: or_none(self.kernel.tunnel_routes(bridge).await)
                .filter(|r| r.prefix_len() == 32)
                .collect(),
            hosts: self
                .kernel
                .overlay_entries(dev)
                .await
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }

    /// One neighbour and FDB entry per remote host the routes go through, added before
    /// the routes that need them; those of hosts no longer used, removed.
    async fn sync_hosts(
        &self,
        dev: &str,
        had: &mut Programmed,
        want: &std::collections::BTreeSet<Ipv4Addr>,
    ) {
        for vtep in want {
            let mac = tunnel_mac(*vtep);
            if had.hosts.get(vtep) == Some(&mac) {
                continue;
            }
            if let Some(old) = had.hosts.get(vtep).filter(|m| **m != mac) {
                let _ = self.kernel.overlay_entry_delete(dev, *old, *vtep).await;
            }
            match self
                .kernel
                .overlay_entry_replace(dev, mac, *vtep, *vtep)
                .await
            {
                Ok(()) => {
                    had.hosts.insert(*vtep, mac);
                }
                Err(e) => tracing::warn!("overlay: {e}"),
            }
        }
        let gone: Vec<(Ipv4Addr, [u8; 6])> = had
            .hosts
            .iter()
            .filter(|(v, _)| !want.contains(v))
            .map(|(v, m)| (*v, *m))
            .collect();
        for (vtep, mac) in gone {
            match self.kernel.overlay_entry_delete(dev, mac, vtep).await {
                Ok(()) => {
                    had.hosts.remove(&vtep);
                }
                Err(e) => tracing::warn!("overlay: {e}"),
            }
        }
    }

    /// The routes through the device and on the bridge: replaced where new or moved,
    /// removed where gone.
    async fn sync_routes(&self, dev: &str, had: &mut Programmed, want: &Tunnel) {
        for (dst, via) in &want.remote {
            if had.remote.get(dst) == Some(via) {
                continue;
            }
            match self
                .kernel
                .tunnel_route_replace(dev, *dst, Some(*via))
                .await
            {
                Ok(()) => {
                    had.remote.insert(*dst, *via);
                }
                Err(e) => tracing::warn!("overlay: {e}"),
            }
        }
        let gone: Vec<Ipv4Net> = had
            .remote
            .keys()
            .filter(|d| !want.remote.contains_key(d))
            .copied()
            .collect();
        for dst in gone {
            match self.kernel.tunnel_route_delete(dev, dst).await {
                Ok(()) => {
                    had.remote.remove(&dst);
                }
                Err(e) => tracing::warn!("overlay: {e}"),
            }
        }
        let new: Vec<Ipv4Net> = want.local.difference(&had.local).copied().collect();
        for dst in new {
            match self
                .kernel
                .tunnel_route_replace(&had.bridge, dst, None)
                .await
            {
                Ok(()) => {
                    had.local.insert(dst);
                }
                Err(e) => tracing::warn!("overlay: {e}"),
            }
        }
        let gone: Vec<Ipv4Net> = had.local.difference(&want.local).copied().collect();
        for dst in gone {
            match self.kernel.tunnel_route_delete(&had.bridge, dst).await {
                Ok(()) => {
                    had.local.remove(&dst);
                }
                Err(e) => tracing::warn!("overlay: {e}"),
            }
        }
    }
}
