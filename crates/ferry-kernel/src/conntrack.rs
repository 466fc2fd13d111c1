//! What ferry asks of conntrack entries, through ctnetlink (nfnetlink's conntrack
//! subsystem, on a netlink socket of the calling thread's namespace).
//!
//! One thing so far: a TCP flow's entry marked liberal in both directions
//! (`IP_CT_TCP_FLAG_BE_LIBERAL` in each direction's `seen` flags), which is what an
//! nftables flowtable does to each flow it offloads. A fast path that carries a flow's
//! packets past conntrack leaves conntrack's view of the TCP windows behind; when the flow
//! comes back to the host's path (the fast path let go of it), a strict entry takes its
//! next packets for out-of-window ones and the flow is reset. Marked liberal, it is not,
//! while the namespace's `nf_conntrack_tcp_be_liberal` stays as the host has it
//! (docs/PERFORMANCE.md, "a conntrack fast path"; measured there with the same message,
//! sent by a script since removed).
//!
//! The marking is an `IPCTNL_MSG_CT_NEW` without `NLM_F_CREATE`, that is an update of the
//! entry the original tuple names, carrying `CTA_PROTOINFO_TCP_FLAGS_ORIGINAL` and
//! `_REPLY` (flag and mask). [`liberal`] reads the flags back with `IPCTNL_MSG_CT_GET`.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

use crate::KernelError;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;
const IP_CT_TCP_FLAG_BE_LIBERAL: u8 = 0x08;
const IPPROTO_TCP: u8 = 6;

/// A TCP flow as its conntrack entry's original direction names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl std::fmt::Display for TcpFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tcp {}:{} -> {}:{}",
            self.src, self.sport, self.dst, self.dport
        )
    }
}

/// Marks `flow`'s entry liberal in both directions. An entry that is not there is an
/// error with ENOENT.
pub fn mark_liberal(flow: &TcpFlow) -> Result<(), KernelError> {
    let both = [IP_CT_TCP_FLAG_BE_LIBERAL, IP_CT_TCP_FLAG_BE_LIBERAL]; // flags, mask
    let tcp = [
        attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, &both),
        attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, &both),
    ]
    .concat();
    let info = nested(CTA_PROTOINFO, &nested(CTA_PROTOINFO_TCP, &tcp));
    let body = [tuple(flow), info].concat();
    let sock = open(flow)?;
    request(&sock, flow, IPCTNL_MSG_CT_NEW, &body)?;
    ack(&sock, flow, "mark liberal")
}

/// Whether `flow`'s entry is liberal in both directions; None when there is no entry.
pub fn liberal(flow: &TcpFlow) -> Result<Option<bool>, KernelError> {
    let sock = open(flow)?;
    request(&sock, flow, IPCTNL_MSG_CT_GET, &tuple(flow))?;
    let reply = receive(&sock, flow, "read")?;
    if let Some(errno) = error_of(&reply) {
        return match errno {
            0 => Err(failed(
                flow,
                "read",
                "an ack where the entry was expected",
                None,
            )),
            e if e == libc::ENOENT => Ok(None),
            e => Err(failed(
                flow,
                "read",
                &nix::Error::from_raw(e).to_string(),
                Some(e),
            )),
        };
    }
    // The entry's own message only (an ack may follow it in the same read).
    let len = u32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize;
    let attrs = reply.get(20..len.min(reply.len())).unwrap_or_default();
    let flags = |which| {
        find(attrs, &[CTA_PROTOINFO, CTA_PROTOINFO_TCP, which]).and_then(|v| v.first().copied())
    };
    let both = [
        CTA_PROTOINFO_TCP_FLAGS_ORIGINAL,
        CTA_PROTOINFO_TCP_FLAGS_REPLY,
    ]
    .map(|w| flags(w).is_some_and(|f| f & IP_CT_TCP_FLAG_BE_LIBERAL != 0));
    Ok(Some(both == [true, true]))
}

fn failed(flow: &TcpFlow, what: &str, message: &str, errno: Option<i32>) -> KernelError {
    KernelError::Failed {
        action: "conntrack",
        object: format!("{what} {flow}"),
        message: message.to_string(),
        errno,
    }
}

fn open(flow: &TcpFlow) -> Result<OwnedFd, KernelError> {
    let protocol = SockProtocol::NetlinkNetFilter;
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )
    .map_err(|e| KernelError::sys("open ctnetlink socket for", flow.to_string(), e))?;
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0))
        .map_err(|e| KernelError::sys("bind ctnetlink socket for", flow.to_string(), e))?;
    Ok(sock)
}

/// A netlink attribute, padded to 4 bytes.
fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut out = Vec::with_capacity(len.next_multiple_of(4));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(len.next_multiple_of(4), 0);
    out
}

fn nested(kind: u16, inner: &[u8]) -> Vec<u8> {
    attr(kind | NLA_F_NESTED, inner)
}

/// `CTA_TUPLE_ORIG` for `flow`.
fn tuple(flow: &TcpFlow) -> Vec<u8> {
    let ip = [
        attr(CTA_IP_V4_SRC, &flow.src.octets()),
        attr(CTA_IP_V4_DST, &flow.dst.octets()),
    ]
    .concat();
    let proto = [
        attr(CTA_PROTO_NUM, &[IPPROTO_TCP]),
        attr(CTA_PROTO_SRC_PORT, &flow.sport.to_be_bytes()),
        attr(CTA_PROTO_DST_PORT, &flow.dport.to_be_bytes()),
    ]
    .concat();
    let inner = [nested(CTA_TUPLE_IP, &ip), nested(CTA_TUPLE_PROTO, &proto)].concat();
    nested(CTA_TUPLE_ORIG, &inner)
}

/// Sends one ctnetlink request: the netlink header, nfgenmsg (AF_INET, version 0), `body`.
fn request(sock: &OwnedFd, flow: &TcpFlow, msg: u16, body: &[u8]) -> Result<(), KernelError> {
    let len = 16 + 4 + body.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    out.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    out.extend_from_slice(body);
    send(sock.as_raw_fd(), &out, MsgFlags::empty())
        .map_err(|e| KernelError::sys("send to ctnetlink for", flow.to_string(), e))?;
    Ok(())
}

fn receive(sock: &OwnedFd, flow: &TcpFlow, what: &str) -> Result<Vec<u8>, KernelError> {
    let mut buf = vec![0u8; 8192];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())
        .map_err(|e| KernelError::sys("receive from ctnetlink for", flow.to_string(), e))?;
    buf.truncate(n);
    if buf.len() < 20 {
        return Err(failed(flow, what, "a short answer from ctnetlink", None));
    }
    Ok(buf)
}

/// The errno of an NLMSG_ERROR message (0: an ack), or None for any other message.
fn error_of(msg: &[u8]) -> Option<i32> {
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    (kind == NLMSG_ERROR).then(|| -i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]))
}

fn ack(sock: &OwnedFd, flow: &TcpFlow, what: &str) -> Result<(), KernelError> {
    match error_of(&receive(sock, flow, what)?) {
        Some(0) => Ok(()),
        Some(e) => Err(failed(
            flow,
            what,
            &nix::Error::from_raw(e).to_string(),
            Some(e),
        )),
        None => Err(failed(flow, what, "no ack from ctnetlink", None)),
    }
}

/// The payload of the attribute at `path` (each step a type, nested flag ignored).
fn find<'a>(mut attrs: &'a [u8], path: &[u16]) -> Option<&'a [u8]> {
    let (first, rest) = path.split_first()?;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        let payload = attrs.get(4..len)?;
        if kind == *first {
            return if rest.is_empty() {
                Some(payload)
            } else {
                find(payload, rest)
            };
        }
        attrs = attrs.get(len.next_multiple_of(4)..)?;
    }
    None
}

#[cfg(test)]
mod tests;
