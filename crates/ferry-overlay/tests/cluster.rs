//! The cluster's operations against the store fake: several hosts, each a [`Cluster`]
//! over one shared store, racing as real hosts would.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use ferry_overlay::cluster::{ClusterError, NewOverlay};
use ferry_overlay::{Cluster, EndpointRecord, View};
use ferry_store::{ManualClock, MemStore, Store, WatchMessage};

fn hosts(n: usize) -> (Arc<dyn Store>, ManualClock, Vec<Cluster>) {
    let clock = ManualClock::default();
    let store: Arc<dyn Store> = Arc::new(MemStore::with_clock(Arc::new(clock.clone())));
    let hosts = (1..=n)
        .map(|i| {
            let c = Cluster::new(
                store.clone(),
                format!("host{i}"),
                format!("192.0.2.{i}").parse().unwrap(),
                Duration::from_secs(10),
            );
            c.register("now").unwrap();
            c
        })
        .collect();
    (store, clock, hosts)
}

fn overlay(name: &str) -> NewOverlay {
    NewOverlay {
        id: format!("{name}-id-0123456789abcdef"),
        name: name.into(),
        ..NewOverlay::default()
    }
}

fn ep(c: &Cluster, net: &str, ip: &str, sandbox: &str) -> EndpointRecord {
    let ip = ip.parse().unwrap();
    EndpointRecord {
        network: net.into(),
        ip,
        mac: ferry_core::model::mac_for(ip.into()),
        node: c.node.clone(),
        vtep: c.addr,
        sandbox: sandbox.into(),
        names: vec![sandbox.into()],
    }
}

#[test]
fn overlays_get_dockers_global_subnets_and_distinct_vnis_even_when_hosts_race() {
    let (_, _, h) = hosts(4);
    let made: Vec<_> = std::thread::scope(|s| {
        let t: Vec<_> = h
            .iter()
            .enumerate()
            .map(|(i, c)| s.spawn(move || c.create_network(&overlay(&format!("net{i}"))).unwrap()))
            .collect();
        t.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut subnets: Vec<String> = made.iter().map(|n| n.subnet.to_string()).collect();
    subnets.sort();
    assert_eq!(
        subnets,
        ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
    );
    let mut vnis: Vec<u32> = made.iter().map(|n| n.vni).collect();
    vnis.sort();
    assert_eq!(vnis, [4096, 4097, 4098, 4099]);
    assert!(made.iter().all(|n| n.gateway
        == ipnet::Ipv4Net::new(n.subnet.network(), 24)
            .unwrap()
            .hosts()
            .next()
            .unwrap()));

    let mut again = overlay("net2");
    again.id = "another-id-0123456789abcdef".into();
    let dup = h[0].create_network(&again).unwrap_err();
    assert!(matches!(dup, ClusterError::Duplicate(_)), "{dup}");
    // A repeat with the same ID (a transaction retried after it applied) is the same network.
    assert_eq!(
        h[0].create_network(&overlay("net2")).unwrap().vni,
        made.iter().find(|n| n.name == "net2").unwrap().vni
    );
    let mut o = overlay("overlapping");
    o.subnet = Some("10.0.1.128/25".parse().unwrap());
    let e = h[1].create_network(&o).unwrap_err();
    assert!(e.to_string().contains("10.0.1.0/24"), "{e}");
    assert_eq!(
        h[2].view().unwrap().networks.len(),
        4,
        "refusals changed nothing"
    );
}

#[test]
fn racing_hosts_claim_distinct_blocks_and_keep_theirs() {
    let (_, _, h) = hosts(4);
    let net = h[0].create_network(&overlay("ov")).unwrap();
    let blocks: Vec<_> = std::thread::scope(|s| {
        let t: Vec<_> = h
            .iter()
            .map(|c| s.spawn(|| c.claim_block(&net, &[]).unwrap().block))
            .collect();
        t.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut sorted: Vec<String> = blocks.iter().map(|b| b.to_string()).collect();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "10.0.0.0/26",
            "10.0.0.128/26",
            "10.0.0.192/26",
            "10.0.0.64/26"
        ]
    );
    assert_eq!(
        h[2].claim_block(&net, &[]).unwrap().block,
        blocks[2],
        "a host keeps its block"
    );
    // A second block once the first is full: none is left in a /24 of four.
    assert!(matches!(
        h[2].claim_block(&net, &[blocks[2]]),
        Err(ClusterError::NoBlock(_))
    ));
    let more = Cluster::new(
        h[0].store().clone(),
        "host5".into(),
        "192.0.2.5".parse().unwrap(),
        Duration::from_secs(10),
    );
    more.register("now").unwrap();
    assert!(matches!(
        more.claim_block(&net, &[]),
        Err(ClusterError::NoBlock(_))
    ));
}

#[test]
fn a_static_address_is_claimed_once_and_never_inside_another_hosts_block() {
    let (_, _, h) = hosts(2);
    let mut o = overlay("ov");
    o.subnet = Some("10.9.0.0/24".parse().unwrap());
    o.ip_range = Some("10.9.0.128/25".parse().unwrap());
    let net = h[0].create_network(&o).unwrap();
    let b1 = h[0].claim_block(&net, &[]).unwrap();
    assert_eq!(b1.block.to_string(), "10.9.0.128/27");
    // Outside every block: claimed through the store, once.
    h[1].claim_static(&net, &ep(&h[1], &net.id, "10.9.0.10", "s1"))
        .unwrap();
    let e = h[0]
        .claim_static(&net, &ep(&h[0], &net.id, "10.9.0.10", "s2"))
        .unwrap_err();
    assert!(matches!(e, ClusterError::AddressInUse(_)), "{e}");
    // Inside host1's block: refused on host2, naming the block's host.
    let e = h[1]
        .claim_static(&net, &ep(&h[1], &net.id, "10.9.0.130", "s3"))
        .unwrap_err();
    assert!(e.to_string().contains("host1"), "{e}");
    h[0].claim_static(&net, &ep(&h[0], &net.id, "10.9.0.130", "s3"))
        .unwrap();
}

#[test]
fn a_dead_hosts_endpoints_go_with_its_lease_and_watchers_see_it() {
    let (store, clock, h) = hosts(2);
    let net = h[0].create_network(&overlay("ov")).unwrap();
    let mut view = h[1].view().unwrap();
    let mut w = store.watch("", view.revision + 1).unwrap();
    let mine = vec![ep(&h[0], &net.id, "10.0.0.2", "web")];
    h[0].publish(&mine, &[], None).unwrap();
    let msg = w.next_blocking(Duration::from_secs(1)).unwrap();
    assert!(view.apply(&msg).unwrap().endpoints);
    assert_eq!(view.remote_endpoints("host2")[&net.id][0].sandbox, "web");
    assert!(
        view.remote_endpoints("host1").is_empty(),
        "its own endpoint is not remote to host1"
    );

    // host1 stops renewing; host2 goes on.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(4));
        h[1].renew("now").unwrap();
    }
    let _ = store.range("");
    let mut gone = false;
    while let Some(m) = w.next_blocking(Duration::from_millis(200)) {
        if let WatchMessage::Changes { .. } = &m {
            view.apply(&m).unwrap();
            gone = view.endpoints.is_empty() && !view.nodes.contains_key("host1");
        }
    }
    assert!(
        gone,
        "host1's record and endpoint expired with its lease: {view:?}"
    );
    assert!(view.nodes.contains_key("host2"));
    // host1 comes back: a new lease, and what it publishes again is seen.
    assert!(!h[0].renew("later").unwrap(), "the lease was lost");
    h[0].publish(&mine, &[], None).unwrap();
    assert_eq!(
        View::from_listing(store.range("").unwrap())
            .unwrap()
            .endpoints
            .len(),
        1
    );
}

#[test]
fn a_network_with_endpoints_anywhere_is_not_removed() {
    let (_, _, h) = hosts(2);
    let net = h[0].create_network(&overlay("ov")).unwrap();
    h[1].claim_block(&net, &[]).unwrap();
    let e = vec![ep(&h[1], &net.id, "10.0.0.66", "db")];
    h[1].publish(&e, &[], None).unwrap();
    let err = h[0].remove_network(&net.id).unwrap_err();
    assert!(err.to_string().contains("host2"), "{err}");
    h[1].publish(&[], &e, None).unwrap();
    h[0].remove_network(&net.id).unwrap();
    let v = h[1].view().unwrap();
    assert!(v.networks.is_empty() && v.blocks.is_empty(), "{v:?}");
    // The name, VNI and subnet are free again.
    assert_eq!(h[1].create_network(&overlay("ov")).unwrap().vni, 4096);
}

/// A host publishing against a view from before the network was removed writes nothing:
/// the write is conditional on the network's record as the view saw it, and the plan
/// made again from etcd refuses an endpoint on a network that is gone.
#[test]
fn a_publish_racing_the_networks_removal_writes_nothing() {
    let (store, _, h) = hosts(2);
    let net = h[0].create_network(&overlay("ov")).unwrap();
    // No block: only the network's own record can tell the publish it is gone.
    let before = h[1].view().unwrap();
    h[0].remove_network(&net.id).unwrap();
    let e = ep(&h[1], &net.id, "10.0.0.66", "late");
    assert_eq!(
        h[1].publish(
            std::slice::from_ref(&e),
            &[],
            Some(std::sync::Arc::new(before))
        )
        .unwrap(),
        std::slice::from_ref(&e)
    );
    let v = View::from_listing(store.range("").unwrap()).unwrap();
    assert!(v.endpoints.is_empty() && v.networks.is_empty(), "{v:?}");
}

#[test]
fn a_restart_within_the_ttl_keeps_the_lease_and_a_stranger_cannot_take_the_name() {
    let (store, _, h) = hosts(1);
    let lease = h[0].lease().unwrap();
    let again = Cluster::new(
        store.clone(),
        "host1".into(),
        "192.0.2.1".parse().unwrap(),
        Duration::from_secs(10),
    );
    assert_eq!(again.register("restart").unwrap(), lease);
    let stranger = Cluster::new(
        store,
        "host1".into(),
        "192.0.2.99".parse().unwrap(),
        Duration::from_secs(10),
    );
    let e = stranger.register("x").unwrap_err();
    assert!(matches!(e, ClusterError::NodeTaken { .. }), "{e}");
}

/// Advance the clock by `by` in steps, every host in `live` renewing as it goes.
fn pass(clock: &ManualClock, live: &[&Cluster], by: Duration) {
    let step = Duration::from_secs(2);
    let mut gone = Duration::ZERO;
    while gone < by {
        clock.advance(step);
        gone += step;
        for c in live {
            c.renew("now").unwrap();
        }
    }
}

#[test]
fn a_dead_hosts_block_is_taken_only_when_none_is_free_and_its_grace_is_over() {
    let (store, clock, h) = hosts(5);
    let h: Vec<Cluster> = h
        .into_iter()
        .map(|c| c.with_grace(Duration::from_secs(30)))
        .collect();
    let net = h[0].create_network(&overlay("ov")).unwrap();
    // Four blocks of a /24, one per host; the fifth host finds none.
    let held: Vec<_> = h[..4]
        .iter()
        .map(|c| c.claim_block(&net, &[]).unwrap().block)
        .collect();
    assert!(matches!(
        h[4].claim_block(&net, &[]),
        Err(ClusterError::NoBlock(_))
    ));
    // host4 dies: its lease expires, but its block is not free yet.
    let live = [&h[0], &h[1], &h[2], &h[4]];
    pass(&clock, &live, Duration::from_secs(12));
    assert!(!h[0].view().unwrap().nodes.contains_key("host4"));
    assert!(
        matches!(h[4].claim_block(&net, &[]), Err(ClusterError::NoBlock(_))),
        "a block taken the moment its host's lease expired"
    );
    // Marked dead (once, however many hosts notice); still its own during the grace.
    assert_eq!(h[0].mark_dead().unwrap(), ["host4"]);
    assert!(h[1].mark_dead().unwrap().is_empty());
    pass(&clock, &live, Duration::from_secs(20));
    assert!(
        matches!(h[4].claim_block(&net, &[]), Err(ClusterError::NoBlock(_))),
        "a block taken within the grace period"
    );
    // What host4 saw before it went away: its block its own.
    let before = h[3].view().unwrap();
    // Grace over: host5 takes host4's block, and only that one.
    pass(&clock, &live, Duration::from_secs(12));
    assert_eq!(h[4].claim_block(&net, &[]).unwrap().block, held[3]);
    let view = View::from_listing(store.range("").unwrap()).unwrap();
    let holders: Vec<&str> = view.blocks_on(&net.id).map(|(_, n)| n).collect();
    assert_eq!(holders.iter().filter(|n| **n == "host5").count(), 1);
    assert!(!holders.contains(&"host4"));
    // host4 comes back: registered again, it finds no block of its own and none free,
    // and the sandbox it still runs at an address of its old block is not published
    // (host5 may hand that address out); host5's own endpoint there is.
    assert!(!h[3].renew("later").unwrap());
    assert!(matches!(
        h[3].claim_block(&net, &[]),
        Err(ClusterError::NoBlock(_))
    ));
    let old = held[3].hosts().nth(1).unwrap().to_string();
    let stale = ep(&h[3], &net.id, &old, "old");
    // Planned against its old view first, the write is conditional on the block as that
    // view saw it: it fails, the plan is made again from etcd, and the endpoint refused.
    assert_eq!(
        h[3].publish(
            std::slice::from_ref(&stale),
            &[],
            Some(std::sync::Arc::new(before))
        )
        .unwrap(),
        std::slice::from_ref(&stale)
    );
    let view = View::from_listing(store.range("").unwrap()).unwrap();
    assert_eq!(view.endpoints_on(&net.id).count(), 0, "nothing written");
    assert_eq!(
        h[3].publish(std::slice::from_ref(&stale), &[], None)
            .unwrap(),
        [stale]
    );
    let fresh = ep(&h[4], &net.id, &old, "new");
    assert!(h[4].publish(&[fresh], &[], None).unwrap().is_empty());
    let view = View::from_listing(store.range("").unwrap()).unwrap();
    assert_eq!(view.endpoints_on(&net.id).next().unwrap().sandbox, "new");
    // Nor can host4 overwrite host5's record at that address.
    let again = ep(&h[3], &net.id, &old, "old");
    assert_eq!(
        h[3].publish(std::slice::from_ref(&again), &[], None)
            .unwrap(),
        [again]
    );
}

#[test]
fn a_host_back_within_its_grace_keeps_its_block() {
    let (_, clock, h) = hosts(3);
    let h: Vec<Cluster> = h
        .into_iter()
        .map(|c| c.with_grace(Duration::from_secs(30)))
        .collect();
    let mut o = overlay("ov");
    o.subnet = Some("10.9.0.0/25".parse().unwrap()); // four /27 blocks
    let net = h[0].create_network(&o).unwrap();
    let b1 = h[0].claim_block(&net, &[]).unwrap().block;
    let b2 = h[1].claim_block(&net, &[]).unwrap().block;
    let b3 = h[2].claim_block(&net, &[]).unwrap().block;
    let b4 = h[2].claim_block(&net, &[b3]).unwrap().block;
    pass(&clock, &[&h[0], &h[2]], Duration::from_secs(12));
    assert_eq!(h[0].mark_dead().unwrap(), ["host2"]);
    pass(&clock, &[&h[0], &h[2]], Duration::from_secs(10));
    // host2 returns inside the grace: the markers go, the block is still its own.
    assert!(!h[1].renew("later").unwrap());
    let view = h[0].view().unwrap();
    assert!(view.dead.is_empty() && view.in_grace.is_empty(), "{view:?}");
    assert_eq!(h[1].claim_block(&net, &[]).unwrap().block, b2);
    // And long after, nothing is reclaimable: host2 lives.
    pass(&clock, &[&h[0], &h[1], &h[2]], Duration::from_secs(40));
    assert!(matches!(
        h[2].claim_block(&net, &[b3, b4]),
        Err(ClusterError::NoBlock(_))
    ));
    assert_ne!(b1, b2);
}

#[test]
fn a_dead_hosts_block_with_an_address_in_use_is_never_taken() {
    let (_, clock, h) = hosts(3);
    let h: Vec<Cluster> = h
        .into_iter()
        .map(|c| c.with_grace(Duration::from_secs(4)))
        .collect();
    let mut o = overlay("ov");
    o.subnet = Some("10.9.0.0/25".parse().unwrap());
    let net = h[0].create_network(&o).unwrap();
    h[0].claim_block(&net, &[]).unwrap();
    // host1's static address in the second block, before host2 claims that block.
    h[0].claim_static(&net, &ep(&h[0], &net.id, "10.9.0.40", "s"))
        .unwrap();
    let b2 = h[1].claim_block(&net, &[]).unwrap();
    assert_eq!(
        b2.foreign,
        ["10.9.0.40".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    let b3 = h[2].claim_block(&net, &[]).unwrap().block;
    let b4 = h[2].claim_block(&net, &[b3]).unwrap().block;
    pass(&clock, &[&h[0], &h[2]], Duration::from_secs(12));
    assert_eq!(h[0].mark_dead().unwrap(), ["host2"]);
    pass(&clock, &[&h[0], &h[2]], Duration::from_secs(10));
    assert!(
        matches!(
            h[2].claim_block(&net, &[b3, b4]),
            Err(ClusterError::NoBlock(_))
        ),
        "a block with host1's address in it was taken"
    );
}

/// A host that departs (`system cleanup`) takes its record, endpoints and blocks with it
/// at once, leaves the network to the others, frees its block for them, and does not
/// join again on its next renewal.
#[test]
fn a_departing_host_frees_its_blocks_at_once_and_leaves_the_network_to_the_others() {
    let (store, _, h) = hosts(2);
    let net = h[0].create_network(&overlay("ov")).unwrap();
    let gone = h[0].claim_block(&net, &[]).unwrap().block;
    h[1].claim_block(&net, &[]).unwrap();
    let e = vec![ep(
        &h[0],
        &net.id,
        &gone.hosts().nth(1).unwrap().to_string(),
        "web",
    )];
    h[0].publish(&e, &[], None).unwrap();

    h[0].depart().unwrap();
    let v = View::from_listing(store.range("").unwrap()).unwrap();
    assert!(v.networks.contains_key(&net.id), "the overlay stays: {v:?}");
    assert!(
        !v.nodes.contains_key("host1") && v.endpoints.is_empty(),
        "{v:?}"
    );
    assert!(
        v.blocks.values().all(|owner| owner == "host2") && v.blocks.len() == 1,
        "host1's block is free: {v:?}"
    );
    assert!(v.newly_dead().is_empty() && v.dead.is_empty(), "{v:?}");
    assert!(
        h[1].mark_dead().unwrap().is_empty(),
        "no grace period starts"
    );
    assert!(h[0].renew("now").unwrap());
    let v = View::from_listing(store.range("").unwrap()).unwrap();
    assert!(
        !v.nodes.contains_key("host1"),
        "a renewal after departing does not join: {v:?}"
    );
    // The freed block is the next one host2 claims.
    assert_eq!(
        h[1].claim_block(&net, &[v.blocks.keys().next().unwrap().1])
            .unwrap()
            .block,
        gone
    );
}
