//! The shortcut's conntrack fast path (bpf/conntrack.h): routed TCP flows — a published
//! port's, masquerade's — carried past the host's IPv4 stack once established, their NAT
//! done by the program from the flow's conntrack entry.
//!
//! Design note. The program calls conntrack's kfuncs, so the object (`shortcut_ct.o`) is
//! loaded through [`crate::kfuncs::resolve`] and only where the running kernel's own BTF
//! has them (conntrack built in, as on this project's VM). On a kernel that builds
//! conntrack as a module (Debian's) the kfuncs live in the module's BTF, which aya 0.14
//! cannot pass with the program; there, and wherever the verifier refuses the object,
//! [`load`] fails and the shortcut loads its plain object: routed traffic takes the host's
//! path, as before. Three things besides the object:
//!
//! - the namespace's established timeout, which each carried segment renews, is given to
//!   the program at load (`established_ms`);
//! - `ferry_inbound` sits on the ingress of the uplinks: every link of the namespace with
//!   an IPv4 address that is not ferry's and not a loopback ([`uplinks`]); ferryd names its
//!   own links, and asks again at its periodic check, so that a link added later is
//!   carried from then on. A link that goes takes its filter with it;
//! - a flow is carried only once its entry is liberal, and the program names each flow
//!   that is not yet in the ring buffer `flows`, once a second at most (so a marking that
//!   failed is tried again). A thread of its own ([`Marker`]) reads the ring and marks
//!   each named flow liberal (crate::conntrack::mark_liberal), in the namespace the
//!   shortcut was loaded in; it ends with the shortcut.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use aya::programs::tc::SchedClassifierLinkId;
use aya::{Btf, Ebpf, EbpfLoader};

use super::links::{self, INBOUND};
use super::{failed, ifindex};
use crate::conntrack::{mark_liberal, TcpFlow};
use crate::KernelError;

/// The object build.rs compiled with -DCONNTRACK.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shortcut_ct.o"));

const ESTABLISHED: &str = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established";

/// Load the object with the fast path, its programs into the kernel; fails where the
/// kernel's own BTF lacks a kfunc it calls, or the verifier refuses it.
pub(super) fn load() -> Result<Ebpf, KernelError> {
    let btf = Btf::from_sys_fs().map_err(|e| failed("read", "the kernel's BTF", e))?;
    let resolved = crate::kfuncs::resolve(OBJECT, &btf)?;
    let seconds: u32 = std::fs::read_to_string(ESTABLISHED)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(432_000);
    let established_ms = seconds.saturating_mul(1000);
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("established_ms", &established_ms, true)
        .load(resolved.bytes())
        .map_err(|e| failed("load", "the shortcut's conntrack object", e))?;
    links::load(&mut ebpf, &links::WITH_CONNTRACK)?;
    Ok(ebpf)
}

/// The fast path's state beside the shortcut's: the uplinks carrying `ferry_inbound`, and
/// the thread marking named flows liberal.
pub(super) struct Routed {
    /// By link name: its ifindex when attached, and the filter.
    uplinks: HashMap<String, (u32, SchedClassifierLinkId)>,
    _marker: Marker,
}

impl Routed {
    /// Takes the ring buffer out of `ebpf` and starts its reader.
    pub(super) fn start(ebpf: &mut Ebpf) -> Result<Routed, KernelError> {
        let map = ebpf
            .take_map("flows")
            .ok_or_else(|| failed("find map", "flows", "not in the BPF object"))?;
        let ring = RingBuf::try_from(map).map_err(|e| failed("open map", "flows", e))?;
        Ok(Routed {
            uplinks: HashMap::new(),
            _marker: Marker::start(ring)?,
        })
    }

    /// `ferry_inbound` on every uplink (those of [`uplinks`] not in `ferry`), once per
    /// link (again on a link made anew under its name). Every link is tried; the first
    /// failure is returned.
    pub(super) fn set_uplinks(
        &mut self,
        ebpf: &mut Ebpf,
        ferry: &[&str],
    ) -> Result<(), KernelError> {
        let mut first_error = None;
        for name in uplinks(ferry) {
            let Ok(index) = ifindex(&name) else { continue };
            if self.uplinks.get(&name).is_some_and(|(i, _)| *i == index) {
                continue;
            }
            if let Some((_, old)) = self.uplinks.remove(&name) {
                links::detach(ebpf, INBOUND, old);
            }
            match links::attach(ebpf, INBOUND, &name) {
                Ok(link) => {
                    tracing::debug!("shortcut: routed flows in through {name} carried");
                    self.uplinks.insert(name, (index, link));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether `ferry_inbound` of this shortcut's sits on link `name`.
    pub(super) fn carries(&self, name: &str) -> bool {
        self.uplinks.contains_key(name)
    }
}

/// The links of the calling thread's namespace with an IPv4 address, but loopbacks and
/// those named in `ferry`: where routed traffic comes in.
pub(super) fn uplinks(ferry: &[&str]) -> Vec<String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    let mut names: Vec<String> = addrs
        .filter(|a| {
            a.address
                .as_ref()
                .is_some_and(|s| s.as_sockaddr_in().is_some())
        })
        .filter(|a| {
            !a.flags
                .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        })
        .map(|a| a.interface_name)
        .filter(|n| !ferry.contains(&n.as_str()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A flow as the program names it (`struct flow_key` in bpf/conntrack.h): the original
/// direction's addresses and ports, in network order.
pub(crate) fn parse_flow(bytes: &[u8]) -> Option<TcpFlow> {
    let b: &[u8; 12] = bytes.get(..12)?.try_into().ok()?;
    let addr = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
    Some(TcpFlow {
        src: addr(0),
        dst: addr(4),
        sport: u16::from_be_bytes([b[8], b[9]]),
        dport: u16::from_be_bytes([b[10], b[11]]),
    })
}

/// The thread that marks the flows the program names liberal; stopped when dropped.
struct Marker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Marker {
    fn start(mut ring: RingBuf<MapData>) -> Result<Marker, KernelError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ferry-liberal".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    wait_readable(&ring);
                    while let Some(item) = ring.next() {
                        mark(&item);
                    }
                }
            })
            .map_err(|e| KernelError::io("start", "the conntrack marker's thread", e))?;
        Ok(Marker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join(); // it wakes within WAIT
        }
    }
}

/// How long the marker waits for the ring before it looks at its stop flag again.
const WAIT: u16 = 500;

fn wait_readable(ring: &RingBuf<MapData>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(WAIT));
}

/// Marks one named flow liberal. A flow gone meanwhile (ENOENT) is no matter; any other
/// failure leaves it on the host's path (logged).
fn mark(record: &[u8]) {
    let Some(flow) = parse_flow(record) else {
        return;
    };
    match mark_liberal(&flow) {
        Ok(()) => tracing::trace!("shortcut: {flow} carried from now on"),
        Err(e) if e.errno() == Some(libc::ENOENT) => {}
        Err(e) => tracing::debug!("shortcut: {flow} stays on the host's path: {e}"),
    }
}

#[cfg(test)]
mod tests;
