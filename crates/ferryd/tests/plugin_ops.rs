//! The Docker plugin's operations one case at a time, against the recording kernel fake:
//! the seed article's `-o bridge=NAME`, rollback when the kernel refuses, published ports
//! reaching the firewall, addresses a late release must not free, and a ferryd restart
//! (a new daemon on the same store) after which Docker's later calls still work.

#![allow(clippy::unwrap_used, clippy::too_many_lines)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use ferry_core::docker::plugin::{
    CreateEndpointRequest, CreateNetworkRequest, EndpointInterface, EndpointRef, IpamData,
    JoinRequest, ProgramExternalRequest, ReleaseAddressRequest, ReleasePoolRequest,
    RequestAddressRequest, RequestPoolRequest,
};
use ferry_kernel::fake::Recorder;
use ferry_store::{MemStore, RedbStore, Store};
use ferryd::{Config, Daemon};
use serde_json::json;

mod common;
use common::{with_overlay_copy, OV};

const NET: &str = "5e24ef7d0eb6f2f90aecb6239a23a138ba6445f5964fb4c3f37c0fd0769cbbf5";
const EP1: &str = "b11c9374793aaac54283d74c862c90cf67d2e551961a6a575e65297af158802a";
const EP2: &str = "7bcee044233729ddfeba920c8e73ff825b5b89982f2b29e234924a777ae25479";

fn cfg(dir: &tempfile::TempDir) -> Config {
    Config::under(dir.path())
}

fn daemon_with(dir: &tempfile::TempDir, store: Box<dyn Store>) -> Arc<Daemon<Recorder>> {
    Daemon::new(cfg(dir), Recorder::default(), store).unwrap()
}

fn daemon(dir: &tempfile::TempDir) -> Arc<Daemon<Recorder>> {
    daemon_with(dir, Box::new(MemStore::default()))
}

fn create_net(subnet: &str, generic: serde_json::Value) -> CreateNetworkRequest {
    let net: ipnet::Ipv4Net = subnet.parse().unwrap();
    let gw = std::net::Ipv4Addr::from(u32::from(net.network()) + 1);
    CreateNetworkRequest {
        network_id: NET.into(),
        options: Some(
            serde_json::from_value(json!({
                "com.docker.network.enable_ipv6": false,
                "com.docker.network.generic": generic
            }))
            .unwrap(),
        ),
        ipv4_data: Some(vec![IpamData {
            address_space: "LocalDefault".into(),
            pool: subnet.into(),
            gateway: format!("{gw}/{}", net.prefix_len()),
            aux_addresses: None,
        }]),
        ipv6_data: Some(vec![]),
    }
}

fn endpoint(id: &str, addr: &str) -> CreateEndpointRequest {
    CreateEndpointRequest {
        network_id: NET.into(),
        endpoint_id: id.into(),
        interface: Some(EndpointInterface {
            address: addr.into(),
            ..Default::default()
        }),
        options: None,
    }
}

fn join(id: &str) -> JoinRequest {
    JoinRequest {
        network_id: NET.into(),
        endpoint_id: id.into(),
        sandbox_key: "/var/run/docker/netns/e44c5b163d89".into(),
        options: None,
    }
}

fn ep_ref(id: &str) -> EndpointRef {
    EndpointRef {
        network_id: NET.into(),
        endpoint_id: id.into(),
    }
}

async fn store_matches_memory(d: &Daemon<Recorder>) {
    let stored = d.stored_state().unwrap();
    let mem = d.state.lock().await;
    assert_eq!(stored.networks, mem.networks);
    assert_eq!(stored.plugin, mem.plugin);
}

#[tokio::test]
async fn create_with_a_missing_user_bridge_fails_clearly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    let err = d
        .plugin_create_network(create_net("10.0.1.0/24", json!({"bridge": "br1"})))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bridge br1 does not exist"), "{err}");
    assert!(d.state.lock().await.networks.is_empty());
    assert!(d.kernel.links.lock().unwrap().is_empty());
    store_matches_memory(&d).await;
}

#[tokio::test]
async fn a_user_bridge_is_used_and_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    // The user made br1 (the seed article: brctl addbr br1; ifconfig br1 10.0.1.1 up).
    d.kernel.links.lock().unwrap().insert("br1".into());
    d.kernel.bridges.lock().unwrap().insert("br1".into());
    d.plugin_create_network(create_net(
        "10.0.1.0/24",
        json!({"com.docker.network.bridge.name": "br1"}),
    ))
    .await
    .unwrap();
    d.plugin_create_endpoint(endpoint(EP1, "10.0.1.2/24"))
        .await
        .unwrap();
    let j = d.plugin_join(join(EP1)).await.unwrap();
    assert_eq!(j.gateway, "10.0.1.1");
    assert!(
        d.kernel.lines().iter().any(|l| l.ends_with(" on br1")),
        "{:?}",
        d.kernel.lines()
    );
    d.plugin_delete_endpoint(ep_ref(EP1)).await.unwrap();
    d.plugin_delete_network(ep_ref("")).await.unwrap();
    assert!(!d.kernel.lines().iter().any(|l| l == "delete br1"));
    assert_eq!(
        d.kernel.links.lock().unwrap().iter().collect::<Vec<_>>(),
        ["br1"]
    );
    store_matches_memory(&d).await;
}

#[tokio::test]
async fn a_refused_veth_pair_leaves_the_endpoint_unjoined_and_join_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.plugin_create_network(create_net("10.5.0.0/24", json!({})))
        .await
        .unwrap();
    d.plugin_create_endpoint(endpoint(EP1, "10.5.0.2/24"))
        .await
        .unwrap();
    *d.kernel.fail_on.lock().unwrap() = Some("veth".into());
    let err = d.plugin_join(join(EP1)).await.unwrap_err().to_string();
    assert!(
        err.contains("injected failure") && err.contains("fake veth"),
        "Join failed, but not by the injected veth failure: {err}"
    );
    assert!(!d.state.lock().await.plugin.endpoints[EP1].joined);
    store_matches_memory(&d).await;
    *d.kernel.fail_on.lock().unwrap() = None;
    let first = d.plugin_join(join(EP1)).await.unwrap();
    // Docker repeats a call: the same answer, no second pair.
    let again = d.plugin_join(join(EP1)).await.unwrap();
    assert_eq!(first, again);
    let pairs = d
        .kernel
        .lines()
        .iter()
        .filter(|l| l.starts_with("veth "))
        .count();
    assert_eq!(pairs, 2, "one refused, one made: {:?}", d.kernel.lines());
}

#[tokio::test]
async fn published_ports_reach_the_firewall_and_go_with_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.plugin_create_network(create_net("10.6.0.0/24", json!({})))
        .await
        .unwrap();
    let portmap = json!({"com.docker.network.portmap": [
        {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 48080, "HostPortEnd": 48080}
    ]});
    let mut create = endpoint(EP1, "10.6.0.2/24");
    create.options = Some(serde_json::from_value(portmap.clone()).unwrap());
    d.plugin_create_endpoint(create).await.unwrap();
    d.plugin_join(join(EP1)).await.unwrap();
    let veth = d
        .kernel
        .lines()
        .into_iter()
        .find(|l| l.starts_with("veth "))
        .unwrap();
    assert!(
        veth.ends_with(" hairpin"),
        "a publishing endpoint's bridge port must be hairpin: {veth}"
    );
    let program = |id: &str| ProgramExternalRequest {
        network_id: NET.into(),
        endpoint_id: id.into(),
        options: Some(serde_json::from_value(portmap.clone()).unwrap()),
    };
    d.plugin_program_external(program(EP1)).await.unwrap();
    let nft = d.kernel.lines().join("\n");
    assert!(
        nft.contains("tcp . 48080 : 10.6.0.2 . 80"),
        "no pub_any element for the published port:\n{nft}"
    );
    // Another container may not take the same host port.
    d.plugin_create_endpoint(endpoint(EP2, "10.6.0.3/24"))
        .await
        .unwrap();
    let err = d.plugin_program_external(program(EP2)).await.unwrap_err();
    assert!(
        err.to_string().contains("port is already allocated"),
        "{err}"
    );
    d.plugin_revoke_external(ep_ref(EP1)).await.unwrap();
    let live = d.state.lock().await.plugin.endpoints[EP1]
        .endpoint
        .live
        .clone()
        .unwrap();
    assert!(live.published.is_empty());
    let last_nft = d
        .kernel
        .lines()
        .into_iter()
        .rev()
        .find(|l| l.starts_with("nft "))
        .unwrap();
    assert!(
        last_nft.contains("delete element") && last_nft.contains("48080"),
        "{last_nft}"
    );
    store_matches_memory(&d).await;
}

/// Docker's calls for a network on ferry's IPAM (10.7.0.0/29, gateway .1) with EP1 at
/// 10.7.0.5; returns the pool's ID.
async fn ep1_on_ferry_ipam(d: &Daemon<Recorder>) -> String {
    let pool = d
        .plugin_request_pool(RequestPoolRequest {
            pool: "10.7.0.0/29".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .pool_id;
    let gateway = RequestAddressRequest {
        pool_id: pool.clone(),
        address: String::new(),
        options: Some(
            [(
                "RequestAddressType".into(),
                "com.docker.network.gateway".into(),
            )]
            .into(),
        ),
    };
    d.plugin_request_address(gateway).await.unwrap();
    let mut req = create_net("10.7.0.0/29", json!({}));
    req.ipv4_data.as_mut().unwrap()[0].address_space = "FerryLocal".into();
    d.plugin_request_address(address(&pool, "10.7.0.5"))
        .await
        .unwrap();
    d.plugin_create_network(req).await.unwrap();
    d.plugin_create_endpoint(endpoint(EP1, "10.7.0.5/29"))
        .await
        .unwrap();
    pool
}

fn address(pool: &str, a: &str) -> RequestAddressRequest {
    RequestAddressRequest {
        pool_id: pool.into(),
        address: a.into(),
        options: None,
    }
}

#[tokio::test]
async fn a_late_release_never_frees_an_address_handed_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    let pool = ep1_on_ferry_ipam(&d).await;
    let addr = |a: &str| address(&pool, a);
    // Docker asks again for the same static address: taken.
    let err = d
        .plugin_request_address(addr("10.7.0.5"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Address already in use"), "{err}");
    // Docker's teardown: DeleteEndpoint hands it back, ReleaseAddress frees it.
    d.plugin_delete_endpoint(ep_ref(EP1)).await.unwrap();
    let release = ReleaseAddressRequest {
        pool_id: pool.clone(),
        address: "10.7.0.5".into(),
    };
    d.plugin_release_address(release.clone()).await.unwrap();
    // Handed out again to a new endpoint, then a stale repeat of the release arrives.
    d.plugin_request_address(addr("10.7.0.5")).await.unwrap();
    d.plugin_create_endpoint(endpoint(EP2, "10.7.0.5/29"))
        .await
        .unwrap();
    d.plugin_release_address(release).await.unwrap();
    let st = d.state.lock().await;
    let owner = st.networks[NET]
        .pool
        .as_ref()
        .unwrap()
        .owner("10.7.0.5".parse().unwrap())
        .map(str::to_string);
    assert_eq!(owner.as_deref(), Some(EP2));
}

#[tokio::test]
async fn after_a_restart_dockers_later_calls_find_everything() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let path = dir.path().join("data/ferry.redb");
    let pool;
    {
        let d = daemon_with(&dir, Box::new(RedbStore::open(&path).unwrap()));
        pool = d
            .plugin_request_pool(RequestPoolRequest {
                pool: "10.8.0.0/24".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .pool_id;
        d.plugin_create_network(create_net("10.8.0.0/24", json!({})))
            .await
            .unwrap();
        let a = d
            .plugin_request_address(RequestAddressRequest {
                pool_id: pool.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .address;
        d.plugin_create_endpoint(endpoint(EP1, &a)).await.unwrap();
        d.plugin_join(join(EP1)).await.unwrap();
    }
    let d = daemon_with(&dir, Box::new(RedbStore::open(&path).unwrap()));
    let info = d.plugin_oper_info(ep_ref(EP1)).await.unwrap();
    assert!(info.value.contains_key("ferry.host_if"), "{info:?}");
    for step in ["Revoke", "Leave", "DeleteEndpoint"] {
        match step {
            "Revoke" => d.plugin_revoke_external(ep_ref(EP1)).await.unwrap(),
            "Leave" => d.plugin_leave(ep_ref(EP1)).await.unwrap(),
            _ => d.plugin_delete_endpoint(ep_ref(EP1)).await.unwrap(),
        }
    }
    let host_if = format!("fy{}", &EP1[..11]);
    assert!(d.kernel.lines().contains(&format!("delete {host_if}")));
    d.plugin_release_address(ReleaseAddressRequest {
        pool_id: pool.clone(),
        address: "10.8.0.2".into(),
    })
    .await
    .unwrap();
    d.plugin_release_pool(ReleasePoolRequest {
        pool_id: pool.clone(),
    })
    .await
    .unwrap();
    d.plugin_delete_network(ep_ref("")).await.unwrap();
    let st = d.state.lock().await;
    assert_eq!(st.plugin, Default::default());
    assert!(st.networks.is_empty());
}

#[tokio::test]
async fn at_start_an_endpoint_whose_link_died_is_forgotten_and_its_address_freed() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.plugin_create_network(create_net("10.9.0.0/24", json!({})))
        .await
        .unwrap();
    for (id, addr) in [(EP1, "10.9.0.2/24"), (EP2, "10.9.0.3/24")] {
        d.plugin_create_endpoint(endpoint(id, addr)).await.unwrap();
        d.plugin_join(join(id)).await.unwrap();
    }
    // EP1's container died while ferryd was down: its veth pair went with it.
    let host_if = format!("fy{}", &EP1[..11]);
    d.kernel.links.lock().unwrap().remove(&host_if);
    d.plugin_reconcile().await.unwrap();
    let st = d.state.lock().await;
    assert!(!st.plugin.endpoints.contains_key(EP1));
    assert!(
        st.plugin.endpoints.contains_key(EP2),
        "a live endpoint was dropped"
    );
    let pool = st.networks[NET].pool.as_ref().unwrap();
    assert_eq!(pool.owner("10.9.0.2".parse().unwrap()), None);
    assert_eq!(pool.owner("10.9.0.3".parse().unwrap()), Some(EP2));
    drop(st);
    store_matches_memory(&d).await;
}

#[tokio::test]
async fn ferrys_own_sandboxes_stay_off_dockers_networks() {
    use ferry_core::docker::container::{ContainerCreateRequest, HostConfigReq};
    use ferry_core::docker::network::ConnectRequest;
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.ensure_predefined().await.unwrap();
    d.plugin_create_network(create_net("10.10.0.0/24", json!({})))
        .await
        .unwrap();
    let req = ContainerCreateRequest {
        cmd: Some(vec!["true".into()]),
        host_config: Some(HostConfigReq {
            network_mode: Some(NET.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = d.create_sandbox(Some("s1"), req).await.unwrap_err();
    assert!(err.to_string().contains("belongs to Docker"), "{err}");
    let id = d
        .create_sandbox(
            Some("s2"),
            ContainerCreateRequest {
                cmd: Some(vec!["true".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let err = d
        .connect(
            NET,
            ConnectRequest {
                container: id,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("belongs to Docker"), "{err}");
    let err = d.remove_network(NET).await.unwrap_err();
    assert!(err.to_string().contains("docker network rm"), "{err}");
}

#[tokio::test]
async fn without_a_subnet_ferrys_ipam_picks_a_free_default_pool() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    d.ensure_predefined().await.unwrap();
    let pick = || async {
        d.plugin_request_pool(RequestPoolRequest::default())
            .await
            .unwrap()
            .pool
    };
    let (a, b) = (pick().await, pick().await);
    let (a, b): (ipnet::Ipv4Net, ipnet::Ipv4Net) = (a.parse().unwrap(), b.parse().unwrap());
    let bridge: ipnet::Ipv4Net = "172.17.0.0/16".parse().unwrap();
    for p in [a, b] {
        assert!(
            !p.contains(&bridge.network()) && !bridge.contains(&p.network()),
            "{p} overlaps the default bridge"
        );
    }
    assert!(
        !a.contains(&b.network()) && !b.contains(&a.network()),
        "{a} vs {b}"
    );
}

#[tokio::test]
async fn calls_the_store_refuses_change_nothing() {
    // A full disk: each of Docker's calls fails and leaves memory as the store holds it.
    let dir = tempfile::tempdir().unwrap();
    let store = MemStore::default();
    let refuse = store.refusal_switch();
    let d = daemon_with(&dir, Box::new(store));
    let pool = ep1_on_ferry_ipam(&d).await;
    refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let before = d.state.lock().await.clone();
    let dynamic = address(&pool, "");
    for err in [
        d.plugin_request_address(dynamic.clone())
            .await
            .map(|_| ())
            .unwrap_err(),
        d.plugin_delete_endpoint(ep_ref(EP1)).await.unwrap_err(),
    ] {
        assert!(
            err.to_string().contains("refused by the test switch"),
            "failed, but not by the store's refusal: {err}"
        );
    }
    let st = d.state.lock().await;
    assert_eq!(st.networks, before.networks);
    assert_eq!(st.plugin, before.plugin);
    drop(st);
    store_matches_memory(&d).await;
    // The refused request took no address: the next one gets the first free one.
    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let got = d.plugin_request_address(dynamic).await.unwrap().address;
    assert_eq!(got, "10.7.0.2/29");
}

#[tokio::test]
async fn an_overlay_through_docker_needs_ferrys_ipam_and_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    let own_ipam = create_net("10.9.0.0/24", json!({"ferry.overlay": "ov"}));
    let e = d.plugin_create_network(own_ipam.clone()).await.unwrap_err();
    assert!(
        e.to_string().contains("needs ferry's IPAM"),
        "Docker's IPAM is refused: {e}"
    );
    let mut ferry_ipam = own_ipam;
    ferry_ipam.ipv4_data.as_mut().unwrap()[0].address_space = "FerryLocal".into();
    let e = d.plugin_create_network(ferry_ipam).await.unwrap_err();
    assert!(
        e.to_string().contains("--cluster-store"),
        "without a cluster the error says how to join one: {e}"
    );
    assert!(d.state.lock().await.plugin.networks.is_empty());
}

#[tokio::test]
async fn a_pool_for_an_overlays_subnet_hands_out_the_overlays_gateway_and_goes_on_release() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    with_overlay_copy(&d).await;
    let pool = d
        .plugin_request_pool(RequestPoolRequest {
            pool: "10.9.0.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pool.pool, "10.9.0.0/24");
    let gateway = |address: &str| RequestAddressRequest {
        pool_id: pool.pool_id.clone(),
        address: address.into(),
        options: Some(
            [(
                "RequestAddressType".into(),
                "com.docker.network.gateway".into(),
            )]
            .into(),
        ),
    };
    let gw = d.plugin_request_address(gateway("")).await.unwrap();
    assert_eq!(gw.address, "10.9.0.1/24");
    let e = d
        .plugin_request_address(gateway("10.9.0.9"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("has gateway 10.9.0.1"), "{e}");
    assert_eq!(
        d.state.lock().await.networks[OV]
            .pool
            .as_ref()
            .unwrap()
            .gateway,
        "10.9.0.1".parse::<std::net::IpAddr>().unwrap(),
        "the overlay's gateway is untouched"
    );
    d.plugin_release_pool(ReleasePoolRequest {
        pool_id: pool.pool_id.clone(),
    })
    .await
    .unwrap();
    let st = d.state.lock().await;
    assert!(
        st.plugin.pools.is_empty(),
        "the overlay outlives the pool record"
    );
    assert!(st.networks.contains_key(OV));
}

#[tokio::test]
async fn system_cleanup_frees_addresses_dockerd_held_on_an_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir);
    with_overlay_copy(&d).await;
    let ip: std::net::IpAddr = "10.9.0.200".parse().unwrap();
    d.state
        .lock()
        .await
        .networks
        .get_mut(OV)
        .unwrap()
        .pool
        .as_mut()
        .unwrap()
        .allocate_static(ip, ferry_core::remote::DOCKER_IPAM_OWNER)
        .unwrap();
    let errors = d.plugin_forget_all().await;
    assert!(errors.is_empty(), "{errors:?}");
    let st = d.state.lock().await;
    assert_eq!(st.networks[OV].pool.as_ref().unwrap().owner(ip), None);
}
