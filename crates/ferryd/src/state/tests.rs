use std::net::IpAddr;

use ferry_core::ipam::AddressPool;
use ferry_core::model::{Network, NetworkKind};
use ferry_store::{MemStore, Store};

use super::*;

fn network(id: &str) -> Network {
    let subnet: ipnet::IpNet = "10.9.0.0/24".parse().unwrap();
    Network {
        id: id.into(),
        name: id.into(),
        created: String::new(),
        kind: NetworkKind::Bridge(ferry_core::model::BridgeConf {
            name: ferry_core::IfName::new("brtest").unwrap(),
            mtu: 1500,
            icc: true,
            masquerade: true,
            adopted: false,
        }),
        internal: false,
        attachable: false,
        predefined: false,
        labels: Default::default(),
        options: Default::default(),
        ipam_options: None,
        ipam_echo: vec![],
        pool: Some(AddressPool::new(subnet, "10.9.0.1".parse().unwrap(), None)),
        ipam_plugin: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn commit(st: &State, store: &MemStore, keys: &[Key]) {
    let b = st.ops_for(keys);
    store.commit(&b.ops).unwrap();
    st.committed(b);
}

fn pool_mut<'a>(st: &'a mut State, id: &str) -> &'a mut AddressPool {
    st.networks.get_mut(id).unwrap().pool.as_mut().unwrap()
}

#[test]
fn allocations_live_in_keys_of_their_own_and_load_back() {
    let store = MemStore::default();
    let mut st = State::default();
    st.networks.insert("n".into(), network("n"));
    for i in 2..50 {
        pool_mut(&mut st, "n")
            .allocate_static(ip(&format!("10.9.0.{i}")), "sb")
            .unwrap();
    }
    commit(&st, &store, &[Key::Net("n".into())]);
    let rec = &store.list("net/").unwrap()[0].1;
    assert!(
        !String::from_utf8_lossy(rec).contains("10.9.0.7"),
        "the network record still carries its allocations"
    );
    assert_eq!(store.list(allocs::PREFIX).unwrap().len(), 48);

    // One release and one allocation write two keys, not the whole map.
    pool_mut(&mut st, "n").release(ip("10.9.0.7"));
    pool_mut(&mut st, "n")
        .allocate_static(ip("10.9.0.99"), "other")
        .unwrap();
    let b = st.ops_for(&[Key::Net("n".into())]);
    assert_eq!(b.ops.len(), 3, "net record + one delete + one put");
    store.commit(&b.ops).unwrap();
    st.committed(b);

    let back = State::load(&store).unwrap();
    assert_eq!(back.networks, st.networks);

    // The network goes, and its allocations with it.
    st.networks.remove("n");
    commit(&st, &store, &[Key::Net("n".into())]);
    assert!(store.list(allocs::PREFIX).unwrap().is_empty());
    assert!(store.list("net/").unwrap().is_empty());
}

#[test]
fn a_rolled_back_allocation_is_written_back() {
    let store = MemStore::default();
    let mut st = State::default();
    st.networks.insert("n".into(), network("n"));
    commit(&st, &store, &[Key::Net("n".into())]);
    let keys = [Key::Net("n".into())];
    let before = st.snapshot(&keys);
    pool_mut(&mut st, "n")
        .allocate_static(ip("10.9.0.5"), "sb")
        .unwrap();
    commit(&st, &store, &keys);
    assert_eq!(store.list(allocs::PREFIX).unwrap().len(), 1);
    st.restore(before);
    commit(&st, &store, &keys);
    assert!(store.list(allocs::PREFIX).unwrap().is_empty());
    assert_eq!(State::load(&store).unwrap().networks, st.networks);
}

#[test]
fn records_with_inline_allocations_still_load_and_move_to_keys() {
    let store = MemStore::default();
    let mut n = network("n");
    n.pool
        .as_mut()
        .unwrap()
        .allocate_static(ip("10.9.0.5"), "sb")
        .unwrap();
    // The layout before allocation keys: the whole pool inside the record.
    let mut old = serde_json::to_value(&n).unwrap();
    old["pool"] = serde_json::to_value(n.pool.as_ref().unwrap()).unwrap();
    store
        .commit(&[Op::Put("net/n".into(), serde_json::to_vec(&old).unwrap())])
        .unwrap();
    let st = State::load(&store).unwrap();
    assert_eq!(st.networks["n"], n);
    commit(&st, &store, &[Key::Net("n".into())]);
    assert_eq!(store.list(allocs::PREFIX).unwrap().len(), 1);
    assert_eq!(State::load(&store).unwrap().networks["n"], n);
}
