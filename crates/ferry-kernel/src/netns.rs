//! Network namespaces as files.
//!
//! A sandbox's namespace is created by a short-lived thread that unshares CLONE_NEWNET
//! (per-thread, allowed in a multithreaded process) and bind-mounts its
//! /proc/thread-self/ns/net onto a file under the exec root, so the namespace lives on
//! after the thread, across ferryd restarts, until ferry unmounts it. Work inside a
//! namespace never happens on a tokio worker thread (the scheduler moves tasks between
//! threads): a dedicated thread enters it once and opens a netlink socket there, which
//! stays bound to that namespace; the async side then drives the socket.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::KernelError;

fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KernelError> + Send + 'static,
) -> Result<T, KernelError> {
    std::thread::spawn(f).join().unwrap_or_else(|_| {
        Err(KernelError::other(
            "run",
            "namespace thread",
            "thread panicked",
        ))
    })
}

/// [`on_thread`] for async code: the thread's result comes back through a channel, so
/// the task waits, not the worker thread it runs on.
async fn on_thread_awaited<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KernelError> + Send + 'static,
) -> Result<T, KernelError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.unwrap_or_else(|_| {
        Err(KernelError::other(
            "run",
            "namespace thread",
            "thread panicked",
        ))
    })
}

/// Make the empty file a namespace is bind-mounted onto, and its directory.
fn touch(path: &Path) -> Result<(), KernelError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| KernelError::io("create dir", dir.display().to_string(), e))?;
    }
    File::create(path)
        .map(drop)
        .map_err(|e| KernelError::io("create netns file", path.display().to_string(), e))
}

/// Create a new network namespace pinned at `path`, with `lo` up.
pub fn create(path: &Path) -> Result<(), KernelError> {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    touch(&path)?;
    let pinned = path.clone();
    let res = on_thread(move || {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| KernelError::sys("unshare netns for", &shown, e))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &pinned,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| KernelError::sys("bind-mount netns", &shown, e))?;
        crate::sysctl::ipv6_off_by_default_here();
        crate::link::up::lo_up_here()
    });
    if res.is_err() {
        let _ = remove(&path);
    }
    res
}

/// Unpin and delete a namespace file; a missing file is not an error.
pub fn remove(path: &Path) -> Result<(), KernelError> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => {
            return Err(KernelError::sys(
                "unmount netns",
                path.display().to_string(),
                e,
            ))
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(KernelError::io(
            "remove netns file",
            path.display().to_string(),
            e,
        )),
    }
}

/// Name the namespace at `target` for `ip netns`: the symlink `link`, its directory
/// made, one there before replaced.
pub fn name(link: &Path, target: &Path) -> Result<(), KernelError> {
    let shown = link.display().to_string();
    if let Some(dir) = link.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| KernelError::io("create dir", dir.display().to_string(), e))?;
    }
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(KernelError::io("replace netns name", &shown, e))
        }
        _ => {}
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| KernelError::io("link", &shown, e))
}

/// Take a namespace's name away; one already gone is success.
pub fn unname(link: &Path) -> Result<(), KernelError> {
    match std::fs::remove_file(link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(KernelError::io(
            "remove netns name",
            link.display().to_string(),
            e,
        )),
        _ => Ok(()),
    }
}

/// Is `path` a pinned network namespace (an nsfs mount)?
pub fn is_pinned(path: &Path) -> bool {
    use nix::sys::statfs::statfs;
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    statfs(path)
        .map(|s| s.filesystem_type().0 == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Pin the namespace of the calling process at `path` (for `--network host`).
pub fn pin_current(path: &Path) -> Result<(), KernelError> {
    let shown = path.display().to_string();
    if is_pinned(path) {
        return Ok(());
    }
    touch(path)?;
    mount(
        Some("/proc/self/ns/net"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| KernelError::sys("bind-mount netns", shown, e))
}

/// Open a netlink connection whose socket lives in the namespace at `path`. The
/// socket is created on a dedicated thread that entered the namespace (awaited, so no
/// tokio worker waits on it); the returned handle is used from async code anywhere.
pub async fn netlink_in(path: &Path) -> Result<rtnetlink::Handle, KernelError> {
    let rt = tokio::runtime::Handle::current();
    let path = path.to_path_buf();
    let (conn, handle) = on_thread_awaited(move || {
        let shown = path.display().to_string();
        let f = File::open(&path).map_err(|e| KernelError::io("open netns", &shown, e))?;
        setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| KernelError::sys("enter netns", &shown, e))?;
        let _guard = rt.enter();
        let (conn, handle) = crate::rtnl::connect()
            .map_err(|e| KernelError::io("open netlink socket in", &shown, e))?;
        Ok((conn, handle))
    })
    .await?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The processes (other than this one) whose network namespace is the one pinned at
/// `path`, found by comparing /proc/PID/ns/net with the pin's device and inode. Empty
/// when `path` is not a pinned namespace. A sandbox process that started before its pid
/// reached the store is found this way (its pid is never guessed, never 0).
pub fn pids_in(path: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    if !is_pinned(path) {
        return vec![];
    }
    let Ok(pin) = std::fs::metadata(path) else {
        return vec![];
    };
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    procs
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && pid != 0)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == pin.dev() && m.ino() == pin.ino())
        })
        .collect()
}
