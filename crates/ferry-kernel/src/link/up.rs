//! Bringing links up.

use rtnetlink::{Handle, LinkUnspec};

use crate::KernelError;

pub async fn up(h: &Handle, index: u32, name: &str) -> Result<(), KernelError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| KernelError::netlink("set up", name, e))
}

/// Bring the link called `name` up, found by name in the same request.
pub async fn up_by_name(h: &Handle, name: &str) -> Result<(), KernelError> {
    h.link()
        .set(LinkUnspec::new_with_name(name).up().build())
        .execute()
        .await
        .map_err(|e| KernelError::netlink("set up", name, e))
}

/// Bring `lo` up in the calling thread's network namespace with SIOCSIFFLAGS (used on
/// the thread that just created a namespace, where no netlink socket exists yet).
pub fn lo_up_here() -> Result<(), KernelError> {
    // SAFETY: plain socket/ioctl/close syscalls on a zeroed ifreq we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(KernelError::io(
                "open socket for",
                "lo",
                std::io::Error::last_os_error(),
            ));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            return Err(KernelError::io("set up", "lo", err));
        }
    }
    Ok(())
}
