//! The rtnetlink sockets ferry asks the kernel on.
//!
//! Design note. The kernel answers a request on a netlink socket without waiting for the
//! reader: an answer that finds the socket's receive buffer full is dropped, and the next
//! read says ENOBUFS. netlink-proto, which pairs answers with requests, logs that and goes
//! on, so a request whose answer was dropped waits for ever. ferryd's tasks share one
//! socket and ask many things at once (parallel attaches, a periodic check listing links
//! while creates run); with the default buffer (`rmem_default`, 208 KiB here: a few dozen
//! answers the size of a link's) a loaded machine lost answers, and
//! tests/dumps.rs hung in 2 runs of 30 with both CPUs busy. So every socket gets
//! [`RECEIVE_BUFFER`], forced past `rmem_max` (ferryd has CAP_NET_ADMIN), or as much of it
//! as `rmem_max` allows where forcing is refused.

use std::io;

use netlink_packet_route::RouteNetlinkMessage;
use nix::sys::socket::{setsockopt, sockopt};
use rtnetlink::proto::Connection;
use rtnetlink::sys::{AsyncSocket, Socket};

/// Room for a few thousand answers at once; the kernel charges it only as answers wait.
pub const RECEIVE_BUFFER: usize = 8 << 20;

/// A new rtnetlink connection in the calling thread's network namespace, its socket's
/// receive buffer grown; the connection must be spawned for the handle to be answered.
pub fn connect() -> io::Result<(Connection<RouteNetlinkMessage>, rtnetlink::Handle)> {
    let (mut conn, handle, _) = rtnetlink::new_connection()?;
    grow(conn.socket_mut().socket_mut());
    Ok((conn, handle))
}

/// Best effort: a socket that keeps its default buffer still works, as before.
fn grow(socket: &Socket) {
    if setsockopt(socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
        if let Err(e) = socket.set_rx_buf_sz(RECEIVE_BUFFER) {
            tracing::debug!("netlink receive buffer left as it was: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_gets_the_buffer_asked_for_as_root_and_at_least_the_default_otherwise() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _in = rt.enter();
        let (mut conn, _handle) = connect().expect("netlink socket");
        // What the kernel gave: twice what was asked, for its bookkeeping.
        let got = conn
            .socket_mut()
            .socket_mut()
            .get_rx_buf_sz()
            .expect("SO_RCVBUF");
        if nix::unistd::geteuid().is_root() {
            assert!(got >= RECEIVE_BUFFER, "{got} bytes");
        } else {
            assert!(got > 0, "{got} bytes");
        }
    }
}
