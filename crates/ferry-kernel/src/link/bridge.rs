//! Bridges: created if missing, given their gateway address and brought up; an
//! existing bridge is adopted as it is (the plugin's `-o bridge=br1` case uses that).

use ipnet::Ipv4Net;
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::Handle;

use crate::link::{addr, get::index_of, up::up};
use crate::KernelError;

pub async fn ensure(
    h: &Handle,
    name: &str,
    gateway: Option<Ipv4Net>,
    mtu: u32,
) -> Result<u32, KernelError> {
    let index = match index_of(h, name).await? {
        Some(i) => i,
        None => {
            let mut req = h.link().add().bridge(name.to_string());
            req.message_mut().attributes.push(LinkAttribute::Mtu(mtu));
            match req.execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(KernelError::netlink("create bridge", name, e)),
            }
            index_of(h, name).await?.ok_or_else(|| {
                KernelError::other("create bridge", name, "bridge vanished after creation")
            })?
        }
    };
    if let Some(gw) = gateway {
        addr::add(h, index, name, gw).await?;
    }
    up(h, index, name).await?;
    Ok(index)
}
