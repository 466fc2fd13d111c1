//! Endpoints on a plugin's network: dockerd's half of `Join` and `Leave`.
//!
//! Attach (a sandbox starts, or `network connect`): `CreateEndpoint` with ferry's
//! address → `Join` → ferry takes the plugin's `SrcName` link into the sandbox as
//! `DstPrefix`+index with the address, the MAC the plugin chose (if any), the plugin's
//! gateway as default route (on the sandbox's gateway endpoint only) and its
//! `StaticRoutes` → `ProgramExternalConnectivity` (gateway endpoint only) →
//! `EndpointOperInfo`. A failing step undoes the ones before it in reverse, as dockerd
//! does: `DeleteEndpoint` after a failed `Join`; `Leave`, `DeleteEndpoint` after a
//! failed move or `ProgramExternalConnectivity`.
//!
//! Detach (stop, `rm`, `disconnect`): `RevokeExternalConnectivity` (gateway endpoint)
//! → `Leave` → ferry moves the link back out under its `SrcName` → `DeleteEndpoint`
//! (the plugin deletes its link). Failures are logged and the detach stands.
//!
//! ferry's planning code gives a plugin's endpoint a [`LinkSpec::Plugin`] link (from its
//! network's `NetworkKind::Remote`);
//! what teardown needs (which plugin, the link's two names, whether it was the gateway
//! endpoint) is a small JSON record per endpoint under the exec root, so a ferryd
//! restarted in between still sends the right `Leave`. Without a gateway from `Join`
//! ferry adds no default route (dockerd would attach `docker_gwbridge`; ferry has none),
//! whatever `DisableGatewayService` says.

use std::path::PathBuf;

use ferry_core::docker::plugin::port_options;
use ferry_core::model::WayOut;
use ferry_core::ports::PortMapping;
use ferry_kernel::{AdoptSpec, AttachSpec, KernelError, KernelOps, LinkSpec};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::ops::Daemon;
use crate::plughost::answers::{dst_name, read_created, read_join, Joined};
use crate::plughost::{Conf, Plugin, PluginError};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    driver: String,
    network_id: String,
    endpoint_id: String,
    src_name: String,
    ifname: String,
    netns: PathBuf,
    gateway_endpoint: bool,
    /// The `Gateway` Join answered: the default route if the endpoint gets that role.
    #[serde(default)]
    gateway: Option<std::net::Ipv4Addr>,
    /// The ports published (`-p`) on the endpoint, sent with its calls as dockerd sends
    /// them (`P:p10`).
    #[serde(default)]
    ports: Vec<PortMapping>,
}

/// The live endpoint a plugin's link belongs to, as the state has it.
struct Owner {
    sandbox: String,
    driver: String,
    network_id: String,
    endpoint_id: String,
    gateway_endpoint: bool,
    ports: Vec<PortMapping>,
}

fn record_path(conf: &Conf, host_if: &str) -> PathBuf {
    conf.records.join(format!("{host_if}.json"))
}

/// Whether `host_if` names an endpoint joined through a plugin (it has no link of
/// that name: the plugin's link is in the sandbox).
pub fn is_plugin_link(conf: &Conf, host_if: &str) -> bool {
    record_path(conf, host_if).exists()
}

fn read_record(conf: &Conf, host_if: &str) -> Option<Record> {
    let text = std::fs::read(record_path(conf, host_if)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_record(conf: &Conf, host_if: &str, r: &Record) -> Result<()> {
    let io = |e: std::io::Error| Error::Other(format!("record plugin endpoint {host_if}: {e}"));
    std::fs::create_dir_all(&conf.records).map_err(io)?;
    let p = record_path(conf, host_if);
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(r).expect("a record serialises")).map_err(io)?;
    std::fs::rename(&tmp, &p).map_err(io)
}

impl<K: KernelOps> Daemon<K> {
    /// plughost hook for `KernelOps::attach`: a plugin's endpoint joins through the
    /// plugin, any other through ferry's veth.
    pub(crate) async fn attach_endpoint(&self, spec: &AttachSpec) -> Result<()> {
        if !matches!(spec.link, LinkSpec::Plugin(_)) {
            self.kernel.attach(spec).await?;
            // The veth exists now: its shortcut entry, noted at the commit, goes in.
            self.shortcut.retry(&self.kernel);
            return Ok(());
        }
        self.plugin_attach(spec).await
    }

    /// plughost hook for `KernelOps::delete_link` in teardown.
    pub(crate) async fn detach_link(&self, host_if: &str) -> std::result::Result<(), KernelError> {
        match read_record(&self.cfg.plughost, host_if) {
            Some(r) => {
                self.plugin_detach(host_if, r).await;
                Ok(())
            }
            None => self.kernel.delete_link(host_if).await,
        }
    }

    /// plughost hook for `KernelOps::set_default_route` when the default route moved to
    /// `host_if`: a plugin's endpoint takes the role as dockerd gives it (`P:p45`): the
    /// route via its Join gateway (none without one), then
    /// `ProgramExternalConnectivity`; any other endpoint, the route via `gw`.
    pub(crate) async fn default_route_moved(
        &self,
        netns: &std::path::Path,
        gw: std::net::IpAddr,
        host_if: Option<&str>,
    ) -> Result<()> {
        let conf = &self.cfg.plughost;
        let Some((host_if, mut r)) = host_if.and_then(|h| Some((h, read_record(conf, h)?))) else {
            return Ok(self.kernel.set_default_route(netns, gw).await?);
        };
        if let Some(g) = r.gateway {
            self.kernel.set_default_route(netns, g.into()).await?;
        }
        r.gateway_endpoint = true;
        write_record(conf, host_if, &r)?;
        let p = self.plughost.get(conf, &r.driver, "NetworkDriver").await?;
        self.program_external(&p, &r).await
    }

    /// `ProgramExternalConnectivity` for the endpoint that holds the sandbox's gateway
    /// role, with its published ports (`P:p10`); a driver without it is fine.
    async fn program_external(&self, p: &Plugin, r: &Record) -> Result<()> {
        let body = json!({
            "NetworkID": r.network_id, "EndpointID": r.endpoint_id, "Options": port_options(&r.ports),
        });
        let call = "NetworkDriver.ProgramExternalConnectivity";
        match self
            .plughost
            .call(&self.cfg.plughost, p, call, Some(&body))
            .await
        {
            Ok(_) | Err(PluginError::NotImplemented { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// plughost hook for a connect that moved the default route away from `host_if`
    /// (dockerd's order, by network name): a plugin's endpoint that held the role gets
    /// `RevokeExternalConnectivity` now, as from dockerd, not at its detach. Failures are
    /// logged: the route has moved already.
    pub(crate) async fn default_route_lost(&self, host_if: &str) {
        let conf = &self.cfg.plughost;
        let Some(mut r) = read_record(conf, host_if).filter(|r| r.gateway_endpoint) else {
            return;
        };
        r.gateway_endpoint = false;
        if let Err(e) = write_record(conf, host_if, &r) {
            tracing::warn!("plugin {}: {e}", r.driver);
        }
        let body = json!({"NetworkID": r.network_id, "EndpointID": r.endpoint_id});
        let revoked = match self
            .plughost
            .get_now(conf, &r.driver, "NetworkDriver")
            .await
        {
            Ok(p) => self
                .plughost
                .call_once(
                    conf,
                    &p,
                    "NetworkDriver.RevokeExternalConnectivity",
                    Some(&body),
                )
                .await
                .map(drop),
            Err(e) => Err(e),
        };
        match revoked {
            Ok(()) | Err(PluginError::NotImplemented { .. }) => {}
            Err(e) => tracing::warn!("default route moved: {e}"),
        }
    }

    /// The network, endpoint, role and ports of the live endpoint whose host link is
    /// `host_if`.
    async fn endpoint_of(&self, host_if: &str) -> Result<Owner> {
        let st = self.state.lock().await;
        for sb in st.sandboxes.values() {
            for e in &sb.endpoints {
                let Some(l) = e
                    .live
                    .as_ref()
                    .filter(|l| l.host_if.as_ref().is_some_and(|h| h.as_str() == host_if))
                else {
                    continue;
                };
                let driver = st
                    .networks
                    .get(&e.network_id)
                    .and_then(|n| n.remote())
                    .map(|r| r.driver.clone())
                    .ok_or_else(|| {
                        Error::Other(format!("endpoint {host_if}: not on a plugin's network"))
                    })?;
                return Ok(Owner {
                    sandbox: sb.id.clone(),
                    driver,
                    network_id: e.network_id.clone(),
                    endpoint_id: l.id.clone(),
                    gateway_endpoint: l.default_route,
                    ports: e.ports.clone(),
                });
            }
        }
        Err(Error::Other(format!(
            "endpoint {host_if}: gone while it was being attached"
        )))
    }

    async fn plugin_attach(&self, spec: &AttachSpec) -> Result<()> {
        let conf = &self.cfg.plughost;
        let Owner {
            sandbox,
            driver,
            network_id: net_id,
            endpoint_id: ep_id,
            gateway_endpoint: gw_ep,
            ports,
        } = self.endpoint_of(spec.host_if().unwrap_or_default()).await?;
        let options = port_options(&ports);
        // The MAC an IPAM plugin was told is the endpoint's, and dockerd says so (`P:p10`);
        // otherwise the driver may choose one (`P:p25`).
        let told_mac = self
            .plughost
            .mac_of(&sandbox, spec.addr.addr())
            .map(|m| ferry_core::model::mac_string(&m))
            .unwrap_or_default();
        let p = self.plughost.get(conf, &driver, "NetworkDriver").await?;
        let ep = json!({"NetworkID": net_id, "EndpointID": ep_id});
        let created = self
            .plughost
            .call(conf, &p, "NetworkDriver.CreateEndpoint", Some(&json!({
                "NetworkID": net_id,
                "EndpointID": ep_id,
                "Interface": {"Address": spec.addr.to_string(), "AddressIPv6": "", "MacAddress": told_mac},
                "Options": options,
            })))
            .await?;
        let join_body = json!({
            "NetworkID": net_id,
            "EndpointID": ep_id,
            "SandboxKey": spec.netns.display().to_string(),
            "Options": options,
        });
        let joined = async {
            let mac = read_created(&p, &created, spec.addr)?;
            let v = self
                .plughost
                .call(conf, &p, "NetworkDriver.Join", Some(&join_body))
                .await?;
            read_join(&p, &v).map(|j| (mac, j))
        };
        let (mac, joined) = match joined.await {
            Ok(j) => j,
            Err(e) => {
                self.undo_create(&p, &ep).await;
                return Err(e.into());
            }
        };
        let way_out = joined.way_out;
        let record = Record {
            driver,
            network_id: net_id,
            endpoint_id: ep_id,
            src_name: joined.src.clone(),
            ifname: dst_name(&joined.prefix, &spec.ifname),
            netns: spec.netns.clone(),
            // Only an endpoint with a gateway is the gateway endpoint (dockerd's
            // getGatewayEndpoint): without one, no ProgramExternalConnectivity (`P:p27`).
            gateway_endpoint: gw_ep && way_out.is_gateway(),
            gateway: joined.gateway,
            ports,
        };
        if let Err(e) = self.wire(&p, spec, joined, mac, &record).await {
            let undo = Record {
                gateway_endpoint: false,
                ..record
            };
            self.plugin_detach(spec.host_if().unwrap_or_default(), undo)
                .await;
            return Err(e);
        }
        let mac = mac.filter(|m| *m != spec.mac);
        if mac.is_some() || !way_out.is_gateway() {
            self.note_joined(spec.host_if().unwrap_or_default(), mac, way_out)
                .await;
        }
        self.ask_oper_info(&p, &ep, way_out).await;
        Ok(())
    }

    /// dockerd asks twice after a start (`P:p02`); the answer changes nothing. Not when
    /// the sandbox is to get the gateway bridge: dockerd then asks the bridge's driver
    /// for the endpoint's details, not the plugin (`P:p27`).
    async fn ask_oper_info(&self, p: &Plugin, ep: &Value, way_out: WayOut) {
        let asks = if way_out == WayOut::Lacks { 0 } else { 2 };
        for _ in 0..asks {
            let conf = &self.cfg.plughost;
            let call = "NetworkDriver.EndpointOperInfo";
            if let Err(e) = self.plughost.call(conf, p, call, Some(ep)).await {
                tracing::warn!("attach: {e}");
            }
        }
    }

    /// What `Join` decided goes into the state: the MAC the plugin chose (inspect shows
    /// it), and the endpoint's way out; without a gateway it gives up the default route
    /// (ferryd settles who takes it once the sandbox's endpoints are all wired).
    async fn note_joined(&self, host_if: &str, mac: Option<[u8; 6]>, way_out: WayOut) {
        let mut st = self.state.lock().await;
        let mut keys = vec![];
        for sb in st.sandboxes.values_mut() {
            for l in sb.endpoints.iter_mut().filter_map(|e| e.live.as_mut()) {
                if l.host_if.as_ref().is_some_and(|h| h.as_str() == host_if) {
                    if let Some(mac) = mac {
                        l.mac = mac;
                    }
                    l.way_out = way_out;
                    l.default_route &= way_out.is_gateway();
                    keys.push(crate::state::Key::Sbx(sb.id.clone()));
                }
            }
        }
        self.commit_or_log(&st, &keys, "recording a plugin's Join");
    }

    /// `DeleteEndpoint` after a failed `CreateEndpoint` answer or `Join`.
    async fn undo_create(&self, p: &Plugin, ep: &Value) {
        let conf = &self.cfg.plughost;
        let res = self
            .plughost
            .call_once(conf, p, "NetworkDriver.DeleteEndpoint", Some(ep))
            .await;
        if let Err(e) = res {
            tracing::warn!("attach: undo: {e}");
        }
    }

    /// dockerd's half of `Join`: the link into the sandbox, the record teardown needs,
    /// then `ProgramExternalConnectivity` on the gateway endpoint (404 is no error).
    async fn wire(
        &self,
        p: &Plugin,
        spec: &AttachSpec,
        joined: Joined,
        mac: Option<[u8; 6]>,
        r: &Record,
    ) -> Result<()> {
        let conf = &self.cfg.plughost;
        let adopt = AdoptSpec {
            netns: spec.netns.clone(),
            src: joined.src,
            ifname: r.ifname.clone(),
            // The plugin's MAC if it chose one, else ferry's (what inspect shows).
            mac: Some(mac.unwrap_or(spec.mac)),
            addr: spec.addr,
            default_via: joined
                .gateway
                .map(std::net::IpAddr::from)
                .filter(|_| r.gateway_endpoint),
            routes: joined.routes,
        };
        self.kernel.adopt_link(&adopt).await?;
        write_record(conf, spec.host_if().unwrap_or_default(), r)?;
        if !r.gateway_endpoint {
            return Ok(());
        }
        self.program_external(p, r).await
    }

    /// Undo an attach: every step runs; failures are logged (a driver cannot veto).
    async fn plugin_detach(&self, host_if: &str, r: Record) {
        let conf = &self.cfg.plughost;
        let ep = json!({"NetworkID": r.network_id, "EndpointID": r.endpoint_id});
        let mut errors: Vec<String> = vec![];
        let p = match self
            .plughost
            .get_now(conf, &r.driver, "NetworkDriver")
            .await
        {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        };
        let call = |method: &'static str| {
            let (p, ep) = (p.clone(), ep.clone());
            async move {
                let Some(p) = p else { return Ok(()) };
                match self.plughost.call_once(conf, &p, method, Some(&ep)).await {
                    Ok(_) => Ok(()),
                    Err(PluginError::NotImplemented { .. }) if method.contains("External") => {
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        if r.gateway_endpoint {
            errors.extend(call("NetworkDriver.RevokeExternalConnectivity").await.err());
        }
        errors.extend(call("NetworkDriver.Leave").await.err());
        if let Err(e) = self
            .kernel
            .hand_back_link(&r.netns, &r.ifname, &r.src_name)
            .await
        {
            errors.push(e.to_string());
        }
        errors.extend(call("NetworkDriver.DeleteEndpoint").await.err());
        let _ = std::fs::remove_file(record_path(conf, host_if));
        if !errors.is_empty() {
            tracing::warn!(
                "detach from plugin {} (endpoint {}): {}",
                r.driver,
                &r.endpoint_id[..12.min(r.endpoint_id.len())],
                errors.join("; ")
            );
        }
    }
}
