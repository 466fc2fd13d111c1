//! One query packet in, one decision out: an answer to send, a packet to forward, or
//! nothing. No I/O; this is what the fuzz target drives.
//!
//! Bad input: shorter than a header, or a response (QR set, which could loop between
//! two responders) → dropped; a header followed by garbage → FORMERR; an opcode other
//! than QUERY → NOTIMP; not exactly one question → FORMERR.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::table::{lookup, unowned, Answer, Table, TTL};

/// How the query came in: UDP answers must fit the asker's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes back to the asker.
    Reply(Vec<u8>),
    /// Send the query, unchanged, to these servers; relay the answer. `limit` is the
    /// largest answer the asker takes over its transport.
    Forward {
        upstreams: Arc<[SocketAddr]>,
        limit: usize,
    },
    /// Say nothing.
    Drop,
}

/// The EDNS payload size ferry advertises and the most it sends over UDP.
pub const MAX_UDP: usize = 1232;

/// The largest UDP answer the asker said it takes (512 without EDNS).
fn udp_limit(req: &Message) -> usize {
    req.extensions()
        .as_ref()
        .map_or(512, |e| (e.max_payload() as usize).clamp(512, MAX_UDP))
}

/// Decide what to do with `packet`, asked by `asker` over `transport`.
pub fn handle(table: &Table, asker: IpAddr, packet: &[u8], transport: Transport) -> Action {
    let Ok(header) = Header::read(&mut BinDecoder::new(packet)) else {
        return Action::Drop;
    };
    if header.message_type() != MessageType::Query {
        return Action::Drop;
    }
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return error_reply(&header, ResponseCode::FormErr),
    };
    if req.op_code() != OpCode::Query {
        return error_reply(&header, ResponseCode::NotImp);
    }
    let [q] = req.queries() else {
        return error_reply(&header, ResponseCode::FormErr);
    };
    let limit = match transport {
        Transport::Udp => udp_limit(&req),
        Transport::Tcp => u16::MAX as usize,
    };
    let answer = if q.query_class() == DNSClass::IN {
        lookup(table, asker, &q.name().to_ascii(), q.query_type())
    } else {
        unowned(table, asker)
    };
    let name = q.name().clone();
    let (rcode, records) = match answer {
        Answer::Forward(upstreams) => return Action::Forward { upstreams, limit },
        Answer::A(ips) => (
            ResponseCode::NoError,
            ips.into_iter()
                .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip))))
                .collect(),
        ),
        Answer::Ptr(names) => (
            ResponseCode::NoError,
            names
                .iter()
                .filter_map(|n| Name::from_ascii(n).ok())
                .map(|n| Record::from_rdata(name.clone(), TTL, RData::PTR(PTR(n))))
                .collect(),
        ),
        Answer::NoData => (ResponseCode::NoError, vec![]),
        Answer::NxDomain => (ResponseCode::NXDomain, vec![]),
        Answer::ServFail => (ResponseCode::ServFail, vec![]),
        Answer::Refused => (ResponseCode::Refused, vec![]),
    };
    let mut m = response_to(&req, rcode);
    m.set_authoritative(matches!(
        rcode,
        ResponseCode::NoError | ResponseCode::NXDomain
    ));
    let full = {
        m.add_answers(records);
        m.to_vec()
    };
    match full {
        Ok(b) if b.len() <= limit => Action::Reply(b),
        Ok(_) => {
            // Too big for the asker's buffer: no answers, TC set; it retries over TCP.
            m.take_answers();
            m.set_truncated(true);
            m.to_vec().map_or(Action::Drop, Action::Reply)
        }
        Err(_) => error_reply(&header, ResponseCode::ServFail),
    }
}

/// A response skeleton: the question echoed, flags copied from the request.
fn response_to(req: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(req.checking_disabled())
        .set_response_code(rcode);
    m.add_queries(req.queries().iter().cloned());
    if req.extensions().is_some() {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP as u16);
        m.set_edns(e);
    }
    m
}

/// An answer with no question section: for requests whose body did not parse.
fn error_reply(header: &Header, rcode: ResponseCode) -> Action {
    let mut m = Message::new();
    m.set_id(header.id())
        .set_message_type(MessageType::Response)
        .set_op_code(header.op_code())
        .set_recursion_desired(header.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(rcode);
    m.to_vec().map_or(Action::Drop, Action::Reply)
}

/// The SERVFAIL answer to `query` (when every upstream failed). None if the query
/// cannot be parsed (it would have been answered FORMERR before forwarding).
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    response_to(&req, ResponseCode::ServFail).to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Membership, SandboxRecord};
    use hickory_proto::op::Query;
    use hickory_proto::rr::RecordType;

    fn table() -> Table {
        let sb = |ip: &str, names: &[&str]| SandboxRecord {
            memberships: vec![Membership {
                network: "n".into(),
                ip: ip.parse().unwrap(),
                names: names.iter().map(|s| s.to_string()).collect(),
            }],
            forward: true,
            ..Default::default()
        };
        let mut sbs = vec![sb("10.1.0.2", &["web"]), sb("10.1.0.3", &["client"])];
        // Many holders of one alias: too many A records for 512 bytes.
        for i in 10..60 {
            sbs.push(sb(&format!("10.1.0.{i}"), &[&format!("w{i}"), "many"]));
        }
        Table::build(&sbs, &["127.0.0.1:53".parse().unwrap()])
    }

    fn query(name: &str, t: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m
    }

    fn ask(m: &Message, tr: Transport) -> Message {
        let client = "10.1.0.3".parse().unwrap();
        match handle(&table(), client, &m.to_vec().unwrap(), tr) {
            Action::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn a_query_gets_the_address_with_the_short_ttl_and_the_question_echoed() {
        let r = ask(&query("web.", RecordType::A), Transport::Udp);
        assert_eq!(r.id(), 4242);
        assert_eq!(r.message_type(), MessageType::Response);
        assert!(r.recursion_desired() && r.recursion_available());
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert_eq!(r.queries().len(), 1);
        assert_eq!(r.answers().len(), 1);
        assert_eq!(r.answers()[0].ttl(), TTL);
        assert_eq!(
            r.answers()[0].data(),
            &RData::A(A("10.1.0.2".parse().unwrap()))
        );
    }

    #[test]
    fn ptr_and_nxdomain_and_aaaa() {
        let r = ask(
            &query("2.0.1.10.in-addr.arpa.", RecordType::PTR),
            Transport::Udp,
        );
        assert_eq!(
            r.answers()[0].data(),
            &RData::PTR(PTR(Name::from_ascii("web.").unwrap()))
        );
        let mut other = query("web.", RecordType::AAAA);
        other.set_id(7);
        let r = ask(&other, Transport::Udp);
        assert_eq!(
            (r.response_code(), r.answers().len()),
            (ResponseCode::NoError, 0)
        );
    }

    #[test]
    fn unknown_names_are_forwarded_with_the_askers_limit() {
        let client = "10.1.0.3".parse().unwrap();
        let q = query("example.test.", RecordType::A).to_vec().unwrap();
        assert!(matches!(
            handle(&table(), client, &q, Transport::Udp),
            Action::Forward { limit: 512, .. }
        ));
        let mut e = query("example.test.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        e.set_edns(edns);
        assert!(matches!(
            handle(&table(), client, &e.to_vec().unwrap(), Transport::Udp),
            Action::Forward { limit: MAX_UDP, .. }
        ));
    }

    #[test]
    fn an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp() {
        let r = ask(&query("many.", RecordType::A), Transport::Udp);
        assert!(r.truncated());
        assert!(r.answers().is_empty());
        let r = ask(&query("many.", RecordType::A), Transport::Tcp);
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 50);
    }

    #[test]
    fn garbage_is_dropped_or_formerr_never_a_panic() {
        let t = table();
        let c = "10.1.0.3".parse().unwrap();
        assert_eq!(handle(&t, c, &[], Transport::Udp), Action::Drop);
        assert_eq!(handle(&t, c, &[1, 2, 3], Transport::Udp), Action::Drop);
        // A header claiming one question, then nothing.
        let h = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        let Action::Reply(b) = handle(&t, c, &h, Transport::Udp) else {
            panic!("expected FORMERR")
        };
        let r = Message::from_vec(&b).unwrap();
        assert_eq!((r.id(), r.response_code()), (0x1234, ResponseCode::FormErr));
        // A response is never answered (no loops between responders).
        let resp = [0x12, 0x34, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(handle(&t, c, &resp, Transport::Udp), Action::Drop);
        // No question at all.
        let none = [0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        let Action::Reply(b) = handle(&t, c, &none, Transport::Udp) else {
            panic!("expected FORMERR")
        };
        assert_eq!(
            Message::from_vec(&b).unwrap().response_code(),
            ResponseCode::FormErr
        );
    }

    #[test]
    fn other_opcodes_are_not_implemented() {
        let mut m = query("web.", RecordType::A);
        m.set_op_code(OpCode::Update);
        let r = ask(&m, Transport::Udp);
        assert_eq!(r.response_code(), ResponseCode::NotImp);
    }

    #[test]
    fn servfail_echoes_the_question() {
        let q = query("example.test.", RecordType::A).to_vec().unwrap();
        let r = Message::from_vec(&servfail(&q).unwrap()).unwrap();
        assert_eq!(
            (r.id(), r.response_code(), r.queries().len()),
            (4242, ResponseCode::ServFail, 1)
        );
    }
}
