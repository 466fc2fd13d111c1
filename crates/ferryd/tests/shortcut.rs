//! The same-network shortcut follows the desired state: which endpoints the fake kernel
//! carries after starts, connects, disconnects, stops, a refused attach and a restart.
//! (Its traffic, the gate and a killed ferryd: tests/dataplane.rs, with root.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;
use common::{net_req, run_req};

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_core::docker::network::{ConnectRequest, DisconnectRequest};
use ferry_kernel::fake::Recorder;
use ferryd::Daemon;

async fn daemon(dir: &tempfile::TempDir) -> Arc<Daemon<Recorder>> {
    let d = common::fake_daemon(dir).await;
    d.create_network(net_req("n1", "10.5.0.0/24"))
        .await
        .unwrap();
    let mut quiet = net_req("quiet", "10.6.0.0/24");
    quiet.options = Some(BTreeMap::from([(
        "com.docker.network.bridge.enable_icc".to_string(),
        "false".to_string(),
    )]));
    d.create_network(quiet).await.unwrap();
    d
}

/// What the fake carries: (address, bridge) by host end.
fn carried(d: &Daemon<Recorder>) -> Vec<(String, String)> {
    let s = d.kernel.shortcut.lock().unwrap();
    s.values()
        .map(|e| (e.ip.to_string(), e.bridge.to_string()))
        .collect()
}

fn connect(name: &str) -> ConnectRequest {
    ConnectRequest {
        container: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn endpoints_on_icc_networks_are_carried_while_their_sandbox_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir).await;
    let a = d.create_sandbox(Some("a"), run_req("n1")).await.unwrap();
    d.start_sandbox(&a, false).await.unwrap();
    let n1 = carried(&d);
    assert_eq!(n1.len(), 1, "{n1:?}");
    assert_eq!(n1[0].0, "10.5.0.2");
    // An ICC-off network's endpoint is left to the bridge (and its ICC rule).
    d.connect("quiet", connect("a")).await.unwrap();
    assert_eq!(carried(&d), n1);
    let b = d.create_sandbox(Some("b"), run_req("quiet")).await.unwrap();
    d.start_sandbox(&b, false).await.unwrap();
    d.connect("n1", connect("b")).await.unwrap();
    assert_eq!(carried(&d).len(), 2, "{:?}", carried(&d));
    let req = DisconnectRequest {
        container: "b".into(),
        ..Default::default()
    };
    d.disconnect("n1", req).await.unwrap();
    assert_eq!(carried(&d), n1);
    d.stop_sandbox(&a).await.unwrap();
    assert_eq!(carried(&d), vec![]);
}

#[tokio::test]
async fn a_refused_attach_leaves_nothing_carried() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir).await;
    let a = d.create_sandbox(Some("a"), run_req("n1")).await.unwrap();
    *d.kernel.fail_on.lock().unwrap() = Some("attach".into());
    d.start_sandbox(&a, false).await.unwrap_err();
    *d.kernel.fail_on.lock().unwrap() = None;
    assert_eq!(carried(&d), vec![]);
    d.start_sandbox(&a, false).await.unwrap();
    assert_eq!(carried(&d).len(), 1);
}

#[tokio::test]
async fn a_new_ferryd_carries_what_the_store_says_is_running() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir).await;
    let a = d.create_sandbox(Some("a"), run_req("n1")).await.unwrap();
    d.start_sandbox(&a, false).await.unwrap();
    // The kernel forgot it (a restarted ferryd holds no program); the start's full load
    // puts it back.
    d.kernel.shortcut.lock().unwrap().clear();
    let st = d.state.lock().await;
    d.load_firewall(&st).await.unwrap();
    drop(st);
    assert_eq!(carried(&d).len(), 1);
}

/// The links whose programs a full load takes off, as the fake records them.
fn swept(d: &Daemon<Recorder>) -> Vec<String> {
    std::mem::take(&mut *d.kernel.shortcut_swept.lock().unwrap())
}

/// The host end of `sandbox`'s endpoint on the network `net` (by name).
async fn host_end(d: &Daemon<Recorder>, sandbox: &str, net: &str) -> String {
    let st = d.state.lock().await;
    let net_id = st
        .networks
        .values()
        .find(|n| n.name == net)
        .unwrap()
        .id
        .clone();
    let sb = st.sandboxes.values().find(|s| s.name == sandbox).unwrap();
    let ep = sb
        .endpoints
        .iter()
        .find(|e| e.network_id == net_id)
        .unwrap();
    ep.live
        .as_ref()
        .unwrap()
        .host_if
        .as_ref()
        .unwrap()
        .to_string()
}

/// A start's full load takes what a killed ferryd left off every link of ferry's it does
/// not carry (an ICC-off network's bridge and veths, a bridge with no one on it), and
/// off every link with `--shortcut off`; never off what it carries.
#[tokio::test]
async fn a_full_load_sweeps_every_link_it_does_not_carry_and_every_one_with_the_shortcut_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir).await;
    let a = d.create_sandbox(Some("a"), run_req("n1")).await.unwrap();
    d.start_sandbox(&a, false).await.unwrap();
    d.connect("quiet", connect("a")).await.unwrap();
    let carried_end = host_end(&d, "a", "n1").await;
    let quiet_end = host_end(&d, "a", "quiet").await;
    let bridge = |net: &str| {
        let st = d.state.try_lock().unwrap();
        let n = st.networks.values().find(|n| n.name == net).unwrap();
        n.bridge().unwrap().name.to_string()
    };
    let (n1_br, quiet_br, default_br) = (bridge("n1"), bridge("quiet"), bridge("bridge"));
    swept(&d);
    let st = d.state.lock().await;
    d.load_firewall(&st).await.unwrap();
    drop(st);
    let mut got = swept(&d);
    got.sort();
    let mut want = vec![quiet_br.clone(), default_br.clone(), quiet_end.clone()];
    want.sort();
    assert_eq!(got, want, "carried: {carried_end} on {n1_br}");

    // The same state under a ferryd started with `--shortcut off`: every link.
    let mut cfg = ferryd::Config::under(dir.path());
    cfg.shortcut = ferryd::shortcut::Mode::Off;
    let off = Daemon::new(
        cfg,
        Recorder::default(),
        Box::new(ferry_store::MemStore::default()),
    )
    .unwrap();
    let st = d.state.lock().await;
    off.load_firewall(&st).await.unwrap();
    drop(st);
    let mut got = swept(&off);
    got.sort();
    let mut want = vec![n1_br, quiet_br, default_br, carried_end, quiet_end];
    want.sort();
    assert_eq!(got, want);
}

/// The conntrack fast path's program goes on the uplinks once something is carried (the
/// first endpoint), again at each full load and periodic check, and never on ferry's own
/// links: ferryd names them all, bridges and host ends, every time.
#[tokio::test]
async fn uplinks_are_asked_for_from_the_first_carried_endpoint_without_ferrys_links() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir).await;
    let uplinks = |d: &Daemon<Recorder>| d.kernel.shortcut_uplinks.lock().unwrap().take();
    let st = d.state.lock().await;
    d.load_firewall(&st).await.unwrap();
    drop(st);
    assert_eq!(uplinks(&d), None, "asked for with nothing carried");
    let a = d.create_sandbox(Some("a"), run_req("n1")).await.unwrap();
    d.start_sandbox(&a, false).await.unwrap();
    let ferry = uplinks(&d).expect("asked for at the first carried endpoint");
    let end = host_end(&d, "a", "n1").await;
    let n1_br = {
        let st = d.state.lock().await;
        let n = st.networks.values().find(|n| n.name == "n1").unwrap();
        n.bridge().unwrap().name.to_string()
    };
    for link in [&end, &n1_br] {
        assert!(
            ferry.contains(link),
            "{link} not named as ferry's: {ferry:?}"
        );
    }
    d.check_firewall().await;
    assert!(
        uplinks(&d).is_some(),
        "not asked for again at the periodic check"
    );
    let st = d.state.lock().await;
    d.load_firewall(&st).await.unwrap();
    drop(st);
    assert!(uplinks(&d).is_some(), "not asked for again at a full load");

    // With `--shortcut off` or `same-network`, never (though the latter carries the
    // endpoints it finds, as the test above shows for `on`).
    for mode in [
        ferryd::shortcut::Mode::Off,
        ferryd::shortcut::Mode::SameNetwork,
    ] {
        let mut cfg = ferryd::Config::under(dir.path());
        cfg.shortcut = mode;
        let other = Daemon::new(
            cfg,
            Recorder::default(),
            Box::new(ferry_store::MemStore::default()),
        )
        .unwrap();
        let st = d.state.lock().await;
        other.load_firewall(&st).await.unwrap();
        drop(st);
        assert_eq!(uplinks(&other), None, "{mode:?}");
    }
}
