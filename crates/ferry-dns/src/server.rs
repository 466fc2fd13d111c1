//! The responder's sockets: a UDP socket and a TCP listener on each listen address
//! (ferryd gives one per network: its gateway, port 53), all answering from one shared
//! table that is swapped whole on change. Sockets are reconciled against the desired
//! set of addresses; a table swap never touches them, so no query is lost to a change.
//!
//! UDP, the hot path, runs on one plain thread per address: a blocking `recv_from`,
//! the pure `handle`, `send_to`. No async machinery per packet; forwarded queries are
//! handed to the tokio runtime (at most `MAX_INFLIGHT` at once, more are dropped and
//! the asker retries). TCP is served by tokio tasks (at most `MAX_TCP` connections,
//! each idle for at most `TCP_IDLE`).
//!
//! Sockets bind with IP_FREEBIND so they can be opened before the bridge holds the
//! address. Closing a UDP socket shuts it down (which wakes the blocked `recv_from`)
//! and joins its thread, so the address is free again when `listen_on` returns.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::forward::Forwarder;
use crate::packet::{handle, servfail, Action, Transport};
use crate::table::Table;

const MAX_INFLIGHT: usize = 512;
const MAX_TCP: usize = 128;
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("listen for DNS on {addr}/{proto}: {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: io::Error,
    },
}

struct Shared {
    table: ArcSwap<Table>,
    forwarder: Forwarder,
    inflight: Arc<Semaphore>,
    tcp_conns: Arc<Semaphore>,
    runtime: Handle,
}

struct Listener {
    udp: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    tcp: tokio::task::AbortHandle,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the thread blocked in recv_from. On an unconnected UDP socket Linux
        // answers ENOTCONN but marks the socket shut down all the same.
        let _ = socket2::SockRef::from(&*self.udp).shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.tcp.abort();
    }
}

/// The responder. Dropping it closes every socket.
pub struct Server {
    shared: Arc<Shared>,
    port: u16,
    listeners: Mutex<HashMap<Ipv4Addr, Listener>>,
}

impl Server {
    /// A responder on `port` (53 in production) with an empty table and no sockets;
    /// forwarded queries and TCP run on `runtime`.
    pub fn new(port: u16, forwarder: Forwarder, runtime: Handle) -> Server {
        Server {
            shared: Arc::new(Shared {
                table: ArcSwap::from_pointee(Table::default()),
                forwarder,
                inflight: Arc::new(Semaphore::new(MAX_INFLIGHT)),
                tcp_conns: Arc::new(Semaphore::new(MAX_TCP)),
                runtime,
            }),
            port,
            listeners: Mutex::new(HashMap::new()),
        }
    }

    /// Replace the table; the next query is answered from it.
    pub fn set_table(&self, table: Table) {
        self.shared.table.store(Arc::new(table));
    }

    /// Make the open sockets match `addrs`: close the extra ones, open the missing
    /// ones. Errors name the addresses that could not be opened (they are tried again
    /// at the next call); the others are served regardless.
    pub fn listen_on(&self, addrs: &BTreeSet<Ipv4Addr>) -> Vec<DnsError> {
        let mut ls = self.listeners.lock().expect("listeners lock");
        ls.retain(|a, _| addrs.contains(a));
        let mut errors = vec![];
        for a in addrs {
            if ls.contains_key(a) {
                continue;
            }
            match self.open(*a) {
                Ok(l) => {
                    ls.insert(*a, l);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// The addresses served now.
    pub fn listening(&self) -> BTreeSet<Ipv4Addr> {
        self.listeners
            .lock()
            .expect("listeners lock")
            .keys()
            .copied()
            .collect()
    }

    fn open(&self, ip: Ipv4Addr) -> Result<Listener, DnsError> {
        let addr = SocketAddr::from((ip, self.port));
        let udp = bind(addr, Type::DGRAM).map_err(|source| DnsError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        let udp: UdpSocket = udp.into();
        let tcp = bind(addr, Type::STREAM)
            .and_then(|s| {
                s.listen(128)?;
                s.set_nonblocking(true)?;
                Ok(TcpListener::from(s))
            })
            .map_err(|source| DnsError::Bind {
                addr,
                proto: "tcp",
                source,
            })?;
        let tcp = {
            let _in_runtime = self.shared.runtime.enter();
            tokio::net::TcpListener::from_std(tcp).map_err(|source| DnsError::Bind {
                addr,
                proto: "tcp",
                source,
            })?
        };
        let udp = Arc::new(udp);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (udp, stop, shared) = (udp.clone(), stop.clone(), self.shared.clone());
            std::thread::Builder::new()
                .name(format!("dns-{ip}"))
                .spawn(move || serve_udp(&udp, &stop, &shared))
                .map_err(|source| DnsError::Bind {
                    addr,
                    proto: "udp",
                    source,
                })?
        };
        let tcp = self
            .shared
            .runtime
            .spawn(serve_tcp(tcp, self.shared.clone()))
            .abort_handle();
        Ok(Listener {
            udp,
            stop,
            thread: Some(thread),
            tcp,
        })
    }
}

fn bind(addr: SocketAddr, ty: Type) -> io::Result<Socket> {
    let proto = if ty == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let s = Socket::new(Domain::IPV4, ty, Some(proto))?;
    s.set_freebind_v4(true)?;
    s.set_reuse_address(true)?;
    if ty == Type::STREAM {
        // A listener being aborted may hold the port a moment longer.
        s.set_reuse_port(true)?;
    } else {
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
    }
    s.bind(&addr.into())?;
    Ok(s)
}

fn serve_udp(sock: &Arc<UdpSocket>, stop: &AtomicBool, shared: &Arc<Shared>) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    tracing::warn!("dns: receive: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
        };
        let packet = &buf[..n];
        // `handle` is fuzzed and should never panic; if it does, this packet is
        // dropped and the socket keeps serving.
        let table = shared.table.load();
        let action = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handle(&table, peer.ip(), packet, Transport::Udp)
        }))
        .unwrap_or(Action::Drop);
        drop(table);
        match action {
            Action::Reply(b) => {
                let _ = sock.send_to(&b, peer);
            }
            Action::Drop => {}
            Action::Forward { upstreams, limit } => {
                let Ok(permit) = shared.inflight.clone().try_acquire_owned() else {
                    tracing::debug!("dns: too many forwarded queries; dropped one from {peer}");
                    continue;
                };
                let (query, sock, fwd) = (packet.to_vec(), sock.clone(), shared.forwarder);
                shared.runtime.spawn(async move {
                    let _permit = permit;
                    let reply = match fwd.forward(&query, &upstreams, limit).await {
                        Some(r) => Some(r),
                        None => servfail(&query),
                    };
                    if let Some(r) = reply {
                        let _ = sock.send_to(&r, peer);
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("dns: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = shared.tcp_conns.clone().try_acquire_owned() else {
            continue; // dropping `conn` closes it
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_tcp_conn(conn, peer.ip(), &shared).await {
                tracing::debug!("dns: tcp from {peer}: {e}");
            }
        });
    }
}

async fn serve_tcp_conn(
    mut conn: tokio::net::TcpStream,
    peer: IpAddr,
    shared: &Shared,
) -> io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, conn.read_u16()).await {
            Ok(Ok(n)) => n as usize,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut query = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, conn.read_exact(&mut query))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle"))??;
        let action = handle(&shared.table.load(), peer, &query, Transport::Tcp);
        let reply = match action {
            Action::Reply(b) => b,
            Action::Drop => return Ok(()),
            Action::Forward { upstreams, limit } => {
                match shared.forwarder.forward(&query, &upstreams, limit).await {
                    Some(r) => r,
                    None => servfail(&query).unwrap_or_default(),
                }
            }
        };
        if reply.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        out.extend_from_slice(&reply);
        conn.write_all(&out).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Membership, SandboxRecord};
    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(99).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn ask(to: SocketAddr, q: &[u8]) -> Message {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(q, to).unwrap();
        let mut b = [0u8; 1500];
        let n = c.recv(&mut b).unwrap();
        Message::from_vec(&b[..n]).unwrap()
    }

    /// Serves 127.0.0.1 on a free port: no root, no real network.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_over_udp_and_tcp_and_survives_table_swaps_and_socket_changes() {
        let port = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let srv = Server::new(port, Forwarder::default(), Handle::current());
        let lo: Ipv4Addr = "127.0.0.1".parse().unwrap();
        let t = |ip: &str| {
            Table::build(
                &[SandboxRecord {
                    memberships: vec![
                        Membership {
                            network: "n".into(),
                            ip: lo,
                            names: vec!["me".into()],
                        },
                        Membership {
                            network: "n".into(),
                            ip: ip.parse().unwrap(),
                            names: vec!["web".into()],
                        },
                    ],
                    forward: false,
                    ..Default::default()
                }],
                &[],
            )
        };
        srv.set_table(t("10.0.0.2"));
        assert!(srv.listen_on(&[lo].into()).is_empty());
        let to = SocketAddr::from((lo, port));
        let r = tokio::task::spawn_blocking(move || ask(to, &query("web.")))
            .await
            .unwrap();
        assert_eq!(r.answers().len(), 1);
        srv.set_table(t("10.0.0.3"));
        let r = tokio::task::spawn_blocking(move || ask(to, &query("web.")))
            .await
            .unwrap();
        assert_eq!(r.answers()[0].data().to_string(), "10.0.0.3");
        let r = tokio::task::spawn_blocking(move || ask(to, &query("elsewhere.test.")))
            .await
            .unwrap();
        assert_eq!(r.response_code(), ResponseCode::Refused);

        // TCP.
        let mut c = tokio::net::TcpStream::connect(to).await.unwrap();
        let q = query("web.");
        c.write_u16(q.len() as u16).await.unwrap();
        c.write_all(&q).await.unwrap();
        let n = c.read_u16().await.unwrap() as usize;
        let mut b = vec![0u8; n];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(Message::from_vec(&b).unwrap().answers().len(), 1);

        // Close and reopen at once: the address is free again.
        assert!(srv.listen_on(&BTreeSet::new()).is_empty());
        assert!(srv.listening().is_empty());
        assert!(srv.listen_on(&[lo].into()).is_empty());
        let r = tokio::task::spawn_blocking(move || ask(to, &query("web.")))
            .await
            .unwrap();
        assert_eq!(r.answers().len(), 1);
        drop(srv);
    }
}
