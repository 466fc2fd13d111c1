//! Waiting for another process to exit, whole.
//!
//! `/proc/PID/stat` shows the thread-group leader only: once ferryd's main thread has
//! called `exit`, it reads `Z` while its other threads are still tearing down, and a
//! caller that trusts it goes on while ferryd holds its sockets, namespaces and store.
//! A pidfd becomes readable only when every thread has exited, and, opened before the
//! request that stops the process, it cannot be confused with a process that reuses
//! the pid afterwards.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A handle on a running process (a pidfd), or nothing if it had already gone.
pub struct Process {
    fd: Option<OwnedFd>,
}

impl Process {
    /// Hold on to process `pid`.
    pub fn open(pid: u32) -> io::Result<Self> {
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESRCH) => Ok(Self { fd: None }),
                _ => Err(e),
            };
        }
        let raw = i32::try_from(rc).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: `raw` is a descriptor the kernel just gave us and nothing else owns.
        Ok(Self {
            fd: Some(unsafe { OwnedFd::from_raw_fd(raw) }),
        })
    }

    /// Wait at most `within` for every thread of the process to have exited (a zombie its
    /// parent has not reaped counts as exited); true if they have.
    pub fn wait_exit(&self, within: Duration) -> io::Result<bool> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let Some(fd) = &self.fd else {
            return Ok(true);
        };
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) if left.is_zero() => return Ok(false),
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Process;
    use std::time::Duration;

    #[test]
    fn a_process_counts_as_exited_only_once_every_thread_has() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .expect("spawn sleep");
        let p = Process::open(child.id()).expect("pidfd_open");
        assert!(!p.wait_exit(Duration::from_millis(50)).unwrap());
        assert!(p.wait_exit(Duration::from_secs(10)).unwrap());
        child.wait().unwrap();
    }
}
