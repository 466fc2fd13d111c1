//! Networks a plugin drives: `network create -d NAME` and `network rm`.
//!
//! ferry keeps the addressing (its own IPAM: pools, gateway, `--ip-range`, overlap
//! checks, all as for a bridge) and hands the plugin what dockerd hands it: the pool in
//! `IPv4Data`, the `-o` pairs under `com.docker.network.generic`. The state lock is held
//! across `CreateNetwork` (bounded by `--plugin-timeout`), so no other create can take
//! the same name or subnet meanwhile; if the store then refuses the network, the plugin
//! is told `DeleteNetwork`, as dockerd does after a failed create.

use std::collections::BTreeMap;

use ferry_core::docker::network::NetworkCreateRequest;
use ferry_core::docker::plugin::{OPT_ENABLE_IPV6, OPT_GENERIC, OPT_INTERNAL};
use ferry_core::model::{Driver, Network, NetworkKind, RemoteConf};
use ferry_kernel::KernelOps;
use serde_json::{json, Value};

use crate::error::Result;
use crate::ops::Daemon;
use crate::state::Key;

/// The plugin a create request names: any driver ferry does not have itself.
pub fn remote_driver(req: &NetworkCreateRequest) -> Option<&str> {
    req.driver.as_deref().filter(|d| Driver::parse(d).is_none())
}

/// `NetworkDriver.CreateNetwork`'s body for `net`, as dockerd sends it (`P:p24`): the
/// address space (`LocalDefault` for ferry's IPAM, an IPAM plugin's own otherwise), the
/// pool, the gateway with its prefix.
pub fn create_body(net: &Network, address_space: &str) -> Value {
    let mut options = serde_json::Map::new();
    let generic: BTreeMap<&String, &String> = net.options.iter().collect();
    options.insert(OPT_GENERIC.into(), json!(generic));
    options.insert(OPT_ENABLE_IPV6.into(), json!(false));
    if net.internal {
        options.insert(OPT_INTERNAL.into(), json!(true));
    }
    let v4: Vec<Value> = net
        .pool
        .iter()
        .map(|p| {
            let mut d = json!({
                "AddressSpace": address_space,
                "Pool": p.subnet.to_string(),
                "Gateway": format!("{}/{}", p.gateway, p.subnet.prefix_len()),
            });
            if !p.aux.is_empty() {
                let aux: BTreeMap<&String, String> = p
                    .aux
                    .iter()
                    .map(|(k, ip)| (k, format!("{ip}/{}", p.subnet.prefix_len())))
                    .collect();
                d["AuxAddresses"] = json!(aux);
            }
            d
        })
        .collect();
    json!({
        "NetworkID": net.id,
        "Options": options,
        "IPv4Data": v4,
        "IPv6Data": [],
    })
}

impl<K: KernelOps> Daemon<K> {
    /// `network create -d NAME` for a plugin's driver NAME.
    pub(crate) async fn create_remote_network(&self, req: NetworkCreateRequest) -> Result<String> {
        let driver = remote_driver(&req).unwrap_or_default().to_string();
        let conf = &self.cfg.plughost;
        let plugin = self.plughost.get(conf, &driver, "NetworkDriver").await?;
        let mut st = self.state.lock().await;
        // Validated as a bridge without options (the options are the plugin's), then
        // made the plugin's: no bridge of ferry's.
        let as_bridge = NetworkCreateRequest {
            driver: Some("bridge".into()),
            options: None,
            ..req.clone()
        };
        let made = self.validate_create(&st, &as_bridge).await?;
        let mut net = made.network;
        net.kind = NetworkKind::Remote(RemoteConf {
            driver: driver.clone(),
        });
        net.options = req.options.clone().unwrap_or_default();
        // plughost ipam: a pool an IPAM plugin gave for this create.
        let space = match self.plughost.take_pending_ipam(&net.name) {
            Some((lease, space)) => {
                net.ipam_plugin = Some(lease);
                space
            }
            None => "LocalDefault".to_string(),
        };
        let body = create_body(&net, &space);
        self.plughost
            .call(conf, &plugin, "NetworkDriver.CreateNetwork", Some(&body))
            .await?;
        let id = net.id.clone();
        let keys = [Key::Net(id.clone()), Key::Meta];
        let staged = self.stage(&mut st, &keys, |st| {
            st.networks.insert(id.clone(), net);
            st.meta.pool_cursor = made.pool_cursor;
            Ok(())
        })?;
        if let Err(e) = self.commit_staged(&mut st, staged) {
            let undo = json!({"NetworkID": id});
            if let Err(u) = self
                .plughost
                .call_once(conf, &plugin, "NetworkDriver.DeleteNetwork", Some(&undo))
                .await
            {
                tracing::warn!("create network: undo: {u}");
            }
            return Err(e);
        }
        Ok(id)
    }

    /// A plugin's network left the store: tell the plugin. Like dockerd, a failure is
    /// logged and the removal stands: a driver cannot veto it.
    pub(crate) async fn remote_network_removed(&self, net: &Network) {
        // The IPAM plugin first, as dockerd (`P:p22`).
        if let Some(ipam) = &net.ipam_plugin {
            self.release_pool(ipam, net.pool.as_ref().map(|p| p.gateway))
                .await;
        }
        let Some(r) = net.remote() else {
            return;
        };
        let conf = &self.cfg.plughost;
        let body = json!({"NetworkID": net.id});
        let res = match self
            .plughost
            .get_now(conf, &r.driver, "NetworkDriver")
            .await
        {
            Ok(p) => {
                self.plughost
                    .call_once(conf, &p, "NetworkDriver.DeleteNetwork", Some(&body))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            tracing::warn!(
                "remove network {}: {e}; the plugin may hold what it made",
                net.name
            );
        }
    }
}
