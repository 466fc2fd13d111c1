//! Property: a table changed record by record answers exactly as the table built
//! from scratch of the records it then holds, after every step of random histories
//! (shared aliases, several networks, sandboxes on two networks, addresses claimed
//! twice, other addresses, forward flags, own upstreams).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;

const NETS: [&str; 3] = ["n1", "n2", "n3"];
const NAMES: [&str; 7] = ["web", "WEB.", "db", "api", "cache", "x", ""];
const SLOTS: usize = 6;

fn member_ip(net: usize, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, net as u8 + 1, 0, host)
}

fn other_ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(172, 17, 0, host)
}

fn upstream(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5300 + n))
}

fn random_record(rng: &mut StdRng) -> SandboxRecord {
    let count = rng.gen_range(0..=2);
    let nets: Vec<usize> = (0..NETS.len()).collect();
    let memberships = nets
        .choose_multiple(rng, count)
        .map(|&n| Membership {
            network: NETS[n].into(),
            ip: member_ip(n, rng.gen_range(2..6)),
            names: (0..rng.gen_range(0..=3))
                .map(|_| NAMES.choose(rng).expect("not empty").to_string())
                .collect(),
        })
        .collect();
    SandboxRecord {
        memberships,
        other_addrs: (0..rng.gen_range(0..=2))
            .map(|_| other_ip(rng.gen_range(2..5)))
            .collect(),
        forward: rng.gen_bool(0.7),
        upstreams: (0..rng.gen_range(0..=2)).map(upstream).collect(),
    }
}

/// Every asker address the records can use, and two strangers.
fn askers() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = (0..NETS.len())
        .flat_map(|n| (1..7).map(move |h| member_ip(n, h).into()))
        .collect();
    v.extend((1..6).map(|h| IpAddr::from(other_ip(h))));
    v.push("10.9.9.9".parse().expect("literal"));
    v.push("fd00::2".parse().expect("literal"));
    v
}

/// Every question worth asking: each name (and some that are no one's) by type, and
/// the reverse name of each address.
fn questions() -> Vec<(String, RecordType)> {
    let mut names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(["unknown.test".into(), "web.corp".into(), "Db".into()]);
    let mut q = vec![];
    for n in names {
        for t in [RecordType::A, RecordType::AAAA, RecordType::PTR] {
            q.push((n.clone(), t));
        }
    }
    for ip in askers() {
        if let IpAddr::V4(v4) = ip {
            let [a, b, c, d] = v4.octets();
            q.push((format!("{d}.{c}.{b}.{a}.in-addr.arpa."), RecordType::PTR));
        }
    }
    q
}

fn assert_same(changed: &Table, built: &Table, step: &str) {
    assert_eq!(changed.canonical(), built.canonical(), "dump after {step}");
    let questions = questions();
    for asker in askers() {
        assert_eq!(
            unowned(changed, asker),
            unowned(built, asker),
            "{step}: unowned from {asker}"
        );
        for (name, t) in &questions {
            assert_eq!(
                lookup(changed, asker, name, *t),
                lookup(built, asker, name, *t),
                "{step}: {t} {name} from {asker}"
            );
        }
    }
}

/// One step: up to three distinct sandboxes come, go or change, in one `apply`.
fn step(
    rng: &mut StdRng,
    slots: &mut [Option<SandboxRecord>],
) -> (Vec<SandboxRecord>, Vec<SandboxRecord>) {
    let (mut removed, mut added) = (vec![], vec![]);
    let all: Vec<usize> = (0..SLOTS).collect();
    let n = rng.gen_range(1..=3);
    let picked: Vec<usize> = all.choose_multiple(rng, n).copied().collect();
    for s in picked {
        let next = match (&slots[s], rng.gen_range(0..3)) {
            (Some(_), 0) => None,
            _ => Some(random_record(rng)),
        };
        removed.extend(slots[s].take());
        added.extend(next.clone());
        slots[s] = next;
    }
    (removed, added)
}

#[test]
fn a_table_changed_step_by_step_answers_as_one_built_from_scratch() {
    let defaults = [upstream(53)];
    for seed in 0..4 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut slots: Vec<Option<SandboxRecord>> = vec![None; SLOTS];
        let mut table = Table::empty(&defaults);
        for i in 0..250 {
            let (removed, added) = step(&mut rng, &mut slots);
            let next = table.apply(&removed, &added);
            let held: Vec<SandboxRecord> = slots.iter().flatten().cloned().collect();
            let label = format!("seed {seed} step {i}: -{removed:?} +{added:?}");
            assert_same(&next, &Table::build(&held, &defaults), &label);
            table = next;
        }
        let held: Vec<SandboxRecord> = slots.iter().flatten().cloned().collect();
        let drained = table.apply(&held, &[]);
        assert_eq!(drained.canonical(), Table::empty(&defaults).canonical());
    }
}

#[test]
fn an_applied_change_leaves_the_old_table_as_it_was() {
    let mut rng = StdRng::seed_from_u64(7);
    let records: Vec<SandboxRecord> = (0..5).map(|_| random_record(&mut rng)).collect();
    let old = Table::build(&records, &[]);
    let before = old.canonical();
    let new = old.apply(&records[..2], &[random_record(&mut rng)]);
    assert_eq!(old.canonical(), before);
    assert_ne!(new.canonical(), before);
}
