//! Builds ferry's tc/BPF programs (bpf/shortcut.c) with clang into OUT_DIR, twice: as
//! they are, and with the conntrack fast path (-DCONNTRACK, bpf/conntrack.h); the crate
//! embeds both objects (src/shortcut.rs) and loads the second where the kernel can. Also bpf/kfunc_probe.c, which only the tests of
//! src/kfuncs.rs use. clang is Debian's `clang`, which scripts/setup installs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=bpf/conntrack.h");
    println!("cargo:rerun-if-changed=bpf/ct_kfuncs.h");
    compile("bpf/shortcut.c", &out.join("shortcut.o"), &[]);
    compile(
        "bpf/shortcut.c",
        &out.join("shortcut_ct.o"),
        &["-DCONNTRACK"],
    );
    compile("bpf/kfunc_probe.c", &out.join("kfunc_probe.o"), &[]);
}

fn compile(src: &str, obj: &Path, defines: &[&str]) {
    println!("cargo:rerun-if-changed={src}");
    // <asm/types.h>, which the kernel's UAPI headers include, lives under the host's
    // multiarch directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let status = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(defines)
        .args(["-c", src, "-o"])
        .arg(obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to build {src} ({s})"),
        Err(e) => panic!(
            "cannot run clang to build {src} ({e}): it builds ferry's tc/BPF program; \
             install Debian's `clang` (scripts/setup does)"
        ),
    }
}
