//! Retiring an endpoint's veth pair so that its slow deletion can finish in the background.
//!
//! Deleting a veth costs 15–20 ms of kernel time on a small machine (measured with
//! `ip link del`: the RCU waits in the unregister path), while taking it down and
//! renaming it costs well under a millisecond. Retiring does the cheap part
//! synchronously, so that when it returns:
//!
//! - no frame reaches the bridge through the old pair: both ends are down, and the
//!   bridge neither takes frames from a down port nor sends to a disabled one; taking the
//!   port down also drops the MAC addresses the bridge learned on it, so an address and
//!   MAC handed out again at once cannot be seen twice. The port stays on the bridge until
//!   the background deletion: leaving the bridge costs time that grows with the bridge's
//!   ports (the adjacency lists, the port bookkeeping), a tenth of a detach at 900 ports;
//! - the sandbox-side name (eth0, eth1, …) is free for the next attach (the peer is down
//!   and renamed, over a netlink socket opened inside the sandbox; the kernel refuses
//!   RTM_SETLINK with IFLA_TARGET_NETNSID, EINVAL on 6.18, so that was not an option);
//! - both ends carry a reserved name, `fyz` + the host end's 11 hex digits: ferry never
//!   gives that name to a new link (host ends are `fy` + hex, bridges `fy-…`), so deleting
//!   it later by name can only hit the retired pair, and reconcile removes it like any
//!   other `fy*` link ferry does not know if ferryd stops first;
//! - the host end is in link group [`grave_group`] (set with the rename, in one request):
//!   the reaper deletes every retired pair it has in one `RTM_DELLINK` by group, which
//!   the kernel does in one unregister batch, so a burst of detaches pays the deletion's
//!   RCU waits once (50 pairs: 14 ms by group against 1 s one by one). The kernel refuses
//!   a group deletion outright (EOPNOTSUPP) if the group holds a device that cannot be
//!   deleted, such as a NIC someone put there; the reaper then deletes by name.
//!
//! Only names of the host-end shape (`fy` + 11 lowercase hex digits) of kind veth, whose
//! peer is where the caller says (the sandbox namespace and name recorded at attach), are
//! retired; anything else (bridges, odd names, links made before a restart) is deleted
//! synchronously by the caller.

use std::path::Path;

use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec};

use crate::link::get;
use crate::{netns, KernelError};

/// The link group of this ferryd's retired host ends: the retired names' prefix in
/// ASCII (`fyz`, 0x66797a; a second instance `fz` has `fzz`), reserved for ferry in the
/// namespaces where ferryd runs, so that two ferryds in one namespace each delete only
/// their own.
pub fn grave_group() -> u32 {
    let p = ferry_core::instance::link_prefix().as_bytes();
    u32::from_be_bytes([0, p[0], p[1], b'z'])
}

/// The reserved name a retired host end `fy<11 hex>` (and its peer) is renamed to:
/// `fyz<11 hex>` (`fy` is this ferryd's link prefix, `ferry_core::instance`).
pub fn retired_name(host_if: &str) -> Option<String> {
    let p = ferry_core::instance::link_prefix();
    let hex = host_if.strip_prefix(p)?;
    is_hex11(hex).then(|| format!("{p}z{hex}"))
}

/// Is `name` a retired link (one a background deletion owns)?
pub fn is_retired(name: &str) -> bool {
    let p = ferry_core::instance::link_prefix();
    name.strip_prefix(p)
        .and_then(|r| r.strip_prefix('z'))
        .is_some_and(is_hex11)
}

fn is_hex11(s: &str) -> bool {
    s.len() == 11 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What became of a link asked to retire.
#[derive(Debug, PartialEq, Eq)]
pub enum Retired {
    /// No such link: nothing to delete.
    Gone,
    /// Down, renamed (both ends) to this name: delete it later.
    As(String),
    /// Not a host end ferry may retire (or the kernel refused a step before anything
    /// changed): delete it now.
    DeleteNow,
}

fn is_veth(m: &LinkMessage) -> bool {
    m.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))),
        _ => false,
    })
}

/// The peer's index (in the peer's own namespace).
fn peer_index(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    })
}

async fn set(
    h: &Handle,
    index: u32,
    what: &'static str,
    object: &str,
    edit: impl FnOnce(Change) -> Change,
) -> Result<(), KernelError> {
    h.link()
        .set(edit(LinkUnspec::new_with_index(index)).build())
        .execute()
        .await
        .map_err(|e| KernelError::netlink(what, object.to_string(), e))
}

/// One RTM_SETLINK on a link found by index.
type Change = LinkMessageBuilder<LinkUnspec>;

fn down(m: Change) -> Change {
    m.down()
}

fn rename(to: &str) -> impl FnOnce(Change) -> Change + '_ {
    move |m| m.name(to)
}

/// Rename and, in the same request, put into [`grave_group`].
fn bury(to: &str) -> impl FnOnce(Change) -> Change + '_ {
    move |m| m.name(to).link_group(grave_group())
}

/// Take `host_if` and its peer (`peer_name` inside the namespace at `peer_netns`) out of
/// service and give both the reserved name.
pub async fn retire(
    h: &Handle,
    host_if: &str,
    peer_netns: &Path,
    peer_name: &str,
) -> Result<Retired, KernelError> {
    let Some(trash) = retired_name(host_if) else {
        return Ok(Retired::DeleteNow);
    };
    let Some(m) = get::message_of(h, host_if).await? else {
        return Ok(Retired::Gone);
    };
    if !is_veth(&m) {
        return Ok(Retired::DeleteNow);
    }
    let index = m.header.index;
    // The peer must be the one recorded at attach: same name, same index.
    let Ok(nh) = netns::netlink_in(peer_netns).await else {
        return Ok(Retired::DeleteNow);
    };
    let peer = match get::index_of(&nh, peer_name).await {
        Ok(Some(i)) if Some(i) == peer_index(&m) => i,
        _ => return Ok(Retired::DeleteNow),
    };
    // Down (still on the bridge, as a disabled port): from here on the pair carries
    // nothing. Should any step fail, the caller deletes the pair synchronously by its old
    // name (the host end is renamed last): correct, just not faster.
    let steps = async {
        set(h, index, "take down", host_if, down).await?;
        set(&nh, peer, "take down peer of", host_if, down).await?;
        set(&nh, peer, "rename peer of", host_if, rename(&trash)).await?;
        set(h, index, "rename", host_if, bury(&trash)).await
    };
    match steps.await {
        Ok(()) => Ok(Retired::As(trash)),
        Err(e) => {
            tracing::debug!("retire {host_if}: {e}; deleting it now");
            Ok(Retired::DeleteNow)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ferryds_grave_group_is_fyz() {
        assert_eq!(grave_group(), 0x0066_797a);
    }

    #[test]
    fn only_host_end_names_are_retired() {
        assert_eq!(
            retired_name("fy0123456789a").as_deref(),
            Some("fyz0123456789a")
        );
        assert_eq!(retired_name("fy-0123abcd"), None);
        assert_eq!(retired_name("ferry0"), None);
        assert_eq!(retired_name("fy0123456789"), None);
        assert_eq!(retired_name("fy0123456789ab"), None);
        assert_eq!(retired_name("fy0123456789A"), None);
        assert_eq!(retired_name("fyz123456789a"), None);
    }

    #[test]
    fn retired_names_are_recognised_and_fit_an_ifname() {
        let t = retired_name("fyabcdef01234").expect("host end");
        assert!(is_retired(&t));
        assert!(t.len() <= 15);
        assert!(!is_retired("fyabcdef01234"));
        assert!(!is_retired("fy-abcdef01"));
    }
}
