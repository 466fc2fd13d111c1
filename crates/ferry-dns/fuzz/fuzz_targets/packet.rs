//! Any bytes, from a known sandbox, a stranger, or an internal-only sandbox, over UDP
//! and TCP: `handle` must return (never panic, never loop), and whatever it replies
//! must parse back as a DNS response with the query's ID.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use ferry_dns::{handle, Action, Membership, SandboxRecord, Table, Transport};
use libfuzzer_sys::fuzz_target;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let sb = |ip: &str, names: &[&str], forward: bool| SandboxRecord {
            memberships: vec![Membership {
                network: "n".into(),
                ip: ip.parse().unwrap(),
                names: names.iter().map(|s| s.to_string()).collect(),
            }],
            forward,
            ..Default::default()
        };
        Table::build(
            &[
                sb("10.1.0.2", &["web", "www"], true),
                sb("10.1.0.3", &["client"], true),
                sb("10.1.0.4", &["inner"], false),
            ],
            &["127.0.0.1:53".parse().unwrap()],
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let askers: [IpAddr; 3] = [
        "10.1.0.3".parse().unwrap(),
        "10.1.0.4".parse().unwrap(),
        "10.9.9.9".parse().unwrap(),
    ];
    for asker in askers {
        for tr in [Transport::Udp, Transport::Tcp] {
            if let Action::Reply(b) = handle(table(), asker, data, tr) {
                assert!(b.len() >= 12, "reply shorter than a header");
                assert_eq!(&b[..2], &data[..2], "reply ID differs from the query's");
                assert!(b[2] & 0x80 != 0, "reply is not a response");
                if tr == Transport::Udp {
                    assert!(b.len() <= ferry_dns::packet::MAX_UDP, "UDP reply too big");
                }
            }
        }
    }
});
