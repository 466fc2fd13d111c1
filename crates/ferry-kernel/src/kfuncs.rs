//! Calls to kernel functions (kfuncs) in a BPF object, made loadable by aya.
//!
//! clang compiles a call to an `extern … __ksym` function as `call -1` with a relocation
//! against an undefined symbol, and describes the function in the object's BTF as a FUNC
//! of extern linkage listed in a `.ksyms` DATASEC. libbpf resolves both; aya 0.14 does
//! not: its parser stops at the DATASEC ("UnknownSectionSize .ksyms"), and it would take
//! the call for one within the object. [`resolve`] rewrites a copy of the object, byte for
//! byte in place, so that aya loads it as it is, each kfunc resolved against the running
//! kernel's BTF:
//!
//! - a call relocated against an undefined symbol becomes a kfunc call (src_reg
//!   `BPF_PSEUDO_KFUNC_CALL`, imm the function's id in vmlinux's BTF): aya sees neither a
//!   call of its own nor a map reference there and leaves it;
//! - a FUNC of extern linkage becomes static (the kernel takes static and global only);
//! - the `.ksyms` DATASEC becomes a STRUCT of as many anonymous ints at offset 0: the same
//!   bytes, so no offset in the BTF moves, and a type the kernel accepts.
//!
//! The verifier checks each call against the kernel's own prototype, not the object's;
//! CO-RE reads of what a kfunc returns are aya's ordinary relocations. A kfunc the kernel
//! lacks is an error that names it; so is one a module defines (Debian's kernels build
//! nf_conntrack, and so its kfuncs, as a module): calling those needs the module's BTF
//! passed with the program (`fd_array`), which aya 0.14 does not do. What needs this: a conntrack fast path
//! (docs/PERFORMANCE.md); bpf/kfunc_probe.c is the tests' object.

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind};

use crate::KernelError;

const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL | BPF_K
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_STRUCT: u32 = 4;
const KIND_FUNC: u32 = 12;
const KIND_DATASEC: u32 = 15;
const LINKAGE_EXTERN: u32 = 2;

fn bad(what: impl Into<String>) -> KernelError {
    KernelError::other("resolve kfuncs in", "a BPF object", what)
}

/// A rewritten object, aligned as aya's ELF parser wants it (it reads headers in place).
pub struct Resolved {
    words: Vec<u64>,
    len: usize,
}

impl Resolved {
    fn new(bytes: &[u8]) -> Resolved {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Resolved {
            words,
            len: bytes.len(),
        }
    }

    /// The object, for `aya::EbpfLoader::load`.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

/// `elf` with every kfunc call resolved against `kernel` (vmlinux's BTF) and its BTF made
/// acceptable to aya and the kernel.
pub fn resolve(elf: &[u8], kernel: &aya::Btf) -> Result<Resolved, KernelError> {
    resolve_with(elf, |name| {
        kernel
            .id_by_type_name_kind(name, aya_obj::btf::BtfKind::Func)
            .ok()
    })
}

/// [`resolve`] with the kernel's function ids from `id_of`.
pub fn resolve_with(
    elf: &[u8],
    id_of: impl Fn(&str) -> Option<u32>,
) -> Result<Resolved, KernelError> {
    let file = object::File::parse(elf).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    let mut out = elf.to_vec();
    patch_calls(&file, &mut out, id_of)?;
    if let Some(btf) = file.section_by_name(".BTF") {
        let (start, len) = btf.file_range().ok_or_else(|| bad(".BTF has no bytes"))?;
        let range = start as usize..(start + len) as usize;
        patch_btf(&mut out[range])?;
    }
    Ok(Resolved::new(&out))
}

/// Each call in a program section relocated against an undefined symbol becomes a kfunc
/// call to the kernel's function of that name.
fn patch_calls(
    file: &object::File,
    out: &mut [u8],
    id_of: impl Fn(&str) -> Option<u32>,
) -> Result<(), KernelError> {
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let Some((start, _)) = section.file_range() else {
            continue;
        };
        for (offset, rel) in section.relocations() {
            let RelocationTarget::Symbol(index) = rel.target() else {
                continue;
            };
            let symbol = file
                .symbol_by_index(index)
                .map_err(|e| bad(format!("relocation at {offset:#x}: {e}")))?;
            if !symbol.is_undefined() {
                continue;
            }
            let name = symbol.name().map_err(|e| bad(e.to_string()))?;
            let id = id_of(name).ok_or_else(|| {
                bad(format!(
                    "the kernel's own BTF has no function {name} (a kfunc: absent, or in a \
                     module's BTF, which aya 0.14 cannot pass to the verifier)"
                ))
            })?;
            let at = start as usize + offset as usize;
            let insn = out
                .get_mut(at..at + 8)
                .ok_or_else(|| bad(format!("{name}: relocation past its section")))?;
            if insn[0] != CALL {
                return Err(bad(format!("{name} is used other than by a call")));
            }
            insn[1] = (insn[1] & 0x0f) | (BPF_PSEUDO_KFUNC_CALL << 4);
            insn[4..8].copy_from_slice(&id.to_le_bytes());
        }
    }
    Ok(())
}

/// One BTF type in the section: its id, where its record starts, its name's offset,
/// kind and vlen.
struct BtfType {
    id: u32,
    at: usize,
    name: u32,
    kind: u32,
    vlen: usize,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, KernelError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| bad(format!("BTF ends before offset {at}")))
}

/// The bytes a type's record takes after its 12-byte head.
fn tail(kind: u32, vlen: usize) -> Result<usize, KernelError> {
    Ok(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
        2 | 7..=12 | 16 | 18 => 0,
        other => return Err(bad(format!("BTF kind {other} unknown"))),
    })
}

/// Every type of the BTF section `b`, in order, and where its strings start.
fn btf_types(b: &[u8]) -> Result<(Vec<BtfType>, usize), KernelError> {
    if b.get(0..2) != Some(&BTF_MAGIC.to_le_bytes()) {
        return Err(bad("no little-endian BTF magic"));
    }
    let hdr_len = u32_at(b, 4)? as usize;
    let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
    let strings = hdr_len + u32_at(b, 16)? as usize;
    let (mut at, end) = (hdr_len + type_off, hdr_len + type_off + type_len);
    let mut types = Vec::new();
    while at < end {
        let info = u32_at(b, at + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let id = types.len() as u32 + 1;
        types.push(BtfType {
            id,
            at,
            name: u32_at(b, at)?,
            kind,
            vlen,
        });
        at += 12 + tail(kind, vlen)?;
    }
    Ok((types, strings))
}

fn name_is(b: &[u8], strings: usize, name: u32, want: &str) -> bool {
    let start = strings + name as usize;
    b.get(start..start + want.len() + 1)
        .is_some_and(|s| &s[..want.len()] == want.as_bytes() && s[want.len()] == 0)
}

/// Extern FUNCs become static; the `.ksyms` DATASEC a STRUCT of anonymous ints.
fn patch_btf(b: &mut [u8]) -> Result<(), KernelError> {
    let (types, strings) = btf_types(b)?;
    let int = types.iter().find(|t| t.kind == KIND_INT).map(|t| t.id);
    for t in &types {
        if t.kind == KIND_FUNC && t.vlen as u32 == LINKAGE_EXTERN {
            let info = u32_at(b, t.at + 4)? & !0xffff;
            b[t.at + 4..t.at + 8].copy_from_slice(&info.to_le_bytes());
        }
        if t.kind == KIND_DATASEC && name_is(b, strings, t.name, ".ksyms") {
            let int = int.ok_or_else(|| bad("BTF with .ksyms but no INT type"))?;
            let info = (KIND_STRUCT << 24) | t.vlen as u32;
            b[t.at + 4..t.at + 8].copy_from_slice(&info.to_le_bytes());
            b[t.at + 8..t.at + 12].copy_from_slice(&8u32.to_le_bytes()); // room for any int
            for i in 0..t.vlen {
                let m = t.at + 12 + 12 * i;
                b[m..m + 4].copy_from_slice(&0u32.to_le_bytes()); // anonymous
                b[m + 4..m + 8].copy_from_slice(&int.to_le_bytes());
                b[m + 8..m + 12].copy_from_slice(&0u32.to_le_bytes()); // at bit 0
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
