//! nftables in process, through libnftables (the library the `nft` tool is built on).
//!
//! One script is one transaction: libnftables sends the whole batch to the kernel,
//! which applies all of it or none of it. Loading the library at run time (dlopen of
//! `libnftables.so.1`, from Debian's `libnftables1`, which `nftables` depends on) keeps
//! the build free of a -dev package and saves the fork+exec of an `nft` child on every
//! change. No Rust crate speaks nftables' netlink with sets, maps and concatenations
//! well enough; libnftables does, and its input is the same text an admin can read.
//!
//! A context is not thread-safe: one lives behind a mutex and every call runs on the
//! blocking pool. The library binds its netlink socket in the calling thread's network
//! namespace, which for ferryd is always its own (nothing setns()es pool threads).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;

use libloading::{Library, Symbol};

use crate::KernelError;

const NFT_CTX_DEFAULT: u32 = 0;
/// `NFT_CTX_OUTPUT_HANDLE`: listings show `# handle N`, so a rule can be deleted.
const NFT_CTX_OUTPUT_HANDLE: u32 = 1 << 3;

struct Ctx(*mut c_void);
// The context is only touched under the mutex, one thread at a time.
unsafe impl Send for Ctx {}

type NewFn = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type SetFlagsFn = unsafe extern "C" fn(*mut c_void, u32);
type GetBufFn = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type FreeFn = unsafe extern "C" fn(*mut c_void);

/// The library and the entry points ferry uses, resolved once.
pub struct Nft {
    _lib: Library,
    run: RunFn,
    get_out: GetBufFn,
    get_err: GetBufFn,
    free: FreeFn,
    ctx: Mutex<Ctx>,
}

fn err(message: impl Into<String>) -> KernelError {
    KernelError::Failed {
        action: "apply",
        object: "nftables ruleset".into(),
        message: message.into(),
        errno: None,
    }
}

/// A C function of `lib`, copied out of its Symbol (valid while `lib` is loaded).
///
/// # Safety
/// `T` must be the symbol's C signature.
unsafe fn sym<T: Copy>(lib: &Library, name: &[u8]) -> Result<T, KernelError> {
    // SAFETY: the caller vouches for the signature.
    let s: Symbol<T> = unsafe { lib.get(name) }.map_err(|e| err(e.to_string()))?;
    Ok(*s)
}

impl Nft {
    pub fn open() -> Result<Nft, KernelError> {
        // SAFETY: loading a system library whose initialisers have no preconditions.
        let lib = unsafe { Library::new("libnftables.so.1") }
            .map_err(|e| err(format!("load libnftables.so.1 (install nftables): {e}")))?;
        // SAFETY: the symbols have these C signatures (nftables/libnftables.h), and
        // the context is set up before anyone else can see it.
        unsafe {
            let new: NewFn = sym(&lib, b"nft_ctx_new\0")?;
            let out: CtxFn = sym(&lib, b"nft_ctx_buffer_output\0")?;
            let errb: CtxFn = sym(&lib, b"nft_ctx_buffer_error\0")?;
            let flags: SetFlagsFn = sym(&lib, b"nft_ctx_output_set_flags\0")?;
            let ctx = new(NFT_CTX_DEFAULT);
            if ctx.is_null() {
                return Err(err("nft_ctx_new failed"));
            }
            out(ctx);
            errb(ctx);
            flags(ctx, NFT_CTX_OUTPUT_HANDLE);
            Ok(Nft {
                run: sym(&lib, b"nft_run_cmd_from_buffer\0")?,
                get_out: sym(&lib, b"nft_ctx_get_output_buffer\0")?,
                get_err: sym(&lib, b"nft_ctx_get_error_buffer\0")?,
                free: sym(&lib, b"nft_ctx_free\0")?,
                _lib: lib,
                ctx: Mutex::new(Ctx(ctx)),
            })
        }
    }

    /// Run a script as one transaction; returns what it printed (for `list`).
    pub fn run(&self, script: &str) -> Result<String, KernelError> {
        let c = CString::new(script).map_err(|_| err("script contains a NUL byte"))?;
        let ctx = self.ctx.lock().map_err(|_| err("nft context poisoned"))?;
        let text = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: libnftables returns a NUL-terminated buffer it owns.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        // SAFETY: ctx is a live context owned by self and used under its mutex; the
        // buffers returned stay valid until the next call on it, and are copied first.
        let (rc, out, msg) = unsafe {
            let rc = (self.run)(ctx.0, c.as_ptr());
            (rc, text((self.get_out)(ctx.0)), text((self.get_err)(ctx.0)))
        };
        if rc != 0 {
            let first = msg.lines().next().unwrap_or("failed").to_string();
            return Err(err(if first.is_empty() {
                msg
            } else {
                first_with_context(&msg, first)
            }));
        }
        Ok(out)
    }
}

/// nft's error text is "file:line:col: Error: what\n<the line>\n<carets>": keep the
/// message and the offending command.
fn first_with_context(msg: &str, first: String) -> String {
    match msg.lines().nth(1) {
        Some(cmd) => format!("{first} (in: {})", cmd.trim()),
        None => first,
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        if let Ok(ctx) = self.ctx.lock() {
            // SAFETY: the context was made by nft_ctx_new and is freed once.
            unsafe { (self.free)(ctx.0) }
        }
    }
}
