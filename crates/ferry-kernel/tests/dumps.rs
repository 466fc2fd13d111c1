//! Dumps asked at once on ferryd's one netlink handle all answer. The kernel runs one
//! dump per socket and refuses a second with EBUSY; ferryd's tasks, on several threads,
//! share the handle, and a network create (which lists the host's routes) once answered
//! 500 "list routes: Device or resource busy" because the periodic check was listing at
//! the same moment. Without the dump lock this test fails with dozens of such errors.
//! It also asks more at once than the socket's default receive buffer holds answers for:
//! an answer the kernel drops for want of room never comes (ferry_kernel::rtnl), which this test
//! reports after a minute instead of hanging. Root only; everything happens in a
//! namespace of the test's own.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use ferry_kernel::{BridgeSpec, KernelError, KernelOps, Netlink};

const BRIDGES: u8 = 40;

fn bridge(i: u8) -> String {
    format!("fy-d0d0d0{i:02x}")
}

/// One of four kinds of request, each a dump or with one beside it: routes, links, a
/// link's kind (not a dump), an address removal (a dump of the link's addresses first).
async fn ask(k: &Netlink, i: u8) -> Result<(), KernelError> {
    let name = bridge(i % BRIDGES);
    match i % 4 {
        0 => {
            let last = format!("10.78.{}.0/24", BRIDGES - 1).parse().unwrap();
            let routes = k.route_destinations().await?;
            assert!(
                routes.contains(&last),
                "routes answered in part: {routes:?}"
            );
        }
        1 => {
            let links = k.link_names().await?;
            assert!(
                links.contains(&bridge(BRIDGES - 1)),
                "links answered in part"
            );
        }
        2 => assert!(k.link_kind(&name).await?.is_some()),
        _ => {
            k.remove_address(&name, "10.99.0.1/24".parse().unwrap())
                .await?
        }
    }
    Ok(())
}

async fn many_dumps_at_once(_dir: std::path::PathBuf) {
    let k = Arc::new(Netlink::new().expect("netlink"));
    // Enough links that a dump of them takes several reads (a dump that fits in one
    // answer is over before anything else can be asked).
    for i in 0..BRIDGES {
        k.ensure_bridge(&BridgeSpec {
            name: bridge(i),
            gateway: Some(format!("10.78.{i}.1/24").parse().expect("net")),
            mtu: 1500,
        })
        .await
        .expect("bridge");
    }
    let tasks: Vec<_> = (0..=255u8)
        .map(|i| {
            let k = k.clone();
            tokio::spawn(async move { ask(&k, i).await })
        })
        .collect();
    let mut refused = vec![];
    let all = async {
        for t in tasks {
            if let Err(e) = t.await.expect("task") {
                refused.push(e.to_string());
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("every request answered within a minute (an answer was lost)");
    assert!(refused.is_empty(), "{} refused: {refused:?}", refused.len());
}

#[test]
fn dumps_asked_at_once_from_many_threads_on_one_handle_all_answer() {
    common::in_own_netns("dumps", 4, many_dumps_at_once);
}
