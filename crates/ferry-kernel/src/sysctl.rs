//! sysctl writes under /proc/sys, in ferryd's own network namespace.

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
