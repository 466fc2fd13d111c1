//! The responder's sockets: a UDP socket and a TCP listener on each listen address
//! (ferryd gives one per network: its gateway, port 53), all answering from one shared
//! table that is swapped whole on change. Sockets are reconciled against the desired
//! set of addresses; a table swap never touches them, so no query is lost to a change.
//!
//! UDP, the hot path, runs on one plain thread per address (`udp`: batches of queries
//! in, batches of answers out, no async machinery per packet). TCP is served by tokio
//! tasks (at most `MAX_TCP` connections, each idle for at most `TCP_IDLE`).
//!
//! Sockets bind with IP_FREEBIND so they can be opened before the bridge holds the
//! address. Closing a UDP socket shuts it down (which wakes the blocked `recvmmsg`)
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

mod mmsg;
mod udp;

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
        // Wakes the thread blocked in recvmmsg. On an unconnected UDP socket Linux
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
                .spawn(move || udp::serve(&udp, &stop, &shared))
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

    /// More queries than one batch, queued before the server reads any: every one
    /// is answered, to the socket that asked, under its own ID.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_queries_from_several_askers_gets_every_answer() {
        let port = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let srv = Server::new(port, Forwarder::default(), Handle::current());
        let lo: Ipv4Addr = "127.0.0.1".parse().unwrap();
        srv.set_table(Table::build(
            &[SandboxRecord {
                memberships: vec![Membership {
                    network: "n".into(),
                    ip: lo,
                    names: vec!["me".into()],
                }],
                forward: false,
                ..Default::default()
            }],
            &[],
        ));
        assert!(srv.listen_on(&[lo].into()).is_empty());
        let to = SocketAddr::from((lo, port));
        tokio::task::spawn_blocking(move || {
            let askers: Vec<UdpSocket> = (0..3)
                .map(|_| {
                    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    c
                })
                .collect();
            let per_asker = 2 * mmsg::BATCH as u16;
            for id in 0..per_asker {
                for (k, c) in askers.iter().enumerate() {
                    let mut m = Message::from_vec(&query("me.")).unwrap();
                    m.set_id(id * 3 + k as u16);
                    c.send_to(&m.to_vec().unwrap(), to).unwrap();
                }
            }
            for (k, c) in askers.iter().enumerate() {
                let mut ids = BTreeSet::new();
                let mut b = [0u8; 1500];
                for _ in 0..per_asker {
                    let n = c.recv(&mut b).unwrap();
                    let r = Message::from_vec(&b[..n]).unwrap();
                    assert_eq!(r.answers().len(), 1);
                    ids.insert(r.id());
                }
                let want: BTreeSet<u16> = (0..per_asker).map(|id| id * 3 + k as u16).collect();
                assert_eq!(ids, want);
            }
        })
        .await
        .unwrap();
    }
}
