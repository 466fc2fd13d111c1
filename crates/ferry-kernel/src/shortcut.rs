//! The same-network shortcut's kernel half: ferry's tc/BPF program (bpf/shortcut.c,
//! built by build.rs), its maps, and one link per endpoint's veth host end.
//!
//! Design note. The program runs at the ingress of each host end (what a sandbox sends)
//! and hands a frame for a neighbour on the same bridge straight to that neighbour's
//! namespace; bpf/shortcut.c says exactly when. Three maps feed it:
//!
//! - `sources`, by host end ifindex: the endpoint's bridge ifindex, IPv4 address and MAC
//!   (the sender's anti-spoofing check, and which bridge it is on);
//! - `targets`, by (bridge ifindex, IPv4 address): the neighbour's host end and MAC;
//! - `gate`: open (1) or closed (0) for everything.
//!
//! The links are TCX links owned by this process (kernels since 6.6; older ones get a
//! clsact qdisc and a cls_bpf filter, which aya also takes back on drop): when ferryd
//! exits or dies, the kernel detaches every program and traffic takes the normal path,
//! which is always correct, only slower. Nothing of the shortcut outlives ferryd, so a
//! crash leaves nothing stale, and a start attaches it afresh from the store. A veth
//! deleted with its link still held just leaves a defunct link, dropped at [`Shortcut::remove`].
//!
//! Interface names are resolved to ifindexes in the calling thread's network namespace:
//! ferryd's own, where every host end and bridge lives.

use std::collections::HashMap;

use aya::maps::{Array, HashMap as BpfHash, MapData};
use aya::programs::tc::{self, SchedClassifierLinkId, TcAttachType};
use aya::programs::SchedClassifier;
use aya::Ebpf;
use ferry_core::shortcut::Entry;

use crate::KernelError;

/// The object build.rs compiled, aligned as aya's ELF parser wants it.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shortcut.o"));

/// `sources`' value: must match `struct source` in bpf/shortcut.c.
#[repr(C)]
#[derive(Clone, Copy)]
struct Source {
    bridge: u32,
    ip: u32,
    mac: [u8; 6],
    pad: u16,
}

/// `targets`' key and value: `struct target_key`, `struct target`.
#[repr(C)]
#[derive(Clone, Copy)]
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

// SAFETY: plain #[repr(C)] integers and byte arrays, padding spelled out: every bit
// pattern is valid and none is uninitialised.
unsafe impl aya::Pod for Source {}
unsafe impl aya::Pod for TargetKey {}
unsafe impl aya::Pod for Target {}

/// The loaded program, its maps, and the endpoints it is attached to.
pub struct Shortcut {
    ebpf: Ebpf,
    sources: BpfHash<MapData, u32, Source>,
    targets: BpfHash<MapData, TargetKey, Target>,
    gate: Array<MapData, u32>,
    /// By host end name: the link, and the keys written for it.
    attached: HashMap<String, Attached>,
}

struct Attached {
    link: SchedClassifierLinkId,
    host_end: u32,
    target: TargetKey,
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
    /// Load the program and its maps (the gate closed). Fails on a kernel without BPF,
    /// without `bpf_redirect_peer` (5.10), or without the privileges to load it.
    pub fn load() -> Result<Shortcut, KernelError> {
        let mut ebpf =
            Ebpf::load(OBJECT).map_err(|e| failed("load", "the shortcut's BPF object", e))?;
        let prog: &mut SchedClassifier = program(&mut ebpf)?;
        prog.load()
            .map_err(|e| failed("load", "the shortcut's BPF program", e))?;
        let map = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| failed("find map", name, "not in the BPF object"))
        };
        let sources = map(&mut ebpf, "sources")?;
        let targets = map(&mut ebpf, "targets")?;
        let gate = map(&mut ebpf, "gate")?;
        Ok(Shortcut {
            sources: BpfHash::try_from(sources).map_err(|e| failed("open map", "sources", e))?,
            targets: BpfHash::try_from(targets).map_err(|e| failed("open map", "targets", e))?,
            gate: Array::try_from(gate).map_err(|e| failed("open map", "gate", e))?,
            ebpf,
            attached: HashMap::new(),
        })
    }

    /// Open or close the gate for every endpoint.
    pub fn set_gate(&mut self, open: bool) -> Result<(), KernelError> {
        self.gate
            .set(0, u32::from(open), 0)
            .map_err(|e| failed("set", "the shortcut's gate", e))
    }

    /// Carry `e`: its maps' entries, then the program on its host end (so that the
    /// program never runs for an endpoint it has no entry for). An entry already carried
    /// is written again (its bridge or address may have changed).
    pub fn add(&mut self, e: &Entry) -> Result<(), KernelError> {
        let name = e.host_end.as_str();
        let host_end = ifindex(name)?;
        let bridge = ifindex(e.bridge.as_str())?;
        let ip = u32::from_ne_bytes(e.ip.octets());
        let target = TargetKey { bridge, ip };
        if let Some(old) = self.attached.get(name) {
            if old.host_end != host_end {
                // The name now belongs to another link: the old one's link is defunct.
                self.remove(name);
            }
        }
        self.sources
            .insert(
                host_end,
                Source {
                    bridge,
                    ip,
                    mac: e.mac,
                    pad: 0,
                },
                0,
            )
            .map_err(|err| failed("add to map", format!("sources {name}"), err))?;
        let value = Target {
            host_end,
            mac: e.mac,
            pad: 0,
        };
        if let Err(err) = self.targets.insert(target, value, 0) {
            let _ = self.sources.remove(&host_end);
            return Err(failed("add to map", format!("targets {name}"), err));
        }
        if let Some(old) = self.attached.get_mut(name) {
            if old.target.bridge != bridge || old.target.ip != ip {
                let _ = self.targets.remove(&old.target);
                old.target = target;
            }
            return Ok(());
        }
        match attach(program(&mut self.ebpf)?, name) {
            Ok(link) => {
                let a = Attached {
                    link,
                    host_end,
                    target,
                };
                self.attached.insert(name.to_string(), a);
                Ok(())
            }
            Err(err) => {
                let _ = self.sources.remove(&host_end);
                let _ = self.targets.remove(&target);
                Err(err)
            }
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
        if let Ok(prog) = program(&mut self.ebpf) {
            let _ = prog.detach(a.link);
        }
    }

    /// The host ends carried now.
    pub fn carried(&self) -> impl Iterator<Item = &str> {
        self.attached.keys().map(String::as_str)
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, KernelError> {
    ebpf.program_mut("shortcut")
        .ok_or_else(|| failed("find program", "shortcut", "not in the BPF object"))?
        .try_into()
        .map_err(|e| failed("find program", "shortcut", e))
}

/// Attach at `name`'s ingress: a TCX link where the kernel has them, else a cls_bpf
/// filter under a clsact qdisc (added if missing).
fn attach(prog: &mut SchedClassifier, name: &str) -> Result<SchedClassifierLinkId, KernelError> {
    match prog.attach(name, TcAttachType::Ingress) {
        Ok(link) => Ok(link),
        Err(first) => {
            if tc::qdisc_add_clsact(name).is_err() {
                return Err(failed("attach the shortcut to", name, first));
            }
            prog.attach(name, TcAttachType::Ingress)
                .map_err(|e| failed("attach the shortcut to", name, e))
        }
    }
}
