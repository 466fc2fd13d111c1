//! Addresses. Adding one that is already there is success.

use std::net::IpAddr;

use ipnet::Ipv4Net;
use rtnetlink::Handle;

use crate::KernelError;

pub async fn add(h: &Handle, index: u32, ifname: &str, net: Ipv4Net) -> Result<(), KernelError> {
    match h
        .address()
        .add(index, IpAddr::V4(net.addr()), net.prefix_len())
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
