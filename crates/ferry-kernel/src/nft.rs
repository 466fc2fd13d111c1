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

struct Ctx(*mut c_void);
// The context is only touched under the mutex, one thread at a time.
unsafe impl Send for Ctx {}

pub struct Nft {
    lib: Library,
    ctx: Mutex<Ctx>,
}

type NewFn = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetBufFn = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type FreeFn = unsafe extern "C" fn(*mut c_void);

fn err(message: impl Into<String>) -> KernelError {
    KernelError::Failed {
        action: "apply",
        object: "nftables ruleset".into(),
        message: message.into(),
        errno: None,
    }
}

impl Nft {
    pub fn open() -> Result<Nft, KernelError> {
        // SAFETY: loading a system library whose initialisers have no preconditions.
        let lib = unsafe { Library::new("libnftables.so.1") }
            .map_err(|e| err(format!("load libnftables.so.1 (install nftables): {e}")))?;
        // SAFETY: the symbols have these C signatures (nftables/libnftables.h).
        let ctx = unsafe {
            let new: Symbol<NewFn> = lib.get(b"nft_ctx_new\0").map_err(|e| err(e.to_string()))?;
            let out: Symbol<CtxFn> = lib
                .get(b"nft_ctx_buffer_output\0")
                .map_err(|e| err(e.to_string()))?;
            let errb: Symbol<CtxFn> = lib
                .get(b"nft_ctx_buffer_error\0")
                .map_err(|e| err(e.to_string()))?;
            let ctx = new(NFT_CTX_DEFAULT);
            if ctx.is_null() {
                return Err(err("nft_ctx_new failed"));
            }
            out(ctx);
            errb(ctx);
            ctx
        };
        Ok(Nft {
            lib,
            ctx: Mutex::new(Ctx(ctx)),
        })
    }

    /// Run a script as one transaction; returns what it printed (for `list`).
    pub fn run(&self, script: &str) -> Result<String, KernelError> {
        let c = CString::new(script).map_err(|_| err("script contains a NUL byte"))?;
        let ctx = self.ctx.lock().map_err(|_| err("nft context poisoned"))?;
        // SAFETY: ctx is a live context owned by self; the buffers returned stay valid
        // until the next call on this context, and we copy them before releasing it.
        unsafe {
            let run: Symbol<RunFn> = self
                .lib
                .get(b"nft_run_cmd_from_buffer\0")
                .map_err(|e| err(e.to_string()))?;
            let get_out: Symbol<GetBufFn> = self
                .lib
                .get(b"nft_ctx_get_output_buffer\0")
                .map_err(|e| err(e.to_string()))?;
            let get_err: Symbol<GetBufFn> = self
                .lib
                .get(b"nft_ctx_get_error_buffer\0")
                .map_err(|e| err(e.to_string()))?;
            let rc = run(ctx.0, c.as_ptr());
            let text = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let out = text(get_out(ctx.0));
            let msg = text(get_err(ctx.0));
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
            unsafe {
                if let Ok(free) = self.lib.get::<FreeFn>(b"nft_ctx_free\0") {
                    free(ctx.0);
                }
            }
        }
    }
}
