//! What kind of link a name is ("bridge", "veth", …), for `-o bridge=NAME`: the plugin
//! uses a bridge the user made and must tell "missing" from "not a bridge".

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use rtnetlink::Handle;

use crate::KernelError;

/// None when there is no such link; Some("") for a link without a kind (a physical NIC).
pub async fn kind_of(h: &Handle, name: &str) -> Result<Option<String>, KernelError> {
    let mut s = h.link().get().match_name(name.to_string()).execute();
    let msg = match s.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => return Ok(None),
        Err(e) => return Err(KernelError::netlink("look up link", name, e)),
    };
    let kind = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(InfoKind::Bridge) => Some("bridge".to_string()),
            LinkInfo::Kind(k) => Some(k.to_string()),
            _ => None,
        }),
        _ => None,
    });
    Ok(Some(kind.unwrap_or_default()))
}
