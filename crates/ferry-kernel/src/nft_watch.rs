//! Hearing nftables change: a netlink socket subscribed to the kernel's nftables
//! notifications (NFNLGRP_NFTABLES), read by a thread of its own, which calls back for
//! every table, chain or rule that comes or goes in this namespace, whoever made it (an
//! administrator's `nft add rule`, iptables-nft, ferryd itself). Set elements, which
//! ferryd changes at every attach, are not reported. A lost notification (the socket's
//! buffer overran) is reported as a change: the caller looks again.
//!
//! The socket is opened in the calling thread's network namespace, which the reading
//! thread keeps: call it from a thread in ferryd's namespace.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::KernelError;

/// The nftables messages that change what a rule set does (NFT_MSG_*): tables, chains
/// and rules, new or deleted.
const CHANGES: [u16; 6] = [0, 2, 3, 5, 6, 8];

/// Call `changed` on its own thread after each batch of notifications that adds or
/// deletes a table, chain or rule. Runs as long as the process.
pub fn watch(changed: impl Fn() + Send + 'static) -> Result<(), KernelError> {
    let fd = open()?;
    std::thread::Builder::new()
        .name("nft-watch".into())
        .spawn(move || read(fd, changed))
        .map_err(|e| KernelError::io("start", "the nftables watch thread", e))?;
    Ok(())
}

fn open() -> Result<OwnedFd, KernelError> {
    let what = "nftables notifications";
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| KernelError::sys("open a socket for", what, e))?;
    let groups = 1u32 << (libc::NFNLGRP_NFTABLES - 1);
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))
        .map_err(|e| KernelError::sys("subscribe to", what, e))?;
    Ok(fd)
}

fn read(fd: OwnedFd, changed: impl Fn()) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) if is_change(&buf[..n]) => changed(),
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(nix::Error::ENOBUFS) => changed(),
            Err(e) => {
                tracing::error!("nftables watch: {e}; rule changes are no longer heard");
                return;
            }
        }
    }
}

/// Does this datagram hold a table, chain or rule change? (Netlink messages, each a
/// 16-byte header — length, type, flags, sequence, port — then its payload, 4-aligned.)
fn is_change(mut buf: &[u8]) -> bool {
    let subsys = libc::NFNL_SUBSYS_NFTABLES as u16;
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if ty >> 8 == subsys && CHANGES.contains(&(ty & 0xff)) {
            return true;
        }
        let step = (len + 3) & !3;
        if len < 16 || step > buf.len() {
            break;
        }
        buf = &buf[step..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::is_change;

    fn msg(ty: u16) -> Vec<u8> {
        let mut m = vec![0u8; 20];
        m[..4].copy_from_slice(&20u32.to_ne_bytes());
        m[4..6].copy_from_slice(&ty.to_ne_bytes());
        m
    }

    #[test]
    fn rules_chains_and_tables_are_changes_set_elements_are_not() {
        let nft = |m: u16| (10u16 << 8) | m;
        for m in [0, 2, 3, 5, 6, 8] {
            assert!(is_change(&msg(nft(m))), "NFT_MSG {m}");
        }
        // NEWSETELEM, DELSETELEM, NEWGEN; another subsystem's NEWRULE number.
        for ty in [nft(12), nft(14), nft(16), (1u16 << 8) | 6] {
            assert!(!is_change(&msg(ty)), "type {ty:#x}");
        }
        // A batch: elements, then the generation, then a rule.
        let batch = [msg(nft(12)), msg(nft(16)), msg(nft(6))].concat();
        assert!(is_change(&batch));
        assert!(!is_change(&batch[..40]));
    }
}
