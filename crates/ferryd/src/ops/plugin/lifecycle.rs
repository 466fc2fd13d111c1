//! The plugin's records at ferryd's start (reconcile) and at `ferry system cleanup`.

use ferry_core::docker::plugin::EndpointRef;
use ferry_core::remote::DOCKER_IPAM_OWNER;
use ferry_kernel::KernelOps;

use crate::error::Result;
use crate::ops::Daemon;
use crate::state::Key;

impl<K: KernelOps> Daemon<K> {
    /// `ferry system cleanup`: drop everything the plugin holds for dockerd (its networks
    /// with their endpoints, links and bridges, then every IPAM pool), whatever Docker
    /// still believes. Errors come back together; every step runs.
    pub async fn plugin_forget_all(&self) -> Vec<String> {
        let mut errors = vec![];
        let nets: Vec<String> = self
            .state
            .lock()
            .await
            .plugin
            .networks
            .keys()
            .cloned()
            .collect();
        for id in nets {
            let r = EndpointRef {
                network_id: id.clone(),
                endpoint_id: String::new(),
            };
            if let Err(e) = self.plugin_delete_network(r).await {
                errors.push(format!("Docker network {id}: {e}"));
            }
        }
        let mut st = self.state.lock().await;
        if let Err(e) = self.release_overlay_holds(&mut st) {
            errors.push(e.to_string());
        }
        let mut keys: Vec<Key> = st
            .plugin
            .pools
            .keys()
            .cloned()
            .map(Key::PluginPool)
            .collect();
        keys.extend(st.plugin.endpoints.keys().cloned().map(Key::PluginEp));
        let staged = self.stage(&mut st, &keys, |st| {
            st.plugin.pools.clear();
            Ok(std::mem::take(&mut st.plugin.endpoints)
                .values()
                .flat_map(|e| e.links())
                .collect::<Vec<String>>())
        });
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                errors.push(e.to_string());
                return errors;
            }
        };
        // The links go even when the store refuses: ferryd is going away.
        let links = staged.plan.clone();
        if let Err(e) = self.commit_staged(&mut st, staged) {
            errors.push(e.to_string());
        }
        drop(st);
        for l in links {
            if let Err(e) = self.kernel.delete_link(&l).await {
                errors.push(e.to_string());
            }
        }
        errors
    }

    /// The addresses ferry's IPAM still holds for dockerd on overlays, which stay when
    /// Docker's networks go (a static `--ip` dockerd asked for and never used).
    fn release_overlay_holds(&self, st: &mut crate::state::State) -> Result<()> {
        let held: Vec<(String, Vec<std::net::IpAddr>)> = st
            .networks
            .values()
            .filter(|n| n.overlay().is_some())
            .filter_map(|n| {
                let ips: Vec<_> = n
                    .pool
                    .as_ref()?
                    .allocations()
                    .iter()
                    .filter(|(_, o)| o.as_str() == DOCKER_IPAM_OWNER)
                    .map(|(ip, _)| *ip)
                    .collect();
                (!ips.is_empty()).then(|| (n.id.clone(), ips))
            })
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        let keys: Vec<Key> = held.iter().map(|(id, _)| Key::Net(id.clone())).collect();
        let staged = self.stage(st, &keys, |st| {
            for (id, ips) in &held {
                if let Some(pool) = st.networks.get_mut(id).and_then(|n| n.pool.as_mut()) {
                    ips.iter().for_each(|ip| pool.release(*ip));
                }
            }
            Ok(())
        })?;
        self.commit_staged(st, staged).map(drop)
    }

    /// At start. A veth pair dies with either end's namespace, so a joined Docker
    /// endpoint whose host link is gone lost its container while ferryd was away, and
    /// Docker, which gives up on an unreachable plugin after 15 s, will not say so: forget
    /// the endpoint and free its address.
    pub async fn plugin_reconcile(&self) -> Result<()> {
        // Under the lock: a Join finishing between the listing and the check would
        // otherwise look like a lost link (`ferry system reconcile` runs while ferryd
        // serves).
        let mut st = self.state.lock().await;
        let links = self.kernel.link_names().await?;
        let gone: Vec<(String, String, std::net::IpAddr)> = st
            .plugin
            .endpoints
            .values()
            .filter(|e| e.joined)
            .filter_map(|e| {
                let l = e.endpoint.live.as_ref()?;
                let host_if = l.host_if.as_ref()?.to_string();
                (!links.contains(&host_if))
                    .then(|| (e.id.clone(), e.endpoint.network_id.clone(), l.ip))
            })
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let keys: Vec<Key> = gone
            .iter()
            .flat_map(|(id, nid, _)| [Key::PluginEp(id.clone()), Key::Net(nid.clone())])
            .collect();
        let staged = self.stage(&mut st, &keys, |st| {
            for (id, nid, ip) in gone {
                tracing::info!("reconcile: Docker endpoint {id} lost its link while ferryd was away; forgetting it");
                st.plugin.endpoints.remove(&id);
                let pool = st.networks.get_mut(&nid).and_then(|n| n.pool.as_mut());
                if let Some(pool) = pool.filter(|p| p.owner(ip) == Some(id.as_str())) {
                    pool.release(ip);
                }
            }
            Ok(())
        })?;
        self.commit_staged(&mut st, staged).map(drop)
    }
}
