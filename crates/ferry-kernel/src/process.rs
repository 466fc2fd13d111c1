//! Starting a process inside a sandbox: enter its network namespace, take private mount
//! and UTS namespaces, bind-mount the sandbox's own /etc/hosts and /etc/resolv.conf
//! over the host's, set its hostname, then exec. Used by ferryd for `run -d` and by the
//! CLI for foreground `run` and `exec`. Everything the child needs is prepared before
//! fork, so the pre-exec hook only makes syscalls.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

#[derive(Debug, Clone, Default)]
pub struct SandboxExec {
    pub netns: PathBuf,
    /// None for `--network host`, which keeps the host's files and hostname.
    pub files: Option<SandboxFiles>,
    /// Start a new session (detached processes).
    pub new_session: bool,
}

#[derive(Debug, Clone)]
pub struct SandboxFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: String,
}

impl SandboxExec {
    /// A hook for `Command::pre_exec`.
    pub fn pre_exec_hook(
        &self,
    ) -> io::Result<impl FnMut() -> io::Result<()> + Send + Sync + 'static> {
        let ns = File::open(&self.netns).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("open sandbox netns {}: {e}", self.netns.display()),
            )
        })?;
        // A pin is a bind mount made in ferryd's mount namespace; from one that does not
        // see it (ferryd started by `ip netns exec`, or by a service manager with private
        // mounts) the path is the empty file under it, and setns would only say EINVAL.
        let fs = nix::sys::statfs::fstatfs(&ns).map_err(io::Error::from)?;
        if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a network namespace from here: ferryd's namespace pins are not \
                     visible in this mount namespace (was ferryd started with `ip netns exec` \
                     or with private mounts?)",
                    self.netns.display()
                ),
            ));
        }
        let files = match &self.files {
            Some(f) => Some((
                cstring(&f.hosts)?,
                cstring(&f.resolv_conf)?,
                f.hostname.clone().into_bytes(),
            )),
            None => None,
        };
        let new_session = self.new_session;
        Ok(move || {
            if new_session {
                nix::unistd::setsid().map_err(io::Error::from)?;
            }
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            if let Some((hosts, resolv, hostname)) = &files {
                unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
                    .map_err(io::Error::from)?;
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_SLAVE,
                    None::<&str>,
                )
                .map_err(io::Error::from)?;
                bind(hosts, c"/etc/hosts")?;
                bind(resolv, c"/etc/resolv.conf")?;
                // SAFETY: sethostname with a buffer and its length.
                if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

fn cstring(p: &std::path::Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn bind(src: &CString, dst: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: mount(2) with NUL-terminated strings we own; no allocation after fork.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_in(netns: PathBuf) -> io::Result<()> {
        SandboxExec {
            netns,
            files: None,
            new_session: false,
        }
        .pre_exec_hook()
        .map(|_| ())
    }

    #[test]
    fn a_pin_this_mount_namespace_does_not_see_is_named_before_fork() {
        let dir = tempfile::tempdir().unwrap();
        let unmounted = dir.path().join("0123456789ab");
        std::fs::write(&unmounted, "").unwrap();
        let e = exec_in(unmounted.clone()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let msg = e.to_string();
        assert!(
            msg.contains(&unmounted.display().to_string())
                && msg.contains("not a network namespace"),
            "{msg}"
        );
        exec_in("/proc/self/ns/net".into()).expect("a real namespace file");
    }
}
