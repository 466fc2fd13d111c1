//! Looking links up.

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

use crate::KernelError;

/// The index of the link called `name`, or None if there is none.
pub async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, KernelError> {
    Ok(message_of(h, name).await?.map(|m| m.header.index))
}

/// The index of the link called `name` in the calling thread's namespace, or None if
/// there is none: `if_nametoindex`, one ioctl. For links in ferryd's own namespace
/// (whose netlink handle lives in the same namespace as every thread of ferryd's
/// runtime) it answers what [`index_of`] would, without the full link description: for
/// a bridge that description is long, and netlink-packet-route 0.19 formats the whole
/// bridge payload once per attribute while parsing it (~0.3 ms on every attach).
pub fn index_here(name: &str) -> Result<Option<u32>, KernelError> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| KernelError::other("look up link", name, "name contains a NUL byte"))?;
    // SAFETY: a valid NUL-terminated string; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index != 0 {
        return Ok(Some(index));
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        e => Err(KernelError::io("look up link", name, e)),
    }
}

/// The link called `name` as the kernel describes it, or None if there is none.
pub async fn message_of(h: &Handle, name: &str) -> Result<Option<LinkMessage>, KernelError> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(KernelError::netlink("look up link", name, e)),
    }
}

/// A link's name, from its description.
pub fn name_of(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Every link in the namespace of `h`, as the kernel describes it.
pub async fn all(h: &Handle) -> Result<Vec<LinkMessage>, KernelError> {
    super::dump::collect(|| h.link().get().execute())
        .await
        .map_err(|e| KernelError::netlink("list", "links", e))
}

/// Every link's name in the namespace of `h`.
pub async fn names(h: &Handle) -> Result<Vec<String>, KernelError> {
    Ok(all(h).await?.iter().filter_map(name_of).collect())
}
