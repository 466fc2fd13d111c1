//! Remote IPAM (`--ipam-driver NAME`): a plugin hands out the pool and the addresses;
//! ferry's own pool mirrors them, so everything downstream (bridges, the firewall, DNS,
//! inspect, a plugin network driver's `IPv4Data`) reads one truth.
//!
//! - **Create**: `RequestPool` (the `--subnet`/`--ip-range`, "" to let the plugin pick)
//!   → the gateway from the pool's data or `RequestAddress` with
//!   `RequestAddressType: com.docker.network.gateway` → the network is made as with
//!   ferry's IPAM on that subnet and gateway; if that fails, `ReleaseAddress` (gateway)
//!   and `ReleasePool`. `network rm`: `ReleaseAddress` (gateway), `ReleasePool`, before
//!   the network driver hears of it, as dockerd.
//! - **Addresses** are leased before a start or a connect plans anything
//!   ([`Daemon::lease_addresses`], outside the state lock): `RequestAddress` (the
//!   `--ip` or "") and the answer held in ferry's pool for the sandbox; planning then uses
//!   that address. A lease is released (`ReleaseAddress`, bare IP) when ferry's pool no
//!   longer holds it for its sandbox: [`PlugHost::sweep`] compares on every commit of
//!   the network, so every path that frees an address (stop, rm, disconnect, a start
//!   or connect undone) releases it at the plugin too. Leases are files under the exec
//!   root, so a restarted ferryd still releases what it was granted.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferry_core::docker::network::{IpamConfigReq, IpamReq, NetworkCreateRequest};
use ferry_core::docker::plugin::{OPT_REQUEST_TYPE, REQUEST_GATEWAY};
use ferry_core::model::{mac_string, RemoteIpam};
use ferry_core::wiring::AttachSpec;
use ferry_core::CoreError;
use ferry_kernel::KernelOps;
use ipnet::Ipv4Net;
use serde_json::{json, Value};

use crate::error::Result;
use crate::ops::Daemon;
use crate::plughost::leases::Lease;
use crate::plughost::{Plugin, PluginError};
use crate::state::{Desired, Key, State};

/// The IPAM plugin a create request names, if not ferry's own.
pub fn remote_ipam(req: &NetworkCreateRequest) -> Option<&str> {
    req.ipam
        .as_ref()
        .and_then(|i| i.driver.as_deref())
        .filter(|d| !d.is_empty() && *d != "default")
}

fn garbage(p: &Plugin, call: &str, why: String) -> PluginError {
    PluginError::Garbage {
        plugin: p.found.name.clone(),
        call: call.into(),
        why,
    }
}

/// "10.1.2.3/24" → its address and the prefix.
fn cidr(p: &Plugin, call: &str, s: &str) -> std::result::Result<Ipv4Net, PluginError> {
    s.parse::<Ipv4Net>().map_err(|_| {
        garbage(
            p,
            call,
            format!("{s:?} is not an IPv4 address with a prefix"),
        )
    })
}

impl<K: KernelOps> Daemon<K> {
    async fn ipam(&self, driver: &str) -> Result<std::sync::Arc<Plugin>> {
        Ok(self
            .plughost
            .get(&self.cfg.plughost, driver, "IpamDriver")
            .await?)
    }

    async fn ipam_call(&self, p: &Plugin, method: &str, body: Value) -> Result<Value> {
        Ok(self
            .plughost
            .call(&self.cfg.plughost, p, method, Some(&body))
            .await?)
    }

    /// `ReleaseAddress` (bare IP); a failure is logged: the address is ferry's no more.
    pub(crate) async fn release_address(&self, driver: &str, pool_id: &str, ip: IpAddr) {
        let body = json!({"PoolID": pool_id, "Address": ip.to_string()});
        let res = self
            .ipam_once(driver, "IpamDriver.ReleaseAddress", &body)
            .await;
        if let Err(e) = res {
            tracing::warn!("release {ip} to IPAM plugin {driver}: {e}");
        }
    }

    /// One call to an IPAM plugin already activated, not retried (a release).
    async fn ipam_once(
        &self,
        driver: &str,
        method: &str,
        body: &Value,
    ) -> std::result::Result<(), PluginError> {
        let conf = &self.cfg.plughost;
        let p = self.plughost.get_now(conf, driver, "IpamDriver").await?;
        self.plughost
            .call_once(conf, &p, method, Some(body))
            .await
            .map(|_| ())
    }

    /// `ReleaseAddress` of the gateway (if it was requested) and `ReleasePool`.
    pub(crate) async fn release_pool(&self, ipam: &RemoteIpam, gateway: Option<IpAddr>) {
        if let (true, Some(gw)) = (ipam.gateway_requested, gateway) {
            self.release_address(&ipam.driver, &ipam.pool_id, gw).await;
        }
        let body = json!({"PoolID": ipam.pool_id});
        let res = self
            .ipam_once(&ipam.driver, "IpamDriver.ReleasePool", &body)
            .await;
        if let Err(e) = res {
            tracing::warn!(
                "release pool {} to IPAM plugin {}: {e}",
                ipam.pool_id,
                ipam.driver
            );
        }
    }

    /// The pool's gateway: the one its data names, else one asked for by
    /// `RequestAddress` (the `--gateway` given, or the plugin's choice).
    async fn pool_gateway(
        &self,
        p: &Plugin,
        pool: &Value,
        pool_id: &str,
        asked: Option<&str>,
    ) -> Result<std::net::Ipv4Addr> {
        if let Some(g) = pool["Data"][REQUEST_GATEWAY].as_str() {
            return Ok(cidr(p, "IpamDriver.RequestPool", g)?.addr());
        }
        let v = self
            .ipam_call(
                p,
                "IpamDriver.RequestAddress",
                json!({
                    "PoolID": pool_id,
                    "Address": asked.unwrap_or_default(),
                    "Options": {OPT_REQUEST_TYPE: REQUEST_GATEWAY},
                }),
            )
            .await?;
        let a = v["Address"].as_str().unwrap_or_default();
        Ok(cidr(p, "IpamDriver.RequestAddress", a)?.addr())
    }

    /// `network create --ipam-driver NAME`: the plugin's pool, then the network on it.
    pub(crate) async fn create_with_remote_ipam(
        &self,
        req: NetworkCreateRequest,
    ) -> Result<String> {
        let driver = remote_ipam(&req).unwrap_or_default().to_string();
        let ipam_req = req.ipam.clone().unwrap_or_default();
        let cfg = one_config(&ipam_req, &driver)?;
        let p = self.ipam(&driver).await?;
        let pool = self
            .ipam_call(
                &p,
                "IpamDriver.RequestPool",
                json!({
                    "AddressSpace": p.address_space,
                    "Pool": cfg.subnet.clone().unwrap_or_default(),
                    "SubPool": cfg.ip_range.clone().unwrap_or_default(),
                    "Options": ipam_req.options.clone().unwrap_or_default(),
                    "V6": false,
                }),
            )
            .await?;
        let pool_id = pool["PoolID"].as_str().unwrap_or_default().to_string();
        let subnet = cidr(
            &p,
            "IpamDriver.RequestPool",
            pool["Pool"].as_str().unwrap_or_default(),
        )?;
        let mut lease = RemoteIpam {
            driver: driver.clone(),
            pool_id,
            gateway_requested: false,
        };
        let gateway = self
            .pool_gateway(&p, &pool, &lease.pool_id, cfg.gateway.as_deref())
            .await;
        let gateway = match gateway {
            Ok(g) => g,
            Err(e) => {
                self.release_pool(&lease, None).await;
                return Err(e);
            }
        };
        lease.gateway_requested = pool["Data"][REQUEST_GATEWAY].is_null();
        let mirrored = NetworkCreateRequest {
            ipam: Some(IpamReq {
                driver: None,
                options: ipam_req.options.clone(),
                config: Some(vec![IpamConfigReq {
                    subnet: Some(subnet.trunc().to_string()),
                    ip_range: cfg.ip_range.clone(),
                    gateway: Some(gateway.to_string()),
                    auxiliary_addresses: None,
                }]),
            }),
            ..req
        };
        let name = mirrored.name.clone();
        self.plughost
            .pending_ipam
            .lock()
            .expect("pending lock")
            .insert(name.clone(), (lease.clone(), p.address_space.clone()));
        let made = Box::pin(self.create_network(mirrored)).await;
        self.plughost.take_pending_ipam(&name);
        let made = match made {
            Ok(id) => self.mark_ipam(&id, lease.clone()).await.map(|_| id),
            Err(e) => Err(e),
        };
        if made.is_err() {
            self.release_pool(&lease, Some(gateway.into())).await;
        }
        made
    }

    async fn mark_ipam(&self, id: &str, lease: RemoteIpam) -> Result<()> {
        let mut st = self.state.lock().await;
        let keys = [Key::Net(id.to_string())];
        let staged = self.stage(&mut st, &keys, |st| {
            // A plugin network took it at create: nothing to mark.
            if let Some(n) = st.networks.get_mut(id).filter(|n| n.ipam_plugin.is_none()) {
                n.ipam_plugin = Some(lease);
            }
            Ok(())
        })?;
        self.commit_staged(&mut st, staged).map(drop)
    }

    /// Before a start (`network: None`) or a connect to `network`: lease from the IPAM
    /// plugin an address for each of the sandbox's networks that has one, that the
    /// sandbox needs and does not hold yet, and hold it in ferry's pool.
    pub(crate) async fn lease_addresses(&self, sandbox: &str, network: Option<&str>) -> Result<()> {
        let wanted = {
            let st = self.state.lock().await;
            let Ok(sb_id) = st.sandbox_id(sandbox) else {
                return Ok(()); // the operation itself says so
            };
            wanted_leases(&st, &sb_id, network)
        };
        for (sb_id, net_id, ipam, static_ip) in wanted {
            // Leased before (a static address kept across a stop): nothing to ask.
            if !self
                .plughost
                .leases_of(|l| l.network_id == net_id && l.owner == sb_id)
                .is_empty()
            {
                continue;
            }
            let p = self.ipam(&ipam.driver).await?;
            // dockerd makes the endpoint's MAC first for a plugin that requires it, and
            // tells it (`P:p02`, `P:p35`).
            let mac = p.requires_mac.then(random_mac);
            let options = match mac {
                Some(m) => json!({ OPT_MAC: mac_string(&m) }),
                None => json!({}),
            };
            let v = self
                .ipam_call(
                    &p,
                    "IpamDriver.RequestAddress",
                    json!({
                        "PoolID": ipam.pool_id,
                        "Address": static_ip.map(|i| i.to_string()).unwrap_or_default(),
                        "Options": options,
                    }),
                )
                .await?;
            let a = v["Address"].as_str().unwrap_or_default();
            let ip = cidr(&p, "IpamDriver.RequestAddress", a)?.addr();
            let lease = Lease {
                driver: ipam.driver.clone(),
                pool_id: ipam.pool_id.clone(),
                network_id: net_id.clone(),
                ip,
                owner: sb_id.clone(),
                mac,
            };
            if let Err(e) = self.hold_lease(&lease).await {
                self.release_address(&lease.driver, &lease.pool_id, ip.into())
                    .await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn hold_lease(&self, l: &Lease) -> Result<()> {
        let mut st = self.state.lock().await;
        let keys = [Key::Net(l.network_id.clone())];
        let ip = IpAddr::from(l.ip);
        let staged = self.stage(&mut st, &keys, |st| {
            let pool = st
                .networks
                .get_mut(&l.network_id)
                .and_then(|n| n.pool.as_mut())
                .ok_or_else(|| CoreError::NoSuchNetwork(l.network_id.clone()))?;
            match pool.owner(ip) {
                Some(o) if o == l.owner => Ok(()),
                Some(_) => Err(CoreError::AddressInUse(ip)),
                None => {
                    pool.hold(ip, l.owner.clone());
                    Ok(())
                }
            }
        })?;
        if let Err(e) = self.plughost.record(&self.cfg.plughost, l.clone()) {
            let e = crate::error::Error::Other(format!("record lease {}: {e}", l.ip));
            staged.abandon(&mut st);
            return Err(e);
        }
        self.commit_staged(&mut st, staged).map(drop)
    }
}

/// (sandbox, network, IPAM pool, static address) for each network the sandbox is about
/// to join whose addresses come from an IPAM plugin.
fn wanted_leases(
    st: &State,
    sb_id: &str,
    network: Option<&str>,
) -> Vec<(String, String, RemoteIpam, Option<IpAddr>)> {
    let Some(sb) = st.sandboxes.get(sb_id) else {
        return vec![];
    };
    let nets: BTreeMap<String, Option<IpAddr>> = match network {
        // connect: a running sandbox, not on it yet.
        Some(r) => match st.network_id(r) {
            Ok(id) if sb.is_running() && sb.endpoint(&id).is_none() => [(id, None)].into(),
            _ => BTreeMap::new(),
        },
        // start: every endpoint not live yet.
        None if !sb.is_running() => sb
            .endpoints
            .iter()
            .filter(|e| e.live.is_none())
            .map(|e| (e.network_id.clone(), e.static_ip))
            .collect(),
        None => BTreeMap::new(),
    };
    nets.into_iter()
        .filter_map(|(net_id, static_ip)| {
            let ipam = st.networks.get(&net_id)?.ipam_plugin.clone()?;
            Some((sb_id.to_string(), net_id, ipam, static_ip))
        })
        .collect()
}

/// The one IPAM config a network with an IPAM plugin takes (no `--aux-address` yet).
fn one_config(ipam: &IpamReq, driver: &str) -> Result<IpamConfigReq> {
    let configs = ipam.config.clone().unwrap_or_default();
    if configs.len() > 1 {
        return Err(CoreError::Invalid("ferry supports one IPv4 subnet per network".into()).into());
    }
    let cfg = configs.into_iter().next().unwrap_or_default();
    if cfg
        .auxiliary_addresses
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        return Err(CoreError::Invalid(format!(
            "--aux-address with IPAM plugin {driver} is not supported by ferryd yet"
        ))
        .into());
    }
    Ok(cfg)
}

/// The option that tells an IPAM plugin the endpoint's MAC.
const OPT_MAC: &str = "com.docker.network.endpoint.macaddress";

/// A MAC as dockerd makes one for an IPAM plugin that requires it: `02:42` and four
/// random bytes (the address is not known yet).
fn random_mac() -> [u8; 6] {
    let r: [u8; 4] = rand::random();
    [0x02, 0x42, r[0], r[1], r[2], r[3]]
}

impl<K: KernelOps> Daemon<K> {
    /// plughost hook for the planners' attach specs: an endpoint whose address an IPAM
    /// plugin granted for a MAC it was told takes that MAC, in the state and the kernel.
    pub(crate) fn lease_macs(&self, st: &mut Desired, sb_id: &str, specs: &mut [AttachSpec]) {
        for spec in specs {
            let ip = spec.addr.addr();
            let Some(mac) = self.plughost.mac_of(sb_id, ip) else {
                continue;
            };
            spec.mac = mac;
            let sb = st.sandboxes.get_mut(sb_id);
            let lives = sb.into_iter().flat_map(|s| s.endpoints.iter_mut());
            for l in lives.filter_map(|e| e.live.as_mut()).filter(|l| l.ip == ip) {
                l.mac = mac;
            }
        }
    }
}
