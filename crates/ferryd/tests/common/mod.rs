//! What the daemon's integration tests share.

use ferry_core::docker::container::{ContainerCreateRequest, HostConfigReq};
use ferry_core::docker::network::{IpamConfigReq, IpamReq, NetworkCreateRequest};

/// `network create NAME --subnet SUBNET`, as the API receives it.
#[allow(dead_code)] // not every test file that shares this module makes networks
pub fn net_req(name: &str, subnet: &str) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: name.into(),
        ipam: Some(IpamReq {
            config: Some(vec![IpamConfigReq {
                subnet: Some(subnet.into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `run --network NET -- true`, as the API receives it.
#[allow(dead_code)] // not every test file that shares this module runs sandboxes
pub fn run_req(net: &str) -> ContainerCreateRequest {
    ContainerCreateRequest {
        cmd: Some(vec!["true".into()]),
        host_config: Some(HostConfigReq {
            network_mode: Some(net.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A daemon on the recording fake and an in-memory store, with the predefined networks.
#[allow(dead_code)] // not every test file that shares this module makes its own
pub async fn fake_daemon(
    dir: &tempfile::TempDir,
) -> std::sync::Arc<ferryd::Daemon<ferry_kernel::fake::Recorder>> {
    let d = ferryd::Daemon::new(
        ferryd::Config::under(dir.path()),
        ferry_kernel::fake::Recorder::default(),
        Box::new(ferry_store::MemStore::default()),
    )
    .expect("a daemon on the fake");
    d.ensure_predefined()
        .await
        .expect("the predefined networks");
    d
}

/// The id of the overlay [`with_overlay_copy`] plants.
#[allow(dead_code)]
pub const OV: &str = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a";

/// This host's copy of overlay `ov` (10.9.0.0/24, gateway 10.9.0.1, block 10.9.0.0/26)
/// as the cluster agent would have made it; written to memory only.
#[allow(dead_code)]
pub async fn with_overlay_copy(d: &ferryd::Daemon<ferry_kernel::fake::Recorder>) {
    use ferry_core::ipam::AddressPool;
    use ferry_core::model::{overlay_if_names, BridgeConf, Network, NetworkKind, OverlayConf};
    let (bridge, vxlan) = overlay_if_names(OV);
    let mut pool = AddressPool::new(
        "10.9.0.0/24".parse().unwrap(),
        "10.9.0.1".parse().unwrap(),
        None,
    );
    pool.range = Some("10.9.0.0/26".parse().unwrap());
    let net = Network {
        id: OV.into(),
        name: "ov".into(),
        created: "t".into(),
        kind: NetworkKind::Overlay {
            bridge: BridgeConf {
                name: bridge,
                mtu: 1450,
                icc: true,
                masquerade: true,
                adopted: false,
            },
            tunnel: OverlayConf { vni: 4096, vxlan },
        },
        internal: false,
        attachable: true,
        predefined: false,
        labels: Default::default(),
        options: Default::default(),
        ipam_options: None,
        ipam_echo: vec![],
        pool: Some(pool),
        ipam_plugin: None,
    };
    d.state.lock().await.networks.insert(OV.into(), net);
}
