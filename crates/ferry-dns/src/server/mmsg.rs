//! `recvmmsg`/`sendmmsg` on an IPv4 UDP socket: one system call takes every query
//! already queued (up to `BATCH`) and one sends every answer to them.
//!
//! The only unsafe code of the responder. Each call builds its `mmsghdr`s on the
//! stack, pointing into buffers that `&mut self` keeps borrowed for the call, so no
//! pointer outlives what it points to.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// The most datagrams one call receives or sends.
pub const BATCH: usize = 32;
/// The receive buffer per datagram; a longer query is cut (as `recv_from` cut it).
const QUERY_MAX: usize = 4096;

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    s
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)),
        u16::from_be(s.sin_port),
    )
}

/// Receive buffers for one batch of queries.
pub struct RecvBatch {
    bufs: Box<[[u8; QUERY_MAX]; BATCH]>,
    peers: [SocketAddrV4; BATCH],
    lens: [usize; BATCH],
    count: usize,
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: Box::new([[0; QUERY_MAX]; BATCH]),
            peers: [SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0); BATCH],
            lens: [0; BATCH],
            count: 0,
        }
    }

    /// Wait (at most the socket's read timeout) for one datagram, then take those
    /// already queued behind it without waiting. Returns how many were received.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        // SAFETY: plain data, zeroes valid.
        let mut names: [libc::sockaddr_in; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for ((iov, buf), (hdr, name)) in iovs
            .iter_mut()
            .zip(self.bufs.iter_mut())
            .zip(hdrs.iter_mut().zip(names.iter_mut()))
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = QUERY_MAX;
            hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_in).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a name and an iovec on this stack frame and
        // the iovec at a buffer of self, all alive and exclusively borrowed until the
        // call returns; the kernel writes at most the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        for i in 0..self.count {
            self.lens[i] = (hdrs[i].msg_len as usize).min(QUERY_MAX);
            self.peers[i] = from_sockaddr(&names[i]);
        }
        Ok(self.count)
    }

    /// The datagrams of the last `recv`: sender and bytes.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddrV4, &[u8])> {
        (0..self.count).map(|i| (self.peers[i], &self.bufs[i][..self.lens[i]]))
    }
}

/// Answers waiting to be sent together.
#[derive(Default)]
pub struct SendBatch {
    out: Vec<(libc::sockaddr_in, Vec<u8>)>,
}

impl SendBatch {
    pub fn push(&mut self, to: SocketAddrV4, bytes: Vec<u8>) {
        self.out.push((to_sockaddr(to), bytes));
    }

    /// Send everything pushed. A datagram the kernel refuses is skipped, as a
    /// failed `send_to` was: the asker asks again.
    pub fn flush(&mut self, sock: &UdpSocket) {
        let mut sent = 0;
        while sent < self.out.len() {
            let part = &self.out[sent..self.out.len().min(sent + BATCH)];
            // SAFETY: plain data, zeroes valid.
            let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
            for (i, (to, bytes)) in part.iter().enumerate() {
                iovs[i].iov_base = bytes.as_ptr() as *mut libc::c_void;
                iovs[i].iov_len = bytes.len();
                hdrs[i].msg_hdr.msg_name = (to as *const libc::sockaddr_in).cast_mut().cast();
                hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
                hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: the headers point at iovecs on this frame and at addresses and
            // bytes in self.out, all alive and unchanged until the call returns; the
            // kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    part.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // On an error the part's first datagram failed: skip it.
            sent += if n > 0 { n as usize } else { 1 };
        }
        self.out.clear();
    }
}
