//! `com.docker.network.bridge.name` against the recording fake: a name no link has is
//! ferry's bridge (deleted with the network), an existing bridge is adopted (never
//! deleted, its gateway address taken back), anything else is refused with a 400.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_core::docker::network::{IpamConfigReq, IpamReq, NetworkCreateRequest};
use ferry_kernel::fake::Recorder;
use ferry_store::MemStore;
use ferryd::{Config, Daemon};

fn daemon(dir: &tempfile::TempDir) -> Arc<Daemon<Recorder>> {
    Daemon::new(
        Config::under(dir.path()),
        Recorder::default(),
        Box::new(MemStore::default()),
    )
    .unwrap()
}

fn named(name: &str, bridge: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: name.into(),
        options: Some(BTreeMap::from([(
            "com.docker.network.bridge.name".to_string(),
            bridge.to_string(),
        )])),
        ipam: Some(IpamReq {
            config: Some(vec![IpamConfigReq {
                subnet: Some("10.9.0.0/24".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn lines_with(d: &Daemon<Recorder>, needle: &str) -> Vec<String> {
    d.kernel
        .lines()
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

#[tokio::test]
async fn an_existing_bridge_is_adopted_and_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.kernel.links.lock().unwrap().insert("admbr0".into());
    d.kernel.bridges.lock().unwrap().insert("admbr0".into());
    let id = d.create_network(named("adm", "admbr0")).await.unwrap();
    let adopted = d.state.lock().await.networks[&id].bridge().unwrap().adopted;
    assert!(adopted, "the existing bridge is not recorded as adopted");
    d.remove_network("adm").await.unwrap();
    assert!(
        lines_with(&d, "delete admbr0").is_empty(),
        "{:?}",
        d.kernel.lines()
    );
    assert_eq!(lines_with(&d, "unaddr admbr0 10.9.0.1/24").len(), 1);
}

#[tokio::test]
async fn a_link_that_is_not_a_bridge_is_refused_and_a_free_name_is_ferrys() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.kernel.links.lock().unwrap().insert("veth9".into());
    let e = d.create_network(named("steal", "veth9")).await.unwrap_err();
    assert_eq!(e.status(), 400, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("com.docker.network.bridge.name=veth9") && msg.contains("not a bridge"),
        "{msg}"
    );
    assert!(d.state.lock().await.network_id("steal").is_err());
    assert!(lines_with(&d, "bridge veth9").is_empty());

    // Control: a name no link has is made, and deleted with the network.
    let id = d.create_network(named("own", "fyt0")).await.unwrap();
    assert!(!d.state.lock().await.networks[&id].bridge().unwrap().adopted);
    d.remove_network("own").await.unwrap();
    assert_eq!(
        lines_with(&d, "delete fyt0").len(),
        1,
        "{:?}",
        d.kernel.lines()
    );
}
