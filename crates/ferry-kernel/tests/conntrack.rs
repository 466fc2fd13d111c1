//! Marking a real TCP flow's conntrack entry liberal, and reading it back, in a network
//! namespace of the test's own (loopback; an nftables rule that makes conntrack track).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};

use ferry_kernel::conntrack::{self, TcpFlow};

#[test]
fn a_flows_entry_is_marked_liberal_both_ways_and_a_missing_one_is_enoent() {
    common::in_own_netns("conntrack", 1, |_| async {
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(up.success());
        let nft = ferry_kernel::nft::Nft::open().expect("libnftables");
        nft.run("add table inet t\nadd chain inet t c { type filter hook output priority 0; }\nadd rule inet t c ct state established counter\n")
            .expect("a rule that makes conntrack track");

        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = server.accept().unwrap();
        client.write_all(b"x").unwrap();
        accepted.read_exact(&mut [0u8; 1]).unwrap();
        accepted.write_all(b"y").unwrap();
        client.read_exact(&mut [0u8; 1]).unwrap();
        let flow = TcpFlow {
            src: Ipv4Addr::LOCALHOST,
            dst: Ipv4Addr::LOCALHOST,
            sport: client.local_addr().unwrap().port(),
            dport: server.local_addr().unwrap().port(),
        };

        assert_eq!(
            conntrack::liberal(&flow).unwrap(),
            Some(false),
            "a fresh entry is strict"
        );
        conntrack::mark_liberal(&flow).unwrap();
        assert_eq!(conntrack::liberal(&flow).unwrap(), Some(true));

        let missing = TcpFlow {
            sport: flow.sport.wrapping_add(1),
            ..flow
        };
        assert_eq!(conntrack::liberal(&missing).unwrap(), None);
        let err = conntrack::mark_liberal(&missing).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
        assert!(err.to_string().contains(&missing.to_string()), "{err}");
    });
}
