//! The verifier takes bpf/kfunc_probe.c (conntrack kfuncs, a CO-RE read of what one
//! returns) once `kfuncs::resolve` has rewritten it, and aya cannot load it as clang left
//! it. Loads only: nothing is attached.

// Only its root check: the rest serves the other test files.
#[allow(dead_code)]
mod common;

use aya::programs::SchedClassifier;
use ferry_kernel::kfuncs;

const PROBE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kfunc_probe.o"));

#[test]
fn the_verifier_takes_an_object_with_kfunc_calls_once_resolved() {
    if !common::privileged("kfuncs") {
        return;
    }
    let as_built = aya::EbpfLoader::new().load(PROBE).map(|_| ());
    assert!(
        as_built.is_err(),
        "aya 0.14 loads kfunc calls by itself now: drop kfuncs"
    );

    let kernel = aya::Btf::from_sys_fs().expect("the kernel's BTF (/sys/kernel/btf/vmlinux)");
    let resolved = kfuncs::resolve(PROBE, &kernel).unwrap();
    let mut ebpf = aya::EbpfLoader::new()
        .load(resolved.bytes())
        .expect("aya parses the resolved object and the kernel takes its BTF");
    let probe: &mut SchedClassifier = ebpf.program_mut("probe").unwrap().try_into().unwrap();
    probe.load().expect("the verifier takes the kfunc calls");
}
