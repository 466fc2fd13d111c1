//! Deleting links. Already gone counts as done.

use netlink_packet_route::link::LinkAttribute;
use rtnetlink::Handle;

use crate::link::get::index_of;
use crate::KernelError;

pub async fn delete(h: &Handle, name: &str) -> Result<(), KernelError> {
    let Some(index) = index_of(h, name).await? else {
        return Ok(());
    };
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(()),
        Err(e) => Err(KernelError::netlink("delete link", name, e)),
    }
}

/// Delete every link in `group` (and, for a veth, its peer) in one request: the kernel
/// unregisters them as one batch. None in the group counts as done.
pub async fn delete_group(h: &Handle, group: u32) -> Result<(), KernelError> {
    let mut req = h.link().del(0);
    req.message_mut()
        .attributes
        .push(LinkAttribute::Group(group));
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(()),
        Err(e) => Err(KernelError::netlink(
            "delete link group",
            group.to_string(),
            e,
        )),
    }
}
