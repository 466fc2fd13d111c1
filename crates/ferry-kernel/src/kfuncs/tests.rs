//! Resolving bpf/kfunc_probe.c's calls, without the kernel: ids from a table.

use super::*;

/// The test object, as build.rs compiled it.
const PROBE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kfunc_probe.o"));

fn ids(name: &str) -> Option<u32> {
    match name {
        "bpf_skb_ct_lookup" => Some(70001),
        "bpf_ct_release" => Some(70002),
        _ => None,
    }
}

/// (instruction byte 1, imm) of every call in the program section, in order.
fn calls(elf: &[u8]) -> Vec<(u8, i32)> {
    let file = object::File::parse(elf).unwrap();
    let text = file.section_by_name("classifier").unwrap();
    let (start, len) = text.file_range().unwrap();
    elf[start as usize..(start + len) as usize]
        .chunks(8)
        .filter(|i| i[0] == CALL)
        .map(|i| (i[1], i32::from_le_bytes(i[4..8].try_into().unwrap())))
        .collect()
}

fn btf(elf: &[u8]) -> &[u8] {
    let file = object::File::parse(elf).unwrap();
    let (start, len) = file.section_by_name(".BTF").unwrap().file_range().unwrap();
    &elf[start as usize..(start + len) as usize]
}

/// Whether the BTF has a FUNC of extern linkage, and a DATASEC named `.ksyms`.
fn externs(b: &[u8]) -> (bool, bool) {
    let (types, strings) = btf_types(b).unwrap();
    let func = types
        .iter()
        .any(|t| t.kind == KIND_FUNC && t.vlen as u32 == LINKAGE_EXTERN);
    let ksyms = types
        .iter()
        .any(|t| t.kind == KIND_DATASEC && name_is(b, strings, t.name, ".ksyms"));
    (func, ksyms)
}

#[test]
fn each_kfunc_call_gets_the_kernels_id_and_the_btf_loses_its_externs() {
    // As clang leaves it: two calls to -1 relocated by name, externs in the BTF.
    assert_eq!(calls(PROBE), vec![(0x10, -1), (0x10, -1)]);
    assert_eq!(externs(btf(PROBE)), (true, true));

    let resolved = resolve_with(PROBE, ids).unwrap();
    let out = resolved.bytes();
    assert_eq!(out.len(), PROBE.len(), "rewritten in place");
    assert_eq!(calls(out), vec![(0x20, 70001), (0x20, 70002)]);
    assert_eq!(externs(btf(out)), (false, false));
    // The rest of the BTF walks as before: the same types, in the same places.
    let (before, _) = btf_types(btf(PROBE)).unwrap();
    let (after, _) = btf_types(btf(out)).unwrap();
    assert_eq!(
        before.iter().map(|t| t.at).collect::<Vec<_>>(),
        after.iter().map(|t| t.at).collect::<Vec<_>>()
    );
}

#[test]
fn a_kfunc_the_kernel_lacks_is_named() {
    let Err(err) = resolve_with(PROBE, |name| (name != "bpf_ct_release").then_some(1)) else {
        panic!("resolved without bpf_ct_release");
    };
    assert!(
        err.to_string().contains("has no function bpf_ct_release"),
        "{err}"
    );
}

#[test]
fn what_is_not_an_object_is_refused() {
    let Err(err) = resolve_with(b"not an ELF", ids) else {
        panic!("resolved what is not an object");
    };
    assert!(err.to_string().contains("not an ELF object"), "{err}");
}
