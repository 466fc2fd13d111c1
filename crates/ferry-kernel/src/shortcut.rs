//! The shortcut's kernel half: ferry's tc/BPF programs (bpf/shortcut.c, built by
//! build.rs), their maps, and one link per endpoint's veth host end, per overlay's VXLAN
//! device and per bridge with carried endpoints.
//!
//! Design note. `shortcut` runs at the ingress of each host end (what a sandbox sends)
//! and hands a frame for a neighbour on the same bridge straight to that neighbour's
//! namespace, one for another host's block of the same overlay straight to the
//! overlay's VXLAN device, and one the host is to route (anything else to the bridge's
//! MAC but the gateway) straight up into the host as if the bridge had passed it up;
//! `arrive` runs at the ingress of each overlay's VXLAN device and hands a frame for a
//! local endpoint straight to it; `deliver` runs at the egress of each bridge with a
//! carried endpoint and hands what the host routes to such an endpoint straight to its
//! veth. bpf/shortcut.c says exactly when. Five maps feed them:
//!
//! - `sources`, by host end ifindex: the endpoint's bridge ifindex and MAC, its IPv4
//!   address and MAC (the sender's anti-spoofing check, and which bridge it is on), its
//!   network's gateway and whether that network is an overlay;
//! - `targets`, by (bridge ifindex, IPv4 address): the neighbour's host end and MAC;
//! - `remotes`, a longest-prefix trie by (bridge ifindex, IPv4 block): the overlay's
//!   device and the MACs its frames carry to the host that owns the block;
//! - `tunnels`, by VXLAN device ifindex: its overlay's bridge and the MACs of both;
//! - `gate`: open (1) or closed (0) for everything.
//!
//! The programs sit on links as cls_bpf filters ([`links`] says why not TCX, and how a
//! filter that outlives ferryd is dealt with): a start replaces every filter a previous
//! ferryd left, with programs fed from the store; a stop closes the gate first. A veth
//! or bridge deleted with its filter takes the filter with it. `deliver` is on a bridge
//! from its first carried endpoint to its last (counted here), and put on again when
//! the bridge was made anew (a new ifindex under the same name).
//!
//! Interface names are resolved to ifindexes in the calling thread's network namespace:
//! ferryd's own, where every host end and bridge lives.

use std::collections::HashMap;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHash, MapData};
use aya::programs::tc::SchedClassifierLinkId;
use aya::Ebpf;
use ferry_core::shortcut::{Entry, Tunnel};

use crate::KernelError;

mod links;
mod routed;
use links::{ARRIVE, DELIVER, INBOUND, SEND};

/// The object build.rs compiled, aligned as aya's ELF parser wants it.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shortcut.o"));

/// `sources`' value: must match `struct source` in bpf/shortcut.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct Source {
    bridge: u32,
    ip: u32,
    mac: [u8; 6],
    bridge_mac: [u8; 6],
    gateway: u32,
    overlay: u32,
}

/// `targets`' key and value: `struct target_key`, `struct target`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct TargetKey {
    bridge: u32,
    ip: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Target {
    host_end: u32,
    mac: [u8; 6],
    pad: u16,
}

/// `remotes`' key and value: `struct remote_key`, `struct remote`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct RemoteKey {
    prefixlen: u32,
    bridge: u32,
    ip: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Remote {
    tunnel: u32,
    src: [u8; 6],
    dst: [u8; 6],
}

/// `tunnels`' value: `struct tunnel`.
#[repr(C)]
#[derive(Clone, Copy)]
struct TunnelValue {
    bridge: u32,
    bridge_mac: [u8; 6],
    mac: [u8; 6],
}

// SAFETY: plain #[repr(C)] integers and byte arrays, padding spelled out: every bit
// pattern is valid and none is uninitialised.
unsafe impl aya::Pod for Source {}
unsafe impl aya::Pod for TargetKey {}
unsafe impl aya::Pod for Target {}
unsafe impl aya::Pod for RemoteKey {}
unsafe impl aya::Pod for Remote {}
unsafe impl aya::Pod for TunnelValue {}

/// The loaded program, its maps, and the endpoints it is attached to.
pub struct Shortcut {
    /// The programs (their filters: [`links`]).
    ebpf: Ebpf,
    sources: BpfHash<MapData, u32, Source>,
    targets: BpfHash<MapData, TargetKey, Target>,
    remotes: LpmTrie<MapData, RemoteKeyData, Remote>,
    tunnels: BpfHash<MapData, u32, TunnelValue>,
    gate: Array<MapData, u32>,
    /// By host end name: the link, and the keys written for it.
    attached: HashMap<String, Attached>,
    /// By VXLAN device name: the link, and the keys written for it.
    devices: HashMap<String, Device>,
    /// By bridge name: `deliver`'s link.
    bridges: HashMap<String, Bridge>,
    /// The conntrack fast path, where the kernel took its object ([`routed`]).
    routed: Option<routed::Routed>,
}

struct Attached {
    link: SchedClassifierLinkId,
    host_end: u32,
    target: TargetKey,
    /// Its bridge's name (its count in `bridges`).
    bridge: String,
}

/// A bridge with carried endpoints: `deliver` on its egress (None: not attached yet, or
/// the attach failed), the ifindex it is attached to, and how many endpoints use it.
struct Bridge {
    link: Option<SchedClassifierLinkId>,
    ifindex: u32,
    users: usize,
}

struct Device {
    link: SchedClassifierLinkId,
    ifindex: u32,
    remotes: Vec<RemoteKey>,
}

/// aya's trie keys carry the prefix length apart: (bridge ifindex, address) as bytes.
type RemoteKeyData = [u8; 8];

fn trie_key(k: &RemoteKey) -> Key<RemoteKeyData> {
    let mut data = [0u8; 8];
    data[..4].copy_from_slice(&k.bridge.to_ne_bytes());
    data[4..].copy_from_slice(&k.ip.to_ne_bytes());
    Key::new(k.prefixlen, data)
}

fn failed(
    action: &'static str,
    object: impl Into<String>,
    e: impl std::fmt::Display,
) -> KernelError {
    KernelError::Failed {
        action,
        object: object.into(),
        message: e.to_string(),
        errno: None,
    }
}

fn ifindex(name: &str) -> Result<u32, KernelError> {
    nix::net::if_::if_nametoindex(name).map_err(|e| KernelError::sys("find link", name, e))
}

impl Shortcut {
    /// Load the programs and their maps (the gate closed): with the conntrack fast path
    /// if `routed` and the kernel can have it ([`routed`]), without it otherwise. Fails on
    /// a kernel without BPF, without `bpf_redirect_peer` (5.10), or without the
    /// privileges to load it.
    pub fn load(routed: bool) -> Result<Shortcut, KernelError> {
        let with_conntrack = match routed {
            true => routed::load()
                .inspect_err(|e| tracing::info!("shortcut: routed flows take the host's path: {e}"))
                .ok(),
            false => None,
        };
        let (mut ebpf, routed) = match with_conntrack {
            Some(mut ebpf) => {
                let routed = routed::Routed::start(&mut ebpf)?;
                (ebpf, Some(routed))
            }
            None => {
                let mut ebpf = Ebpf::load(OBJECT)
                    .map_err(|e| failed("load", "the shortcut's BPF object", e))?;
                links::load(&mut ebpf, &links::ALL)?;
                (ebpf, None)
            }
        };
        let map = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| failed("find map", name, "not in the BPF object"))
        };
        let sources = map(&mut ebpf, "sources")?;
        let targets = map(&mut ebpf, "targets")?;
        let remotes = map(&mut ebpf, "remotes")?;
        let tunnels = map(&mut ebpf, "tunnels")?;
        let gate = map(&mut ebpf, "gate")?;
        Ok(Shortcut {
            sources: BpfHash::try_from(sources).map_err(|e| failed("open map", "sources", e))?,
            targets: BpfHash::try_from(targets).map_err(|e| failed("open map", "targets", e))?,
            remotes: LpmTrie::try_from(remotes).map_err(|e| failed("open map", "remotes", e))?,
            tunnels: BpfHash::try_from(tunnels).map_err(|e| failed("open map", "tunnels", e))?,
            gate: Array::try_from(gate).map_err(|e| failed("open map", "gate", e))?,
            ebpf,
            attached: HashMap::new(),
            devices: HashMap::new(),
            bridges: HashMap::new(),
            routed,
        })
    }

    /// The conntrack fast path's program on every uplink: each link with an IPv4 address
    /// but loopbacks and `ferry_links` (ferry's bridges, VXLAN devices and host ends).
    /// Nothing to do without the fast path.
    pub fn set_uplinks(&mut self, ferry_links: &[String]) -> Result<(), KernelError> {
        let Some(routed) = self.routed.as_mut() else {
            return Ok(());
        };
        let ferry: Vec<&str> = ferry_links.iter().map(String::as_str).collect();
        routed.set_uplinks(&mut self.ebpf, &ferry)
    }

    /// Open or close the gate for every endpoint.
    pub fn set_gate(&mut self, open: bool) -> Result<(), KernelError> {
        self.gate
            .set(0, u32::from(open), 0)
            .map_err(|e| failed("set", "the shortcut's gate", e))
    }

    /// Carry `e`: its maps' entries, then the program on its host end (so that the
    /// program finds them from its first frame), and `deliver` on its bridge. An entry
    /// already carried is written again (its bridge or address may have changed). An
    /// error from `deliver` alone leaves the entry carried (it is tried again with the
    /// bridge's next entry).
    pub fn add(&mut self, e: &Entry) -> Result<(), KernelError> {
        let name = e.host_end.as_str();
        let host_end = ifindex(name)?;
        let bridge = ifindex(e.bridge.as_str())?;
        if self
            .attached
            .get(name)
            .is_some_and(|old| old.host_end != host_end)
        {
            // The name now belongs to another link: the old one's link is defunct.
            self.remove(name);
        }
        let target = self.write_maps(e, host_end, bridge)?;
        if let Some(old) = self.attached.get_mut(name) {
            if old.target != target {
                let _ = self.targets.remove(&old.target);
                old.target = target;
            }
            let previous = std::mem::replace(&mut old.bridge, e.bridge.to_string());
            if previous != e.bridge.as_str() {
                self.bridge_released(&previous);
                return self.bridge_used(e.bridge.as_str(), bridge);
            }
            return self.deliver_on(e.bridge.as_str(), bridge);
        }
        match links::attach(&mut self.ebpf, SEND, name) {
            Ok(link) => {
                let a = Attached {
                    link,
                    host_end,
                    target,
                    bridge: e.bridge.to_string(),
                };
                self.attached.insert(name.to_string(), a);
                self.bridge_used(e.bridge.as_str(), bridge)
            }
            Err(err) => {
                let _ = self.sources.remove(&host_end);
                let _ = self.targets.remove(&target);
                Err(err)
            }
        }
    }

    /// `e`'s `sources` and `targets` entries (host end and bridge by ifindex); its
    /// `targets` key.
    fn write_maps(
        &mut self,
        e: &Entry,
        host_end: u32,
        bridge: u32,
    ) -> Result<TargetKey, KernelError> {
        let name = e.host_end.as_str();
        let ip = u32::from_ne_bytes(e.ip.octets());
        let source = Source {
            bridge,
            ip,
            mac: e.mac,
            bridge_mac: mac_of(e.bridge.as_str())?,
            gateway: u32::from_ne_bytes(e.gateway.octets()),
            overlay: u32::from(e.overlay),
        };
        self.sources
            .insert(host_end, source, 0)
            .map_err(|err| failed("add to map", format!("sources {name}"), err))?;
        let target = TargetKey { bridge, ip };
        let value = Target {
            host_end,
            mac: e.mac,
            pad: 0,
        };
        if let Err(err) = self.targets.insert(target, value, 0) {
            let _ = self.sources.remove(&host_end);
            return Err(failed("add to map", format!("targets {name}"), err));
        }
        Ok(target)
    }

    /// One more carried endpoint on bridge `name` (ifindex `index`).
    fn bridge_used(&mut self, name: &str, index: u32) -> Result<(), KernelError> {
        self.bridges
            .entry(name.to_string())
            .or_insert(Bridge {
                link: None,
                ifindex: index,
                users: 0,
            })
            .users += 1;
        self.deliver_on(name, index)
    }

    /// `deliver` on the egress of bridge `name`, unless it is on that very link already
    /// (a bridge made again under its name has a new ifindex).
    fn deliver_on(&mut self, name: &str, index: u32) -> Result<(), KernelError> {
        let Some(b) = self.bridges.get_mut(name) else {
            return Ok(());
        };
        if b.link.is_some() && b.ifindex == index {
            return Ok(());
        }
        if let Some(old) = b.link.take() {
            links::detach(&mut self.ebpf, DELIVER, old);
        }
        b.ifindex = index;
        b.link = Some(links::attach(&mut self.ebpf, DELIVER, name)?);
        Ok(())
    }

    /// One carried endpoint fewer on bridge `name`: `deliver` goes with the last.
    fn bridge_released(&mut self, name: &str) {
        let Some(b) = self.bridges.get_mut(name) else {
            return;
        };
        b.users = b.users.saturating_sub(1);
        if b.users > 0 {
            return;
        }
        if let Some(link) = self.bridges.remove(name).and_then(|b| b.link) {
            links::detach(&mut self.ebpf, DELIVER, link);
        }
    }

    /// Stop carrying the endpoint whose host end is `host_end`: its entries first (a
    /// neighbour's frame for it takes the normal path from now on), then its link.
    /// Nothing to do if it is not carried; a link whose veth is gone is just dropped.
    pub fn remove(&mut self, host_end: &str) {
        let Some(a) = self.attached.remove(host_end) else {
            return;
        };
        let _ = self.targets.remove(&a.target);
        let _ = self.sources.remove(&a.host_end);
        links::detach(&mut self.ebpf, SEND, a.link);
        self.bridge_released(&a.bridge);
    }

    /// Take ferry's programs off every one of `links` this shortcut does not carry
    /// there: filters a killed ferryd left (its maps frozen, its gate open), which would
    /// go on carrying traffic behind this ferryd's back (behind a rule in the `user`
    /// chain, past a bridge `--shortcut off` gives everything to).
    pub fn sweep(&self, links: &[String]) {
        for name in links {
            let carried = [
                (SEND, self.attached.contains_key(name)),
                (ARRIVE, self.devices.contains_key(name)),
                (
                    DELIVER,
                    self.bridges.get(name).is_some_and(|b| b.link.is_some()),
                ),
            ];
            for (p, _) in carried.into_iter().filter(|(_, here)| !here) {
                links::take_off(p, name);
            }
        }
        let inbound = |name: &str| self.routed.as_ref().is_some_and(|r| r.carries(name));
        for name in routed::uplinks(&[]).iter().filter(|n| !inbound(n)) {
            links::take_off(INBOUND, name);
        }
    }

    /// The same, with no shortcut loaded: every one of ferry's programs goes, from
    /// `links` and from the uplinks.
    pub fn sweep_unloaded(links: &[String]) {
        for name in links {
            for p in links::ALL {
                links::take_off(p, name);
            }
        }
        for name in routed::uplinks(&[]) {
            links::take_off(INBOUND, &name);
        }
    }

    /// Carry exactly these overlay tunnels: each device's entry and its blocks' routes
    /// written (those no longer wanted removed), `arrive` on each device; a device not
    /// in `want` is let go. A device whose links are missing is skipped with an error
    /// (the others are carried all the same).
    pub fn set_tunnels(&mut self, want: &[Tunnel]) -> Result<(), KernelError> {
        let names: Vec<&str> = want.iter().map(|t| t.device.as_str()).collect();
        let gone: Vec<String> = self
            .devices
            .keys()
            .filter(|d| !names.contains(&d.as_str()))
            .cloned()
            .collect();
        for d in gone {
            self.remove_tunnel(&d);
        }
        let mut first_error = None;
        for t in want {
            if let Err(e) = self.set_tunnel(t) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn set_tunnel(&mut self, t: &Tunnel) -> Result<(), KernelError> {
        let name = t.device.as_str();
        let dev = ifindex(name)?;
        let bridge = ifindex(t.bridge.as_str())?;
        let bridge_mac = mac_of(t.bridge.as_str())?;
        if self.devices.get(name).is_some_and(|d| d.ifindex != dev) {
            self.remove_tunnel(name); // the name is another link's now
        }
        let value = TunnelValue {
            bridge,
            bridge_mac,
            mac: t.mac,
        };
        self.tunnels
            .insert(dev, value, 0)
            .map_err(|e| failed("add to map", format!("tunnels {name}"), e))?;
        let mut keys = Vec::with_capacity(t.remote.len() + t.stay.len());
        // An address that stays here is an entry without a device: the longest prefix
        // wins, so it shadows the block around it.
        let stay = t.stay.iter().map(|b| (b, None));
        for (block, far) in t.remote.iter().map(|(b, m)| (b, Some(m))).chain(stay) {
            let key = RemoteKey {
                prefixlen: 32 + u32::from(block.prefix_len()),
                bridge,
                ip: u32::from_ne_bytes(block.network().octets()),
            };
            let value = match far {
                Some(far) => Remote {
                    tunnel: dev,
                    src: t.mac,
                    dst: *far,
                },
                None => Remote {
                    tunnel: 0,
                    src: [0; 6],
                    dst: [0; 6],
                },
            };
            self.remotes
                .insert(&trie_key(&key), value, 0)
                .map_err(|e| failed("add to map", format!("remotes {name} {block}"), e))?;
            keys.push(key);
        }
        if let Some(d) = self.devices.get_mut(name) {
            for old in d.remotes.iter().filter(|k| !keys.contains(k)) {
                let _ = self.remotes.remove(&trie_key(old));
            }
            d.remotes = keys;
            return Ok(());
        }
        let link = links::attach(&mut self.ebpf, ARRIVE, name)?;
        let d = Device {
            link,
            ifindex: dev,
            remotes: keys,
        };
        self.devices.insert(name.to_string(), d);
        Ok(())
    }

    fn remove_tunnel(&mut self, name: &str) {
        let Some(d) = self.devices.remove(name) else {
            return;
        };
        let _ = self.tunnels.remove(&d.ifindex);
        for k in &d.remotes {
            let _ = self.remotes.remove(&trie_key(k));
        }
        links::detach(&mut self.ebpf, ARRIVE, d.link);
    }
}

/// A link's MAC address (SIOCGIFHWADDR), in this thread's namespace.
fn mac_of(name: &str) -> Result<[u8; 6], KernelError> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| KernelError::sys("open a socket for", name, e))?;
    // SAFETY: ifreq is plain data; a zeroed one is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(failed("read the MAC of", name, "name too long"));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFHWADDR reads the name and writes ifr_hwaddr of `req`, which lives
    // across the call; the socket is open.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(KernelError::sys(
            "read the MAC of",
            name,
            nix::Error::last(),
        ));
    }
    // SAFETY: SIOCGIFHWADDR filled the union's ifru_hwaddr member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}
