//! For the API's unit tests: a daemon on the recording kernel fake and an in-memory
//! store, with one created sandbox on no network.

use std::sync::Arc;

use ferry_core::docker::container::{ContainerCreateRequest, HostConfigReq};
use ferry_core::model::RunState;
use ferry_kernel::fake::Recorder;

use crate::ops::Daemon;
use crate::Config;

/// The daemon (its state under `dir`) and the id of sandbox `name`, made to run `cmd`.
pub(super) async fn with_sandbox(
    dir: &tempfile::TempDir,
    name: &str,
    cmd: &[&str],
) -> (Arc<Daemon<Recorder>>, String) {
    let d = Daemon::new(
        Config::under(dir.path()),
        Recorder::default(),
        Box::new(ferry_store::MemStore::default()),
    )
    .expect("daemon");
    d.ensure_predefined().await.expect("predefined networks");
    let req = ContainerCreateRequest {
        cmd: Some(cmd.iter().map(|c| c.to_string()).collect()),
        host_config: Some(HostConfigReq {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = d.create_sandbox(Some(name), req).await.expect("create");
    (d, id)
}

/// The sandbox started and exited with `code`, as its supervisor records a run.
pub(super) async fn ran_and_exited(d: &Daemon<Recorder>, id: &str, code: i32) {
    let mut st = d.state.lock().await;
    let sb = st.sandboxes.get_mut(id).expect("sandbox");
    sb.started_at = Some("now".into());
    sb.state = RunState::Exited { code };
}
