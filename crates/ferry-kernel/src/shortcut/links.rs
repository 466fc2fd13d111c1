//! Putting the shortcut's programs on links: cls_bpf filters under a clsact qdisc, over
//! netlink.
//!
//! Not TCX links, though the kernel has them: every TCX attach and detach waits for an
//! RCU grace period while holding the RTNL lock (`tcx_entry_sync`), measured at 12 ms
//! and 9 ms per device on this project's VM, which would make an endpoint's attach and
//! detach several times slower and stall every other netlink request behind it. A
//! clsact qdisc and a cls_bpf filter cost 52 µs, their removal 12 µs (2026-12-05,
//! docs/PERFORMANCE.md).
//!
//! A filter is the kernel's, not the process's: it outlives ferryd, keeping the program
//! and the maps it was loaded with, frozen as they were. So a starting ferryd replaces
//! the filter a previous one left on each of its links (each filter has the same
//! priority and handle, and carries the program's name), takes it off the links of
//! ferry's it does not carry ([`take_off`]), and a stopping one closes the
//! gate first (crate::shortcut::Shortcut::set_gate): with ferryd stopped the bridge and
//! the host carry everything. A ferryd killed outright leaves the shortcut as it was, which
//! delivers only what the bridge would have delivered then.

use aya::programs::tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::Ebpf;

use crate::KernelError;

/// The programs: on host ends' ingress, on overlays' VXLAN devices' ingress, and on
/// bridges' egress; with the conntrack fast path, on uplinks' ingress; each with where it
/// sits.
pub(super) const SEND: Program = Program("shortcut", TcAttachType::Ingress);
pub(super) const ARRIVE: Program = Program("arrive", TcAttachType::Ingress);
pub(super) const DELIVER: Program = Program("deliver", TcAttachType::Egress);
pub(super) const INBOUND: Program = Program("ferry_inbound", TcAttachType::Ingress);

/// A program of the object, by name, and the side of a link it is attached to.
#[derive(Clone, Copy)]
pub(super) struct Program(&'static str, TcAttachType);

/// ferry's filters' place on a link's ingress or egress: first, so that nothing before it
/// has decided the frame, and the same every time, so a new ferryd's replaces an old one's.
const PRIORITY: u16 = 1;
const HANDLE: TcHandle = TcHandle::new(0, 0xfe77);

/// Load `programs` of `ebpf` into the kernel.
pub(super) fn load(ebpf: &mut Ebpf, programs: &[Program]) -> Result<(), KernelError> {
    for &Program(name, _) in programs {
        program(ebpf, name)?
            .load()
            .map_err(|e| super::failed("load", format!("BPF program {name}"), e))?;
    }
    Ok(())
}

/// Put `prog` on link `name`, in place of whatever a previous ferryd put there.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    Program(prog_name, side): Program,
    name: &str,
) -> Result<SchedClassifierLinkId, KernelError> {
    let prog = program(ebpf, prog_name)?;
    // Already there on every link but a new one: EEXIST, which is fine.
    let _ = tc::qdisc_add_clsact(name);
    let add = |prog: &mut SchedClassifier| {
        let options = NlOptions {
            priority: PRIORITY,
            handle: HANDLE,
            ..NlOptions::default()
        };
        prog.attach_with_options(name, side, TcAttachOptions::Netlink(options))
    };
    match add(prog) {
        Ok(link) => Ok(link),
        Err(first) => {
            // A previous ferryd's filter holds the place: take it off, then put ours.
            if tc::qdisc_detach_program(name, side, prog_name).is_err() {
                return Err(super::failed("attach the shortcut to", name, first));
            }
            add(prog).map_err(|e| super::failed("attach the shortcut to", name, e))
        }
    }
}

/// Take `prog`'s filter `link` off (a link whose device is gone is only let go).
pub(super) fn detach(ebpf: &mut Ebpf, Program(prog_name, _): Program, link: SchedClassifierLinkId) {
    if let Ok(prog) = program(ebpf, prog_name) {
        let _ = prog.detach(link);
    }
}

/// The programs of the plain object, each on its side of a link.
pub(super) const ALL: [Program; 3] = [SEND, ARRIVE, DELIVER];

/// The programs of the object with the conntrack fast path.
pub(super) const WITH_CONNTRACK: [Program; 4] = [SEND, ARRIVE, DELIVER, INBOUND];

/// Take every filter of `prog` off link `name`, whoever put it there: what a previous
/// ferryd left on a link this one does not carry. Nothing there (no such link, no clsact
/// qdisc, no such filter) is not an error.
pub(super) fn take_off(Program(prog_name, side): Program, name: &str) {
    let _ = tc::qdisc_detach_program(name, side, prog_name);
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier, KernelError> {
    ebpf.program_mut(name)
        .ok_or_else(|| super::failed("find program", name, "not in the BPF object"))?
        .try_into()
        .map_err(|e| super::failed("find program", name, e))
}
