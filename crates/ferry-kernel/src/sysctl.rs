//! Per-interface sysctls, written under /proc/sys/net of the calling thread's namespace.

use std::io::ErrorKind;

/// Turn IPv6 off on `ifname` before it comes up: a bridge port needs no address of its
/// own, and each host-side veth with IPv6 on adds link-local, local and multicast routes
/// to ferryd's IPv6 FIB, which the kernel walks whole whenever any interface goes down or
/// away (`fib6_ifdown`), so creating and detaching an endpoint grew with the number of
/// endpoints. Bridged IPv6 traffic between sandboxes is not affected. Best effort: a
/// kernel without IPv6 has no such file, and a failure only costs speed.
pub fn disable_ipv6(ifname: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, b"1") {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::debug!("write {path}: {e}"),
    }
}
