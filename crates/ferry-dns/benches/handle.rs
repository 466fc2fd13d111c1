//! The pure part of one query (parse, look up, build the answer), without sockets:
//! `cargo bench -p ferry-dns --bench handle` (about 0.5 µs here). Then the cost of one
//! sandbox more in the table, next to 0 and 1000 others: it should not grow.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use ferry_dns::{handle, Membership, SandboxRecord, Table, Transport};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

fn record(i: u32) -> SandboxRecord {
    SandboxRecord {
        memberships: vec![Membership {
            network: "n".into(),
            ip: Ipv4Addr::from(0x0a01_0000 + i),
            names: vec![format!("s{i}"), format!("h{i}")],
        }],
        forward: true,
        ..Default::default()
    }
}

/// The mean time of `f` over `n` runs.
fn mean(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

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
    one_more();
}

/// One sandbox added to a table (the old table dropped, as the server does), with 0
/// and with 1000 sandboxes present; and the whole build that used to run instead.
fn one_more() {
    let new = [record(5000)];
    let mut line = String::from("apply: one sandbox more");
    for present in [0, 1000] {
        let all: Vec<SandboxRecord> = (2..2 + present).map(record).collect();
        let t = Table::build(&all, &[]);
        let d = mean(20_000, || drop(std::hint::black_box(t.apply(&[], &new))));
        line += &format!(", next to {present}: {d:?}");
    }
    let all: Vec<SandboxRecord> = (2..1002).map(record).collect();
    let d = mean(50, || drop(std::hint::black_box(Table::build(&all, &[]))));
    println!("{line} (a whole build of 1000: {d:?})");
}
