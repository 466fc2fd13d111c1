//! sysctl writes under /proc/sys, in the calling thread's network namespace (ferryd's own).

use std::io::ErrorKind;

use crate::KernelError;

/// `["net", "ipv4", "ip_forward"]` → /proc/sys/net/ipv4/ip_forward (segments, not a
/// dotted key, because interface names may contain dots). Writes only if the value
/// differs, so an unchanged host is not touched; returns whether it wrote.
pub fn set(key: &[&str], value: &str) -> Result<bool, KernelError> {
    let path = format!("/proc/sys/{}", key.join("/"));
    let io = |e: std::io::Error| KernelError::io("set sysctl", key.join("."), e);
    if std::fs::read_to_string(&path).map_err(io)?.trim() == value {
        return Ok(false);
    }
    std::fs::write(&path, value).map_err(io)?;
    Ok(true)
}

/// Turn IPv6 off on `ifname` before it comes up: a bridge port needs no address of its
/// own, and each host-side veth with IPv6 on adds link-local, local and multicast routes
/// to ferryd's IPv6 FIB, which the kernel walks whole whenever any interface goes down or
/// away (`fib6_ifdown`), so creating and detaching an endpoint grew with the number of
/// endpoints. Bridged IPv6 traffic between sandboxes is not affected. Best effort: a
/// kernel without IPv6 has no such file, and a failure only costs speed.
///
/// `conf` is `/proc/sys/net/ipv6/conf` opened once in the namespace (see [`Ipv6Conf`]).
pub fn disable_ipv6(conf: &Ipv6Conf, ifname: &str) {
    let rel = format!("{ifname}/disable_ipv6");
    let res = match &conf.0 {
        Some(dir) => write_at(dir, &rel, b"1"),
        None => std::fs::write(format!("{IPV6_CONF}/{rel}"), b"1"),
    };
    match res {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::debug!("write {IPV6_CONF}/{rel}: {e}"),
    }
}

const IPV6_CONF: &str = "/proc/sys/net/ipv6/conf";

/// `/proc/sys/net/ipv6/conf` of one namespace, held open. Every network namespace has
/// its own `net`, `ipv6` and `conf` entries under the one /proc/sys, all with the same
/// names, so the kernel's path walk compares against each namespace's in turn: with a
/// thousand sandboxes, opening a sysctl file by its full path took about a millisecond.
/// Opening relative to this directory skips those three steps.
pub struct Ipv6Conf(Option<std::fs::File>);

impl Ipv6Conf {
    /// Open it in the calling thread's namespace; a kernel without IPv6 gets a stand-in
    /// that writes by path (and finds nothing).
    pub fn open_here() -> Ipv6Conf {
        Ipv6Conf(std::fs::File::open(IPV6_CONF).ok())
    }
}

fn write_at(dir: &std::fs::File, rel: &str, value: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::{AsFd, AsRawFd, FromRawFd};
    let fd = nix::fcntl::openat(
        Some(dir.as_fd().as_raw_fd()),
        rel,
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor and nothing else owns it.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(value)
}

/// In a sandbox namespace just made (on the thread that made it): interfaces created
/// in it from now on start with IPv6 off. ferry's networks are IPv4, and a sandbox-side
/// veth with IPv6 on sends duplicate-address probes, MLD reports and router
/// solicitations when it comes up, each one multicast, which the bridge floods to every
/// other endpoint's sandbox: an attach cost that grew with the number of endpoints.
/// Docker also turns IPv6 off on interfaces given only IPv4 (since 26.0.2, for
/// CVE-2024-32473, which is about the same surprise on macvlan links). `lo`
/// exists already and keeps `::1`. Best effort, like [`disable_ipv6`].
pub fn ipv6_off_by_default_here() {
    disable_ipv6(&Ipv6Conf(None), "default");
}
