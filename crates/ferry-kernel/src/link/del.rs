//! Deleting links. Already gone counts as done.

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
