//! Sandbox operations: create (record intent, reserve static addresses), start
//! (namespace, files, endpoints, process), exit (tear the network down, keep static
//! reservations), remove.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::docker::container::ContainerCreateRequest;
use ferry_core::files::hosts_file;
use ferry_core::id::short;
use ferry_core::model::{DnsConf, Driver, Endpoint, Membership, NetworkMode, RunState, Sandbox};
use ferry_core::plan::attach::{plan_detach, unplan_attach};
use ferry_core::plan::sandbox as sandbox_plan;
use ferry_core::validate::valid_name;
use ferry_core::wiring::KernelUndo;
use ferry_core::CoreError;
use ferry_kernel::{AttachStep, KernelOps};

use super::supervise;
use super::{new_id, now, Daemon, FirewallFollows};
use crate::error::{Error, Result};
use crate::state::{Desired, Key, Snapshot, State};

/// A process exit, reported by the supervisor or by the CLI.
#[derive(Debug, Clone, Copy)]
pub struct ExitReport {
    pub pid: u32,
    pub code: i32,
}

fn endpoint_for(
    req: &ContainerCreateRequest,
    mode: &str,
    net_name: &str,
) -> (Option<String>, Vec<String>) {
    let eps = req
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref());
    let ep = eps.and_then(|m| m.get(mode).or_else(|| m.get(net_name)));
    let ip = ep
        .and_then(|e| e.ipam_config.as_ref())
        .and_then(|c| c.ipv4_address.clone())
        .filter(|s| !s.is_empty());
    (ip, ep.and_then(|e| e.aliases.clone()).unwrap_or_default())
}

fn hosts_of(sb: &Sandbox) -> String {
    let addrs: Vec<_> = sb
        .endpoints
        .iter()
        .filter_map(|e| e.live.as_ref())
        .map(|l| l.ip)
        .collect();
    hosts_file(&sb.hostname, &sb.name, &addrs)
}

/// What a start that failed after letting the state lock go needs to take itself back:
/// the sandbox as it was, and each of its networks with its IPAM cursor before.
struct StartUndo {
    sb_before: Snapshot,
    nets: Vec<(String, Option<std::net::IpAddr>)>,
}

/// What ends up in the sandbox's /etc/hostname, /etc/hosts and /etc/resolv.conf must be
/// what it says: a DNS server that is not an address, or a hostname, search domain or
/// option with whitespace in it (a newline would add lines of the caller's choosing to
/// those files) is refused at create, naming the field.
fn check_written_settings(
    req: &ContainerCreateRequest,
    hc: &ferry_core::docker::container::HostConfigReq,
) -> std::result::Result<(), CoreError> {
    let bad = |what: &'static str, value: &str, why: &str| CoreError::BadValue {
        what,
        value: format!("{value:?}"),
        why: why.into(),
    };
    if let Some(h) = req.hostname.as_deref().filter(|h| !h.is_empty()) {
        let ok = h.len() <= 64
            && !h.starts_with(['-', '.'])
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !ok {
            return Err(bad(
                "Hostname",
                h,
                "at most 64 letters, digits, '-', '.' or '_', not starting with '-' or '.'",
            ));
        }
    }
    for s in hc.dns.iter().flatten() {
        if s.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("Dns", s, "a DNS server is an IP address"));
        }
    }
    for (what, list) in [
        ("DnsSearch", &hc.dns_search),
        ("DnsOptions", &hc.dns_options),
    ] {
        for s in list.iter().flatten() {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(what, s, "empty, or holds whitespace"));
            }
        }
    }
    Ok(())
}

impl<K: KernelOps> Daemon<K> {
    pub fn sandbox_files(&self, id: &str) -> (PathBuf, PathBuf, PathBuf) {
        let d = self.cfg.sandbox_dir(id);
        (d.join("hosts"), d.join("resolv.conf"), d.join("hostname"))
    }

    /// Rewrite the sandbox's /etc/hosts and resolv.conf in place (they are bind-mounted
    /// by inode). A file that cannot be written is logged.
    pub(crate) async fn write_hosts(&self, st: &State, id: &str) {
        let Some(sb) = st.sandboxes.get(id).filter(|s| s.network_mode.own_netns()) else {
            return;
        };
        let (hosts, resolv, _) = self.sandbox_files(id);
        // Only a sandbox that has its files (a start wrote them) has them to rewrite.
        let files = [
            hosts.exists().then(|| (hosts, hosts_of(sb))),
            resolv
                .exists()
                .then(|| (resolv, self.dns.resolv_conf(&self.host_resolv, sb))),
        ];
        for (path, text) in files.into_iter().flatten() {
            if let Err(e) = self.kernel.write_sandbox_file(&path, &text).await {
                tracing::warn!("{e}");
            }
        }
    }

    /// A connect's names step: done by the commit (the sandbox's records in the
    /// responder's table, its hosts and resolv.conf rewritten by the executor); fails
    /// only when a test armed a fault at it, which takes the connect back.
    pub(crate) fn attach_names(&self) -> Result<()> {
        Ok(self.kernel.fault(AttachStep::Dns)?)
    }

    /// A start's files: its hostname, hosts and resolv.conf, through the kernel seam.
    pub(crate) async fn write_files(&self, sb: &Sandbox) -> Result<()> {
        let (hosts, resolv, hostname) = self.sandbox_files(&sb.id);
        let files = [
            (resolv, self.dns.resolv_conf(&self.host_resolv, sb)),
            (hostname, format!("{}\n", sb.hostname)),
            (hosts, hosts_of(sb)),
        ];
        for (path, text) in files {
            self.kernel.write_sandbox_file(&path, &text).await?;
        }
        Ok(())
    }

    /// A sandbox created on an overlay: the cluster's part first (see
    /// [`Daemon::prepare_overlay`]).
    async fn prepare_overlay_for(
        &self,
        name: Option<&str>,
        req: &ContainerCreateRequest,
    ) -> Result<()> {
        let mode = req
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone())
            .filter(|m| !m.is_empty() && m != "default");
        let Some(mode) = mode else {
            return Ok(());
        };
        let (ip, aliases) = endpoint_for(req, &mode, &mode);
        let ip = ip.and_then(|s| s.parse().ok());
        let name = name.unwrap_or_default().trim_start_matches('/');
        self.prepare_overlay(&mode, ip, name, &aliases).await
    }

    /// `POST /containers/create`: a sandbox in the state, its first endpoint (and static
    /// address) reserved; nothing in the kernel until it starts.
    pub async fn create_sandbox(
        &self,
        name: Option<&str>,
        req: ContainerCreateRequest,
    ) -> Result<String> {
        self.prepare_overlay_for(name, &req).await?;
        let mut st = self.state.lock().await;
        let id = new_id();
        let name = name
            .filter(|n| !n.is_empty())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| format!("sandbox_{}", &id[..8]));
        valid_name(&name)?;
        let hc = req.host_config.clone().unwrap_or_default();
        let mode = hc
            .network_mode
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "default".into());
        let net_ref = if mode == "default" {
            "bridge"
        } else {
            mode.as_str()
        };
        let net_id = st.network_id(net_ref)?;
        st.ferry_may_join(&net_id)?;
        let joined = first_endpoint(&req, &hc, &mode, &st.networks[&net_id])?;
        check_written_settings(&req, &hc)?;
        let cmd = command_of(&req)?;
        let (created, created_unix) = now();
        let sb = Sandbox {
            id: id.clone(),
            name,
            created,
            created_unix,
            hostname: hostname_for(&joined.mode, &req, &id),
            cmd,
            network_mode: joined.mode,
            auto_remove: hc.auto_remove,
            dns: DnsConf {
                servers: hc.dns.unwrap_or_default(),
                search: hc.dns_search.unwrap_or_default(),
                options: hc.dns_options.unwrap_or_default(),
            },
            state: RunState::Created,
            started_at: None,
            finished_at: None,
            endpoints: joined.endpoint.into_iter().collect(),
            labels: req.labels.clone().unwrap_or_default(),
        };
        let keys = sandbox_plan::create_keys(&id, &net_id);
        let staged = self.stage(&mut st, &keys, |st| {
            sandbox_plan::plan_create(st, sb, &net_id)
        })?;
        self.commit_staged(&mut st, staged)?;
        Ok(id)
    }

    /// Start a sandbox: its namespace, files, endpoints, and (if `spawn`) its process,
    /// supervised by ferryd. Without `spawn` the caller (the CLI) runs the process.
    pub async fn start_sandbox(self: &Arc<Self>, key: &str, spawn: bool) -> Result<()> {
        // plughost: addresses from IPAM plugins are leased before anything is planned.
        self.lease_addresses(key, None).await?;
        let (turn, st) = self.sandbox_turn(key).await?;
        let id = turn.id.clone();
        if st.sandboxes[&id].is_running() {
            return Ok(());
        }
        let netns = self.netns_path(&st.sandboxes[&id]);
        let keys = sandbox_plan::start_keys(&st, &id);
        let sb_before = st.snapshot(&[Key::Sbx(id.clone())]);
        let (mut st, staged) = self
            .stage_taking_addresses(st, &keys, |st| {
                let mut plan = sandbox_plan::plan_start(st, &id, &netns, new_id, now().0)?;
                // plughost: MACs IPAM plugins were told.
                self.lease_macs(st, &id, &mut plan.attach);
                Ok(plan)
            })
            .await?;
        if let Err(e) = self.check_host_free(&staged.plan.published).await {
            staged.abandon(&mut st);
            return Err(e);
        }
        let plan = self
            .apply_staged(&mut st, staged, FirewallFollows::BeforeLinks)
            .await?
            .plan;
        let sb = st.sandboxes[&id].clone();
        drop(st);
        // The kernel work runs without the state lock; this sandbox's turn is still held.
        let steps =
            sandbox_plan::start_steps(&sb, &netns, self.cfg.netns_link(&sb.name), &plan.attach);
        let started = match self.run_steps(&sb, steps).await {
            Ok(undo) => self.settle_and_spawn(&turn, &sb, &netns, spawn, undo).await,
            Err(e) => Err(e),
        };
        let mut st = self.state.lock().await;
        match started {
            Ok(Some(child)) => {
                let pid = child.id().unwrap_or(0);
                let start_time = supervise::start_time(pid).unwrap_or(0);
                self.children.lock().expect("lock").insert(pid);
                let s = st.sandboxes.get_mut(&id).expect("held under lock");
                s.state = RunState::Running { pid, start_time };
                // The process runs whatever the store says: it must be watched.
                self.commit_or_log(&st, &[Key::Sbx(id.clone())], "start: recording the pid");
                drop(st);
                supervise::watch_child(self.clone(), id, child);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                let undo = StartUndo {
                    sb_before,
                    nets: plan.cursors,
                };
                self.undo_start(&mut st, &id, undo, &keys).await;
                Err(e)
            }
        }
    }

    /// Take back a start whose kernel work failed after the state lock was let go (the
    /// kernel side undid itself): the sandbox as it was, which its turn kept anyone else
    /// from changing, and the addresses this start took; its networks may have changed
    /// since, so their snapshots cannot be put back. Static addresses stay reserved, as
    /// they were before the start.
    async fn undo_start(&self, st: &mut State, id: &str, undo: StartUndo, keys: &[Key]) {
        for (n, cursor) in undo.nets {
            unplan_attach(st, id, &n, true, cursor);
        }
        st.restore(undo.sb_before);
        self.settle(st, keys, "undoing a start").await;
    }

    /// The end of a start, once its endpoints are wired (`undo` takes them away): the
    /// sandbox's way out settled, then its process, if ferryd runs it. A failure undoes
    /// both and the wiring.
    async fn settle_and_spawn(
        self: &Arc<Self>,
        turn: &super::SandboxTurn,
        sb: &Sandbox,
        netns: &std::path::Path,
        spawn: bool,
        undo: Vec<KernelUndo>,
    ) -> Result<Option<tokio::process::Child>> {
        let res = match self.settle_way_out(turn).await {
            Ok(()) if spawn => self.spawn_process(sb, netns).map(Some),
            Ok(()) => Ok(None),
            Err(e) => Err(e),
        };
        if res.is_err() {
            self.drop_gateway_service(turn).await;
            self.run_undo(undo).await;
        }
        res
    }

    fn spawn_process(
        self: &Arc<Self>,
        sb: &Sandbox,
        netns: &std::path::Path,
    ) -> Result<tokio::process::Child> {
        let log = self.cfg.sandbox_dir(&sb.id).join("log");
        std::fs::create_dir_all(self.cfg.sandbox_dir(&sb.id))
            .map_err(|e| Error::Other(e.to_string()))?;
        supervise::spawn(self, sb, netns, &log)
    }

    /// Take a start's gateway-bridge endpoint back, if settling gave it one.
    async fn drop_gateway_service(&self, turn: &super::SandboxTurn) {
        let st = self.state.lock().await;
        let Some(net_id) = st.sandboxes.get(&turn.id).and_then(|sb| {
            let e = sb.endpoints.iter().find(|e| !e.membership.is_asked())?;
            Some(e.network_id.clone())
        }) else {
            return;
        };
        if let Err(e) = self.disconnect_in_turn(turn, st, &net_id).await {
            tracing::warn!("undoing a start: {e}");
        }
    }

    /// Tear down the live network of a sandbox in `st`; returns the kernel work.
    pub(crate) fn plan_stop(
        &self,
        st: &mut Desired,
        id: &str,
        keep_static: bool,
    ) -> Vec<KernelUndo> {
        let Some(sb) = st.sandboxes.get(id) else {
            return vec![];
        };
        let nets: Vec<String> = sb.endpoints.iter().map(|e| e.network_id.clone()).collect();
        let mut links = vec![];
        for n in nets {
            // A link without a host end goes with the sandbox's namespace.
            let detached = plan_detach(st, id, &n, keep_static);
            links.extend(detached.and_then(|u| u.host_if));
        }
        let sb = st.sandboxes.get_mut(id).expect("found above");
        // The way out ferry added goes with the stop, as dockerd deletes the sandbox's
        // docker_gwbridge endpoint: the next start settles it again.
        sb.endpoints.retain(|e| e.membership.is_asked());
        let (netns, name) = (self.cfg.sandbox_netns(id), self.cfg.netns_link(&sb.name));
        sandbox_plan::stop_teardown(sb, netns, name, links)
    }

    /// Take `t`'s links out of service now, while the caller still holds the state lock
    /// under which their addresses were freed: another connect must not bring the same
    /// address and MAC up on the bridge beside a pair still up. (Retiring an endpoint's
    /// pair is well under a millisecond; the namespace can go after the lock.)
    async fn retire_links_now(&self, t: &mut Vec<KernelUndo>) {
        let (links, rest) = std::mem::take(t)
            .into_iter()
            .partition(|u| matches!(u, KernelUndo::DetachLink(_)));
        *t = rest;
        self.run_undo(links).await;
    }

    /// A sandbox's process ended: release its network, keep static reservations,
    /// remove it if it was started with --rm.
    pub async fn on_exit(&self, id: &str, report: ExitReport) -> Result<()> {
        let Ok((_turn, mut st)) = self.sandbox_turn(id).await else {
            return Ok(());
        };
        let Some(sb) = st.sandboxes.get(id) else {
            return Ok(());
        };
        match sb.state {
            RunState::Running { pid, .. } if pid == report.pid || pid == 0 || report.pid == 0 => {}
            _ => return Ok(()),
        }
        let auto_remove = sb.auto_remove;
        let mut keys: Vec<Key> = sb
            .endpoints
            .iter()
            .map(|e| Key::Net(e.network_id.clone()))
            .collect();
        keys.push(Key::Sbx(id.to_string()));
        let mut t = self.plan_stop(&mut st, id, !auto_remove);
        if auto_remove {
            st.sandboxes.remove(id);
        } else if let Some(sb) = st.sandboxes.get_mut(id) {
            sb.state = RunState::Exited { code: report.code };
            sb.finished_at = Some(now().0);
        }
        self.settle(&st, &keys, "exit").await;
        let _ = self.exits.send((id.to_string(), report.code));
        self.retire_links_now(&mut t).await;
        drop(st);
        self.run_undo(t).await;
        if auto_remove {
            let _ = std::fs::remove_dir_all(self.cfg.sandbox_dir(id));
            self.sandbox_locks.forget(id);
        }
        Ok(())
    }

    /// The CLI ran the process itself (foreground `run`): record its pid.
    pub async fn attached(&self, key: &str, pid: u32) -> Result<()> {
        let mut st = self.state.lock().await;
        let id = st.sandbox_id(key)?;
        let start_time = supervise::start_time(pid).unwrap_or(0);
        if let Some(sb) = st.sandboxes.get_mut(&id) {
            if sb.is_running() {
                sb.state = RunState::Running { pid, start_time };
            }
        }
        self.commit_or_log(
            &st,
            &[Key::Sbx(id)],
            "recording the pid of a foreground run",
        );
        Ok(())
    }

    pub async fn remove_sandbox(&self, key: &str, force: bool) -> Result<()> {
        let (turn, mut st) = self.sandbox_turn(key).await?;
        let id = turn.id.clone();
        let sb = &st.sandboxes[&id];
        if sb.is_running() && !force {
            return Err(CoreError::RemoveRunning(sb.id.clone()).into());
        }
        let running = match sb.state {
            RunState::Running { pid, start_time } => Some((pid, start_time)),
            _ => None,
        };
        let keys = sandbox_plan::start_keys(&st, &id);
        let staged = self.stage(&mut st, &keys, |st| {
            let t = self.plan_stop(st, &id, false);
            st.sandboxes.remove(&id);
            Ok(t)
        })?;
        let mut t = self
            .apply_staged(&mut st, staged, FirewallFollows::Teardown("rm"))
            .await?
            .plan;
        if let Some((pid, start_time)) = running {
            supervise::kill_if_alive(pid, start_time);
            // No pid recorded (a start cut short by a crash, a foreground run before it
            // reported): whatever runs in the namespace is the sandbox's.
            if pid == 0 {
                for u in &t {
                    if let KernelUndo::RemoveNetns(ns) = u {
                        supervise::kill_in_netns(ns, &id);
                    }
                }
            }
        }
        self.retire_links_now(&mut t).await;
        drop(st);
        self.run_undo(t).await;
        let _ = std::fs::remove_dir_all(self.cfg.sandbox_dir(&id));
        self.sandbox_locks.forget(&id);
        Ok(())
    }

    /// `kill`/`stop`: end the process; the exit path tears the network down.
    pub async fn stop_sandbox(&self, key: &str) -> Result<()> {
        // In its turn: a start in progress has recorded its process's pid by then.
        let (turn, st) = self.sandbox_turn(key).await?;
        let id = turn.id.clone();
        match st.sandboxes[&id].state {
            RunState::Running { pid, start_time } => {
                supervise::kill_if_alive(pid, start_time);
                let own_netns = st.sandboxes[&id].network_mode.own_netns();
                drop(st);
                drop(turn);
                if pid == 0 {
                    if own_netns {
                        supervise::kill_in_netns(&self.cfg.sandbox_netns(&id), &id);
                    }
                    self.on_exit(&id, ExitReport { pid: 0, code: 137 }).await?;
                }
                Ok(())
            }
            _ => Err(CoreError::NotRunning(st.sandboxes[&id].name.clone()).into()),
        }
    }
}

/// A new sandbox's network mode and, on a network it joins, its first endpoint, checked
/// with dockerd's rules (`--ip` and `--alias` only on user networks, ports only where
/// they can be published).
struct Joined {
    mode: NetworkMode,
    endpoint: Option<Endpoint>,
}

fn first_endpoint(
    req: &ContainerCreateRequest,
    hc: &ferry_core::docker::container::HostConfigReq,
    mode: &str,
    net: &ferry_core::model::Network,
) -> std::result::Result<Joined, CoreError> {
    let (ip, aliases) = endpoint_for(req, mode, &net.name);
    let static_ip = match ip {
        Some(s) => Some(
            s.parse::<std::net::Ipv4Addr>()
                .map(IpAddr::from)
                .map_err(|_| CoreError::BadValue {
                    what: "IPv4 address",
                    value: s.clone(),
                    why: "not an IPv4 address".into(),
                })?,
        ),
        None => None,
    };
    if static_ip.is_some() && net.predefined {
        return Err(CoreError::StaticIpOnDefaultBridge);
    }
    if !aliases.is_empty() && net.predefined {
        return Err(CoreError::AliasOnDefaultBridge);
    }
    if let (Some(_), Some(pool)) = (static_ip, &net.pool) {
        pool.check_static_allowed()?;
    }
    let ports = match &hc.port_bindings {
        Some(b) => ferry_core::ports::from_bindings(b)?,
        None => vec![],
    };
    let mode = match net.driver() {
        Driver::Host => NetworkMode::Host,
        Driver::Null => NetworkMode::None,
        Driver::Bridge | Driver::Overlay | Driver::Macvlan | Driver::Remote => {
            NetworkMode::Joined(mode.to_string())
        }
    };
    if !net.driver().has_endpoints() {
        return Ok(Joined {
            mode,
            endpoint: None,
        });
    }
    ferry_core::plan::publish::check_publishable(net, !ports.is_empty())?;
    Ok(Joined {
        mode,
        endpoint: Some(Endpoint {
            network_id: net.id.clone(),
            static_ip,
            aliases,
            ports,
            live: None,
            membership: Membership::Asked,
        }),
    })
}

/// Entrypoint then Cmd, as dockerd joins them; refused when empty (a sandbox without a
/// command could never run, so it is refused at create, not at start).
fn command_of(req: &ContainerCreateRequest) -> std::result::Result<Vec<String>, CoreError> {
    let cmd: Vec<String> = req
        .entrypoint
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(req.cmd.clone().unwrap_or_default())
        .collect();
    if cmd.first().is_none_or(|p| p.is_empty()) {
        return Err(CoreError::Invalid(
            "no command specified: Cmd and Entrypoint are both empty".into(),
        ));
    }
    Ok(cmd)
}

/// The host's name for `--network host`; else `--hostname`, or the short ID.
fn hostname_for(mode: &NetworkMode, req: &ContainerCreateRequest, id: &str) -> String {
    if !mode.own_netns() {
        return nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
    }
    req.hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| short(id).to_string())
}
