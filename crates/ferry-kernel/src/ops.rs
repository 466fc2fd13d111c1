//! The kernel edge as a trait: what ferryd may ask of the kernel. [`Netlink`] does it;
//! [`crate::fake::Recorder`] records it for tests without root.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_core::ports::Proto;
use ipnet::{IpNet, Ipv4Net};

use std::sync::Arc;

use crate::fault::{AttachStep, Faults};
pub use crate::link::adopt::{AdoptSpec, StaticRoute};
use crate::link::retire::{self, Retired};
pub use crate::link::vxlan::VxlanSpec;
use crate::link::{
    addr, bridge, check, del, fdb, get, kind, macvlan, port, route, up, veth, vxlan,
};
use crate::nft::Nft;
use crate::reaper::Reaper;
use crate::shortcut::Shortcut;
use crate::{netns, sysctl, KernelError};

pub use ferry_core::wiring::{AttachSpec, BridgeSpec, LinkSpec, MacvlanLink, PluginLink, VethLink};

/// A veth pair with both ends in ferryd's namespace (the Docker plugin's Join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPairSpec {
    pub bridge: String,
    pub host_if: String,
    /// The end dockerd moves into the container.
    pub peer_if: String,
    pub peer_mac: [u8; 6],
    pub mtu: u32,
    /// Hairpin mode on the bridge port (the endpoint publishes ports).
    pub hairpin: bool,
}

pub trait KernelOps: Send + Sync + 'static {
    fn ensure_bridge(
        &self,
        spec: &BridgeSpec,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Delete a link in ferryd's namespace; a missing link is success.
    fn delete_link(&self, name: &str) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Delete a link inside the namespace pinned at `netns` (a macvlan endpoint, which
    /// has no end in ferryd's); a missing link or namespace is success.
    fn delete_link_in(
        &self,
        netns: &Path,
        name: &str,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn create_netns(&self, path: &Path) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Unpin and remove a namespace file; a missing one is success.
    fn remove_netns(&self, path: &Path) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Name the namespace pinned at `target` where `ip netns` finds it: the symlink
    /// `link` (its directory made, one there before replaced).
    fn name_netns(
        &self,
        link: &Path,
        target: &Path,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Take a namespace's name away; one already gone is success.
    fn unname_netns(&self, link: &Path) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Write one of a sandbox's files (its hostname, hosts, resolv.conf), making its
    /// directory; an existing file is rewritten in place (it is bind-mounted by inode).
    fn write_sandbox_file(
        &self,
        path: &Path,
        contents: &str,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn attach(&self, spec: &AttachSpec) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn set_default_route(
        &self,
        netns: &Path,
        via: IpAddr,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    fn link_names(&self) -> impl Future<Output = Result<Vec<String>, KernelError>> + Send;
    fn route_destinations(&self) -> impl Future<Output = Result<Vec<IpNet>, KernelError>> + Send;
    /// The kind of the link `name` in ferryd's namespace ("bridge", "veth", "" for none
    /// given), or None when there is no such link.
    fn link_kind(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, KernelError>> + Send;
    /// Make a veth pair in ferryd's namespace, the host end on a bridge and up.
    fn create_veth_pair(
        &self,
        spec: &VethPairSpec,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Whether a host process could bind `ip:port` (a published port must not shadow
    /// one a host process holds). Only a port in use is `false`; an address that is not
    /// the host's is an error with EADDRNOTAVAIL.
    fn host_port_free(
        &self,
        proto: Proto,
        ip: Ipv4Addr,
        port: u16,
    ) -> impl Future<Output = Result<bool, KernelError>> + Send;
    /// Run an nftables script as one transaction; returns what it printed.
    fn nft(&self, script: &str) -> impl Future<Output = Result<String, KernelError>> + Send;
    /// Set a sysctl in ferryd's namespace (`["net", "ipv4", "ip_forward"]`); true when
    /// the value changed.
    fn sysctl(
        &self,
        key: &[&str],
        value: &str,
    ) -> impl Future<Output = Result<bool, KernelError>> + Send;
    /// An overlay's VXLAN device, made if missing, on its bridge and up.
    fn ensure_vxlan(
        &self,
        spec: &VxlanSpec,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Point a remote endpoint's MAC and IP at its host's tunnel address on `dev`.
    fn overlay_entry_replace(
        &self,
        dev: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
        vtep: Ipv4Addr,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Remove a remote endpoint's entries from `dev`; entries already gone are success.
    fn overlay_entry_delete(
        &self,
        dev: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// The remote endpoints' entries on `dev` as the kernel holds them: IP → MAC.
    fn overlay_entries(
        &self,
        dev: &str,
    ) -> impl Future<Output = Result<Vec<(Ipv4Addr, [u8; 6])>, KernelError>> + Send;
    /// Route `dst` through `dev`: via a remote host's tunnel address (`onlink`), or with
    /// no `via`, on the link itself (a local endpoint inside another host's block).
    fn tunnel_route_replace(
        &self,
        dev: &str,
        dst: Ipv4Net,
        via: Option<Ipv4Addr>,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Remove a route [`KernelOps::tunnel_route_replace`] made; one already gone is success.
    fn tunnel_route_delete(
        &self,
        dev: &str,
        dst: Ipv4Net,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// The routes [`KernelOps::tunnel_route_replace`] made through `dev`, as the kernel
    /// holds them (none when the device is missing).
    fn tunnel_routes(
        &self,
        dev: &str,
    ) -> impl Future<Output = Result<Vec<Ipv4Net>, KernelError>> + Send;
    /// The interface holding `ip` in ferryd's namespace, and its MTU.
    fn underlay_of(
        &self,
        ip: Ipv4Addr,
    ) -> impl Future<Output = Result<(String, u32), KernelError>> + Send;
    /// The first IPv4 address of interface `name`.
    fn address_of(&self, name: &str) -> impl Future<Output = Result<Ipv4Addr, KernelError>> + Send;
    /// Take `net` off the link `name` in ferryd's namespace (a bridge ferry adopted but
    /// did not make); a missing link or address is success.
    fn remove_address(
        &self,
        name: &str,
        net: IpNet,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// Check an endpoint the store knows against the kernel and wire again what is
    /// missing (the whole veth pair if it is gone or off its bridge, else the sandbox
    /// side's state, address and default route). Returns what was wrong; empty when the
    /// endpoint was wired.
    fn ensure_attached(
        &self,
        spec: &AttachSpec,
    ) -> impl Future<Output = Result<Vec<String>, KernelError>> + Send;
    /// plughost: move a plugin's link into a sandbox under its sandbox name and
    /// configure it (see [`crate::link::adopt`]); moved back if that fails.
    fn adopt_link(&self, spec: &AdoptSpec) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// plughost: move `ifname` out of the sandbox at `netns` back to ferryd's namespace
    /// as `back`; a namespace or link already gone is success.
    fn hand_back_link(
        &self,
        netns: &Path,
        ifname: &str,
        back: &str,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;
    /// An attach's step about to run: `Err` only when a test armed a fault there
    /// (`FERRY_FAULT`, see [`crate::fault`]). ferryd asks it for its own steps (nft,
    /// dns); the kernel's steps ask it themselves.
    fn fault(&self, _step: AttachStep) -> Result<(), KernelError> {
        Ok(())
    }
    /// The same-network shortcut ([`crate::shortcut`]): carry endpoint `e` (its host end
    /// and bridge must exist). Written again if already carried.
    fn shortcut_add(&self, e: &ferry_core::shortcut::Entry) -> Result<(), KernelError>;
    /// Stop carrying the endpoint whose host end is `host_end` (nothing if it is not).
    fn shortcut_remove(&self, host_end: &str);
    /// Open or close the shortcut for every endpoint.
    fn shortcut_gate(&self, open: bool) -> Result<(), KernelError>;
    /// Carry exactly these overlay tunnels (their devices and bridges must exist).
    fn shortcut_tunnels(&self, want: &[ferry_core::shortcut::Tunnel]) -> Result<(), KernelError>;
    /// Take ferry's programs off those of `links` the shortcut does not carry (what a
    /// killed ferryd left); every one of them, if the shortcut is not loaded. Never fails:
    /// a link or program not there is as good as taken off.
    fn shortcut_sweep(&self, links: &[String]);
    /// Carry routed flows in through every uplink: each link with an IPv4 address but
    /// loopbacks and `ferry_links` (ferry's own). Nothing to do where the shortcut is not
    /// loaded (no carried endpoint yet) or has no conntrack fast path.
    fn shortcut_uplinks(&self, ferry_links: &[String]) -> Result<(), KernelError>;
}

/// The real kernel, through one rtnetlink connection in ferryd's own namespace plus a
/// short-lived one inside each sandbox being configured, and a reaper thread that
/// finishes the deletion of endpoints' veth pairs in the background (see
/// [`crate::link::retire`]).
pub struct Netlink {
    handle: rtnetlink::Handle,
    nft: std::sync::OnceLock<Arc<Nft>>,
    reaper: Option<Reaper>,
    /// host-side veth → (sandbox namespace, name inside), recorded at attach, so that
    /// delete_link can retire the peer too. Empty after a restart: links made before are
    /// deleted synchronously.
    peers: std::sync::Mutex<HashMap<String, (PathBuf, String)>>,
    /// ferryd's `/proc/sys/net/ipv6/conf`, held open (see [`sysctl::Ipv6Conf`]).
    ipv6_conf: sysctl::Ipv6Conf,
    /// The attach step a test armed to fail (none in normal operation).
    faults: Faults,
    /// The same-network shortcut, loaded at its first use.
    shortcut: std::sync::Mutex<ShortcutSlot>,
    /// Whether the shortcut carries routed flows where the kernel allows (its conntrack
    /// fast path); true unless [`Netlink::carry_routed`] said otherwise.
    routed: bool,
}

/// Where the shortcut's program stands.
#[derive(Default)]
enum ShortcutSlot {
    #[default]
    Unloaded,
    Loaded(Box<Shortcut>),
    /// The kernel refused to load it (logged once): every call is a no-op, and traffic
    /// takes the normal path.
    Unavailable,
}

impl Netlink {
    /// Must be called inside a tokio runtime, on a thread in the namespace to manage.
    pub fn new() -> Result<Self, KernelError> {
        let (conn, handle) =
            crate::rtnl::connect().map_err(|e| KernelError::io("open", "netlink socket", e))?;
        tokio::spawn(conn);
        let reaper = Reaper::start();
        if reaper.is_none() {
            tracing::warn!("no background reaper: veth deletions stay synchronous");
        }
        Ok(Netlink {
            handle,
            nft: Default::default(),
            reaper,
            peers: Default::default(),
            ipv6_conf: sysctl::Ipv6Conf::open_here(),
            faults: Faults::default(),
            shortcut: Default::default(),
            routed: true,
        })
    }

    /// Whether the shortcut, once loaded, carries routed flows past the host's stack
    /// (ferryd's `--shortcut same-network` says no); to be set before its first use.
    pub fn carry_routed(&mut self, routed: bool) {
        self.routed = routed;
    }

    /// Run `f` on the shortcut, loading it first if this is its first use. Without it
    /// (a kernel that refused it), nothing is done.
    fn with_shortcut(
        &self,
        f: impl FnOnce(&mut Shortcut) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let mut slot = self.shortcut.lock().expect("shortcut lock");
        if matches!(*slot, ShortcutSlot::Unloaded) {
            *slot = match Shortcut::load(self.routed) {
                Ok(s) => ShortcutSlot::Loaded(Box::new(s)),
                Err(e) => {
                    tracing::warn!("the same-network shortcut is off: {e}");
                    ShortcutSlot::Unavailable
                }
            };
        }
        match &mut *slot {
            ShortcutSlot::Loaded(s) => f(s),
            _ => Ok(()),
        }
    }

    /// Make `step` of every attach fail (tests only: ferryd arms it from `FERRY_FAULT`
    /// read once at start, see [`crate::fault`]).
    pub fn arm_fault(&mut self, step: Option<AttachStep>) {
        self.faults = Faults::armed(step);
    }

    fn nft_ctx(&self) -> Result<Arc<Nft>, KernelError> {
        if let Some(n) = self.nft.get() {
            return Ok(n.clone());
        }
        let n = Arc::new(Nft::open()?);
        Ok(self.nft.get_or_init(|| n).clone())
    }

    /// Veth pairs handed to the background and not deleted yet.
    pub fn pending_deletions(&self) -> usize {
        self.reaper.as_ref().map_or(0, Reaper::pending)
    }

    /// Wait (at most `limit`) until the veth pairs handed to the background have been
    /// deleted; true if none is left. ferryd calls it on shutdown, tests before they look.
    pub async fn settle(&self, limit: Duration) -> bool {
        match &self.reaper {
            Some(r) => r.settle(limit).await,
            None => true,
        }
    }

    /// Retired pairs keep their bridge port until the reaper deletes them: when a new
    /// port was refused for a full bridge (EXFULL) while deletions are pending, wait for
    /// them (at most 5 s) and say so, for the caller to try once more.
    async fn bridge_full_of_retired(&self, r: &Result<(), KernelError>) -> bool {
        let full = r.as_ref().err().and_then(KernelError::errno) == Some(libc::EXFULL);
        if full && self.pending_deletions() > 0 {
            return self.settle(Duration::from_secs(5)).await;
        }
        false
    }

    async fn attach_veth(&self, s: &AttachSpec, v: &VethLink) -> Result<(), KernelError> {
        let bridge_index = get::index_here(&v.bridge)?
            .ok_or_else(|| KernelError::other("attach to bridge", &v.bridge, "no such bridge"))?;
        let ns = File::open(&s.netns)
            .map_err(|e| KernelError::io("open netns", s.netns.display().to_string(), e))?;
        let pair = veth::Veth {
            host_if: &v.host_if,
            bridge_index,
            peer_name: &s.ifname,
            peer_netns: Some(&ns),
            peer_mac: s.mac,
            mtu: v.mtu,
            host_up: false,
        };
        self.faults.check(AttachStep::Veth)?;
        let created = veth::create(&self.handle, &pair).await;
        let created = match self.bridge_full_of_retired(&created).await {
            true => veth::create(&self.handle, &pair).await,
            false => created,
        };
        created.map_err(|e| {
            // EXFULL: a Linux bridge takes at most 1023 ports (BR_MAX_PORTS is 1024,
            // port number 0 is reserved).
            if e.errno() == Some(libc::EXFULL) {
                KernelError::other(
                    "attach to bridge",
                    &v.bridge,
                    "the bridge is full: a Linux bridge takes at most 1023 ports",
                )
            } else {
                e
            }
        })?;
        sysctl::disable_ipv6(&self.ipv6_conf, &v.host_if);
        let host_side = self.ready_host_end(v, s.mac);
        if let Err(e) = futures::future::try_join(host_side, self.configure_inside(s)).await {
            let _ = del::delete(&self.handle, &v.host_if).await;
            return Err(e);
        }
        self.peers
            .lock()
            .expect("peers lock")
            .insert(v.host_if.clone(), (s.netns.clone(), s.ifname.clone()));
        Ok(())
    }

    /// A veth endpoint's host end made ready: up and its MAC pinned on its bridge port
    /// (two requests at once), then hairpin mode if asked.
    async fn ready_host_end(&self, v: &VethLink, mac: [u8; 6]) -> Result<(), KernelError> {
        futures::future::try_join(
            up::up_by_name(&self.handle, &v.host_if),
            port::pin_mac(&self.handle, &v.host_if, mac),
        )
        .await?;
        if v.hairpin {
            port::hairpin(&self.handle, &v.host_if).await?;
        }
        Ok(())
    }

    async fn attach_macvlan(&self, s: &AttachSpec, m: &MacvlanLink) -> Result<(), KernelError> {
        let ns = File::open(&s.netns)
            .map_err(|e| KernelError::io("open netns", s.netns.display().to_string(), e))?;
        macvlan::create(
            &self.handle,
            &macvlan::Macvlan {
                name: &s.ifname,
                parent: &m.parent,
                mode: m.mode,
                mac: s.mac,
                mtu: m.mtu,
                netns: &ns,
            },
        )
        .await?;
        if let Err(e) = self.configure_inside(s).await {
            if let Ok(inside) = netns::netlink_in(&s.netns).await {
                let _ = del::delete(&inside, &s.ifname).await;
            }
            return Err(e);
        }
        Ok(())
    }

    async fn configure_inside(&self, s: &AttachSpec) -> Result<(), KernelError> {
        let nh = netns::netlink_in(&s.netns).await?;
        self.faults.check(AttachStep::Move)?;
        let idx = get::index_of(&nh, &s.ifname)
            .await?
            .ok_or_else(|| KernelError::other("find", &s.ifname, "veth peer missing in sandbox"))?;
        self.faults.check(AttachStep::Address)?;
        addr::add(&nh, idx, &s.ifname, s.addr).await?;
        self.faults.check(AttachStep::Up)?;
        up::up(&nh, idx, &s.ifname).await?;
        if let Some(gw) = s.default_via {
            self.faults.check(AttachStep::Route)?;
            route::replace_default(&nh, gw).await?;
        }
        Ok(())
    }
}

impl KernelOps for Netlink {
    async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<(), KernelError> {
        bridge::ensure(&self.handle, &spec.name, spec.gateway, spec.mtu)
            .await
            .map(|_| ())
    }

    /// An endpoint's veth pair is retired (both ends down and renamed:
    /// well under a millisecond) and deleted in the background; anything else, or any
    /// pair the kernel will not retire, is deleted before returning.
    async fn delete_link_in(&self, netns: &Path, name: &str) -> Result<(), KernelError> {
        if !netns::is_pinned(netns) {
            return Ok(());
        }
        del::delete(&netns::netlink_in(netns).await?, name).await
    }

    async fn delete_link(&self, name: &str) -> Result<(), KernelError> {
        let peer = self.peers.lock().expect("peers lock").remove(name);
        if let (Some(reaper), Some((netns, ifname))) = (&self.reaper, peer) {
            match retire::retire(&self.handle, name, &netns, &ifname).await? {
                Retired::Gone => return Ok(()),
                Retired::As(trash) => {
                    if reaper.hand_over(trash.clone()) {
                        return Ok(());
                    }
                    return del::delete(&self.handle, &trash).await;
                }
                Retired::DeleteNow => {}
            }
        }
        del::delete(&self.handle, name).await
    }

    async fn create_netns(&self, path: &Path) -> Result<(), KernelError> {
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || netns::create(&p))
            .await
            .map_err(|e| {
                KernelError::other("create netns", path.display().to_string(), e.to_string())
            })?
    }

    async fn remove_netns(&self, path: &Path) -> Result<(), KernelError> {
        // An unmount can wait on the kernel: not on a tokio worker.
        let p = path.to_path_buf();
        tokio::task::spawn_blocking(move || netns::remove(&p))
            .await
            .map_err(|e| {
                KernelError::other("remove netns", path.display().to_string(), e.to_string())
            })?
    }

    async fn name_netns(&self, link: &Path, target: &Path) -> Result<(), KernelError> {
        let (link, target) = (link.to_path_buf(), target.to_path_buf());
        let shown = link.display().to_string();
        tokio::task::spawn_blocking(move || netns::name(&link, &target))
            .await
            .map_err(|e| KernelError::other("name netns", shown, e.to_string()))?
    }

    async fn write_sandbox_file(&self, path: &Path, contents: &str) -> Result<(), KernelError> {
        let (p, c) = (path.to_path_buf(), contents.to_string());
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || crate::files::write_in_place(&p, &c))
            .await
            .map_err(|e| KernelError::other("write", shown, e.to_string()))?
    }

    async fn unname_netns(&self, link: &Path) -> Result<(), KernelError> {
        let l = link.to_path_buf();
        let shown = link.display().to_string();
        tokio::task::spawn_blocking(move || netns::unname(&l))
            .await
            .map_err(|e| KernelError::other("unname netns", shown, e.to_string()))?
    }

    async fn attach(&self, s: &AttachSpec) -> Result<(), KernelError> {
        match &s.link {
            LinkSpec::Veth(v) => self.attach_veth(s, v).await,
            LinkSpec::Macvlan(m) => self.attach_macvlan(s, m).await,
            LinkSpec::Plugin(p) => Err(KernelError::other(
                "attach",
                &p.host_if,
                "a plugin's link is made by its plugin's Join, then adopted",
            )),
        }
    }

    async fn set_default_route(&self, netns: &Path, via: IpAddr) -> Result<(), KernelError> {
        let nh = netns::netlink_in(netns).await?;
        route::replace_default(&nh, via).await
    }

    async fn link_names(&self) -> Result<Vec<String>, KernelError> {
        get::names(&self.handle).await
    }

    async fn route_destinations(&self) -> Result<Vec<IpNet>, KernelError> {
        route::destinations(&self.handle).await
    }

    async fn link_kind(&self, name: &str) -> Result<Option<String>, KernelError> {
        kind::kind_of(&self.handle, name).await
    }

    async fn create_veth_pair(&self, spec: &VethPairSpec) -> Result<(), KernelError> {
        let created = veth::create_for_docker(&self.handle, spec).await;
        match self.bridge_full_of_retired(&created).await {
            true => veth::create_for_docker(&self.handle, spec).await,
            false => created,
        }
    }

    async fn host_port_free(
        &self,
        proto: Proto,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<bool, KernelError> {
        let bound = match proto {
            Proto::Tcp => std::net::TcpListener::bind((ip, port)).map(drop),
            Proto::Udp => std::net::UdpSocket::bind((ip, port)).map(drop),
        };
        match bound {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Err(KernelError::io(
                "bind",
                format!("{ip}:{port}/{}", proto.as_str()),
                e,
            )),
            // Anything else (say, a port below 1024 without root) is not a holder.
            Err(_) => Ok(true),
        }
    }

    async fn nft(&self, script: &str) -> Result<String, KernelError> {
        let nft = self.nft_ctx()?;
        // Rendered for `inet ferry`/`bridge ferry`; a second ferryd's tables are its own.
        let script = ferry_core::instance::rename_tables(script).into_owned();
        tokio::task::spawn_blocking(move || nft.run(&script))
            .await
            .map_err(|e| KernelError::other("apply", "nftables ruleset", e.to_string()))?
    }

    async fn sysctl(&self, key: &[&str], value: &str) -> Result<bool, KernelError> {
        sysctl::set(key, value)
    }

    async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<(), KernelError> {
        vxlan::ensure(&self.handle, spec).await.map(|_| ())
    }

    async fn overlay_entry_replace(
        &self,
        dev: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
        vtep: Ipv4Addr,
    ) -> Result<(), KernelError> {
        let index = get::index_here(dev)?
            .ok_or_else(|| KernelError::other("program", dev, "no such device"))?;
        fdb::replace(&self.handle, index, dev, mac, ip, vtep).await
    }

    async fn overlay_entry_delete(
        &self,
        dev: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
    ) -> Result<(), KernelError> {
        match get::index_here(dev)? {
            Some(index) => fdb::delete(&self.handle, index, dev, mac, ip).await,
            None => Ok(()),
        }
    }

    async fn remove_address(&self, name: &str, net: IpNet) -> Result<(), KernelError> {
        match get::index_of(&self.handle, name).await? {
            Some(index) => addr::del(&self.handle, index, name, net).await,
            None => Ok(()),
        }
    }

    async fn overlay_entries(&self, dev: &str) -> Result<Vec<(Ipv4Addr, [u8; 6])>, KernelError> {
        match get::index_here(dev)? {
            Some(index) => fdb::list(&self.handle, index, dev).await,
            None => Ok(Vec::new()),
        }
    }

    async fn underlay_of(&self, ip: Ipv4Addr) -> Result<(String, u32), KernelError> {
        vxlan::underlay_of(&self.handle, ip).await
    }

    async fn tunnel_route_replace(
        &self,
        dev: &str,
        dst: Ipv4Net,
        via: Option<Ipv4Addr>,
    ) -> Result<(), KernelError> {
        let index = get::index_here(dev)?
            .ok_or_else(|| KernelError::other("route through", dev, "no such device"))?;
        route::replace_tunnel(&self.handle, index, dev, dst, via).await
    }

    async fn tunnel_route_delete(&self, dev: &str, dst: Ipv4Net) -> Result<(), KernelError> {
        match get::index_here(dev)? {
            Some(index) => route::delete_tunnel(&self.handle, index, dev, dst).await,
            None => Ok(()),
        }
    }

    async fn tunnel_routes(&self, dev: &str) -> Result<Vec<Ipv4Net>, KernelError> {
        match get::index_here(dev)? {
            Some(index) => route::tunnel_routes(&self.handle, index).await,
            None => Ok(Vec::new()),
        }
    }

    async fn address_of(&self, name: &str) -> Result<Ipv4Addr, KernelError> {
        vxlan::address_of(&self.handle, name).await
    }

    async fn adopt_link(&self, s: &AdoptSpec) -> Result<(), KernelError> {
        crate::link::adopt::adopt(&self.handle, s).await
    }

    async fn hand_back_link(
        &self,
        netns: &Path,
        ifname: &str,
        back: &str,
    ) -> Result<(), KernelError> {
        crate::link::adopt::hand_back(netns, ifname, back).await
    }

    fn shortcut_add(&self, e: &ferry_core::shortcut::Entry) -> Result<(), KernelError> {
        self.with_shortcut(|s| s.add(e))
    }

    fn shortcut_remove(&self, host_end: &str) {
        let slot = &mut *self.shortcut.lock().expect("shortcut lock");
        if let ShortcutSlot::Loaded(s) = slot {
            s.remove(host_end);
        }
    }

    fn shortcut_gate(&self, open: bool) -> Result<(), KernelError> {
        self.with_shortcut(|s| s.set_gate(open))
    }

    fn shortcut_tunnels(&self, want: &[ferry_core::shortcut::Tunnel]) -> Result<(), KernelError> {
        self.with_shortcut(|s| s.set_tunnels(want))
    }

    fn shortcut_uplinks(&self, ferry_links: &[String]) -> Result<(), KernelError> {
        // Not loaded for this either: uplinks alone carry nothing.
        match &mut *self.shortcut.lock().expect("shortcut lock") {
            ShortcutSlot::Loaded(s) => s.set_uplinks(ferry_links),
            _ => Ok(()),
        }
    }

    fn shortcut_sweep(&self, links: &[String]) {
        // Not loaded for this: a ferryd that carries nothing has no program of its own.
        match &*self.shortcut.lock().expect("shortcut lock") {
            ShortcutSlot::Loaded(s) => s.sweep(links),
            _ => Shortcut::sweep_unloaded(links),
        }
    }

    fn fault(&self, step: AttachStep) -> Result<(), KernelError> {
        self.faults.check(step)
    }

    async fn ensure_attached(&self, s: &AttachSpec) -> Result<Vec<String>, KernelError> {
        let inside = netns::netlink_in(&s.netns).await?;
        let wiring = check::check(&self.handle, &inside, s).await?;
        if wiring.problems.is_empty() {
            return Ok(vec![]);
        }
        if wiring.remake_pair {
            // Whatever is left of the link goes (deleting either end of a pair deletes
            // both), then the endpoint is attached as new, with the same names and address.
            if let Some(host_if) = s.host_if() {
                self.peers.lock().expect("peers lock").remove(host_if);
                del::delete(&self.handle, host_if).await?;
            }
            del::delete(&inside, &s.ifname).await?;
            self.attach(s).await?;
        } else {
            if let LinkSpec::Veth(v) = &s.link {
                self.ready_host_end(v, s.mac).await?;
            }
            self.configure_inside(s).await?;
        }
        Ok(wiring.problems)
    }
}
