//! Addresses, of either family. Adding one that is already there is success.

use ipnet::IpNet;
use rtnetlink::Handle;

use crate::KernelError;

pub async fn add(h: &Handle, index: u32, ifname: &str, net: IpNet) -> Result<(), KernelError> {
    match h
        .address()
        .add(index, net.addr(), net.prefix_len())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => Ok(()),
        Err(e) => Err(KernelError::netlink(
            "add address",
            format!("{net} to {ifname}"),
            e,
        )),
    }
}

/// The addresses (with prefix) of link `index`, of both families.
pub async fn list(h: &Handle, index: u32, ifname: &str) -> Result<Vec<IpNet>, KernelError> {
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    let msgs: Vec<AddressMessage> =
        super::dump::collect(|| h.address().get().set_link_index_filter(index).execute())
            .await
            .map_err(|e| KernelError::netlink("list addresses of", ifname, e))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => IpNet::new(*ip, m.header.prefix_len).ok(),
                _ => None,
            })
        })
        .collect())
}

/// Remove `net` from link `index`; an address that is not there is success.
pub async fn del(h: &Handle, index: u32, ifname: &str, net: IpNet) -> Result<(), KernelError> {
    let found = super::dump::collect(|| {
        h.address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(net.addr())
            .set_prefix_length_filter(net.prefix_len())
            .execute()
    })
    .await
    .map(|all| all.into_iter().find(|m| m.header.index == index));
    let msg = match found {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => return Ok(()),
        Err(e) => {
            return Err(KernelError::netlink(
                "look up address",
                format!("{net} on {ifname}"),
                e,
            ))
        }
    };
    match h.address().del(msg).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(m))
            if m.raw_code() == -libc::EADDRNOTAVAIL || m.raw_code() == -libc::ENODEV =>
        {
            Ok(())
        }
        Err(e) => Err(KernelError::netlink(
            "remove address",
            format!("{net} from {ifname}"),
            e,
        )),
    }
}
