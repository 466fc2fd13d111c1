//! The forwarder: a query ferry does not own goes, unchanged, to the asker's upstream
//! servers in order; the first answer comes back. UDP first, from a fresh socket per
//! query (a random source port, replies accepted only from the server asked and only
//! with the query's ID); a truncated answer is asked again over TCP. Every step is
//! bounded by one deadline per query, after which the asker gets SERVFAIL: a dead
//! upstream never makes a sandbox hang.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

/// Deadlines of a forwarded query.
#[derive(Debug, Clone, Copy)]
pub struct Forwarder {
    /// The most one upstream gets before the next is tried.
    pub per_upstream: Duration,
    /// The most a whole query takes before SERVFAIL.
    pub total: Duration,
}

impl Default for Forwarder {
    fn default() -> Self {
        // Below glibc's and busybox's 5 s retry timer, so the asker sees SERVFAIL
        // rather than its own timeout.
        Forwarder {
            per_upstream: Duration::from_millis(1500),
            total: Duration::from_millis(2500),
        }
    }
}

fn id_of(packet: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.first()?, *packet.get(1)?]))
}

fn truncated(packet: &[u8]) -> bool {
    packet.get(2).is_some_and(|b| b & 0x02 != 0)
}

fn is_answer_to(reply: &[u8], id: u16) -> bool {
    reply.len() >= 12 && id_of(reply) == Some(id) && reply[2] & 0x80 != 0
}

impl Forwarder {
    /// Ask `upstreams` for `query`; the answer, at most `limit` bytes (a truncated
    /// UDP answer stands in when the whole one is bigger), or None when none answered
    /// in time.
    pub async fn forward(
        &self,
        query: &[u8],
        upstreams: &[SocketAddr],
        limit: usize,
    ) -> Option<Vec<u8>> {
        let id = id_of(query)?;
        let end = Instant::now() + self.total;
        for up in upstreams {
            let this_end = end.min(Instant::now() + self.per_upstream);
            match timeout_at(this_end, udp(query, *up, id)).await {
                Ok(Ok(reply)) if truncated(&reply) => {
                    match timeout_at(this_end, tcp(query, *up, id)).await {
                        Ok(Ok(whole)) if whole.len() <= limit => return Some(whole),
                        _ => return Some(reply),
                    }
                }
                Ok(Ok(reply)) if reply.len() <= limit => return Some(reply),
                // Bigger than the asker takes and not marked truncated: send it the
                // header and question with TC set, so it asks again over TCP.
                Ok(Ok(reply)) => return truncated_copy(&reply),
                Ok(Err(e)) => tracing::debug!("forward to {up}: {e}"),
                Err(_) => tracing::debug!("forward to {up}: timed out"),
            }
            if Instant::now() >= end {
                break;
            }
        }
        None
    }
}

fn truncated_copy(reply: &[u8]) -> Option<Vec<u8>> {
    hickory_proto::op::Message::from_vec(reply)
        .ok()?
        .truncate()
        .to_vec()
        .ok()
}

async fn udp(query: &[u8], up: SocketAddr, id: u16) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match up {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(up).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if is_answer_to(&buf[..n], id) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(query: &[u8], up: SocketAddr, id: u16) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let n = s.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    if is_answer_to(&buf, id) {
        Ok(buf)
    } else {
        Err(std::io::Error::other("answer does not match the query"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_upstream_gives_none_within_the_deadline() {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let f = Forwarder {
            per_upstream: Duration::from_millis(200),
            total: Duration::from_millis(300),
        };
        let t = std::time::Instant::now();
        let q = [0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let ups = [silent.local_addr().unwrap(), silent.local_addr().unwrap()];
        assert_eq!(f.forward(&q, &ups, 512).await, None);
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn an_answer_too_big_for_the_asker_goes_back_truncated() {
        use hickory_proto::op::{Message, MessageType, Query};
        use hickory_proto::rr::rdata::TXT;
        use hickory_proto::rr::{Name, RData, Record, RecordType};
        let up = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = up.local_addr().unwrap();
        let mut q = Message::new();
        q.set_id(0x1234);
        q.add_query(Query::query(
            Name::from_ascii("big.test.").unwrap(),
            RecordType::TXT,
        ));
        let qb = q.to_vec().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 512];
            let (_, from) = up.recv_from(&mut b).unwrap();
            let mut r = q.clone();
            r.set_message_type(MessageType::Response);
            let txt = RData::TXT(TXT::new(vec!["x".repeat(200); 4]));
            r.add_answer(Record::from_rdata(
                Name::from_ascii("big.test.").unwrap(),
                5,
                txt,
            ));
            up.send_to(&r.to_vec().unwrap(), from).unwrap();
        });
        let r = Forwarder::default()
            .forward(&qb, &[addr], 512)
            .await
            .unwrap();
        let m = Message::from_vec(&r).unwrap();
        assert!(m.truncated() && m.answers().is_empty() && m.id() == 0x1234);
        assert_eq!(m.queries().len(), 1);
    }

    #[tokio::test]
    async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = std::net::TcpListener::bind(addr).unwrap();
        let q = vec![0xab, 0xcd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        std::thread::spawn(move || {
            let mut b = [0u8; 512];
            let (_, from) = udp.recv_from(&mut b).unwrap();
            // ID, QR + TC.
            udp.send_to(&[0xab, 0xcd, 0x82, 0, 0, 0, 0, 0, 0, 0, 0, 0], from)
                .unwrap();
            use std::io::{Read, Write};
            let (mut c, _) = tcp.accept().unwrap();
            let mut l = [0u8; 2];
            c.read_exact(&mut l).unwrap();
            let mut body = vec![0u8; u16::from_be_bytes(l) as usize];
            c.read_exact(&mut body).unwrap();
            let mut whole = vec![0xab, 0xcd, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            whole.extend(std::iter::repeat_n(0u8, 100));
            c.write_all(&(whole.len() as u16).to_be_bytes()).unwrap();
            c.write_all(&whole).unwrap();
        });
        let r = Forwarder::default()
            .forward(&q, &[addr], 512)
            .await
            .unwrap();
        assert_eq!(r.len(), 112);
        assert!(!truncated(&r));
    }
}
