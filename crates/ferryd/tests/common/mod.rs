//! What the daemon's integration tests share.

use ferry_core::docker::container::{ContainerCreateRequest, HostConfigReq};
use ferry_core::docker::network::{IpamConfigReq, IpamReq, NetworkCreateRequest};

/// `network create NAME --subnet SUBNET`, as the API receives it.
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
