//! The pure part of one query (parse, look up, build the answer), without sockets:
//! `cargo bench -p ferry-dns --bench handle` (about 0.7 µs here).

use ferry_dns::{handle, Membership, SandboxRecord, Table, Transport};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

fn main() {
    let sbs: Vec<SandboxRecord> = (2..200)
        .map(|i| SandboxRecord {
            memberships: vec![Membership {
                network: "n".into(),
                ip: format!("10.1.0.{i}").parse().unwrap(),
                names: vec![format!("s{i}")],
            }],
            forward: true,
            ..Default::default()
        })
        .collect();
    let t = Table::build(&sbs, &[]);
    let mut m = Message::new();
    m.set_id(1).set_recursion_desired(true);
    m.add_query(Query::query(
        Name::from_ascii("s5.").unwrap(),
        RecordType::A,
    ));
    let q = m.to_vec().unwrap();
    let asker = "10.1.0.3".parse().unwrap();
    let n = 1_000_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(handle(&t, asker, std::hint::black_box(&q), Transport::Udp));
    }
    println!(
        "handle: {:?} per query ({n} queries, 198 sandboxes)",
        start.elapsed() / n
    );
}
