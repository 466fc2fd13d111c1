//! Docker calls ferry does not do, answered 501 with what to use instead (rather
//! than dockerd's "page not found"), and the prunes of what ferry never has (images,
//! build cache, volumes), answered with empty reports so `docker system prune`
//! goes on to the networks.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::routing::{any, post};
use axum::{Json, Router};
use ferry_core::CoreError;
use ferry_kernel::KernelOps;
use serde_json::json;

use super::ApiError;
use crate::ops::Daemon;

const IMAGES: &str = "images are not supported by ferry: it runs a sandbox's command from the host's filesystem (`ferry run -- CMD…`, or docker run -d IMAGE CMD…, the image ignored)";
const VOLUMES: &str =
    "volumes are not supported by ferry: it manages networks and sandboxes (`ferry network ls`, `ferry ps -a`)";
const LOGS: &str = "docker logs is not supported by ferry: a detached sandbox's output is in the file `ferry inspect --format '{{.LogPath}}' NAME` names, and `ferry run` in the foreground prints it";
const EXEC: &str = "docker exec is not supported by ferry: use `ferry exec SANDBOX CMD…`";
const SYSTEM_DF: &str = "docker system df is not supported by ferry: it has no images, volumes or build cache; see `ferry ps -a` and `ferry network ls`";

const REFUSED: &[(&str, &str)] = &[
    ("/images/json", IMAGES),
    ("/images/create", IMAGES),
    ("/images/{*rest}", IMAGES),
    ("/build", IMAGES),
    ("/volumes", VOLUMES),
    ("/volumes/{*rest}", VOLUMES),
    ("/containers/{id}/logs", LOGS),
    ("/containers/{id}/exec", EXEC),
    ("/system/df", SYSTEM_DF),
];

async fn not_supported(msg: &'static str) -> Result<(), ApiError> {
    Err(ApiError(CoreError::NotSupported(msg.into()).into()))
}

/// Any other `/containers/{id}/{action}` (pause, rename, top, stats, cp, …).
async fn container_action(
    Path((_, action)): Path<(String, String)>,
    _body: Bytes,
) -> Result<(), ApiError> {
    Err(ApiError(
        CoreError::NotSupported(format!(
        "docker container {action} is not supported by ferry: its sandboxes are run, \
         started, stopped, restarted, inspected and removed, and `ferry exec` runs a command in one"
    ))
        .into(),
    ))
}

/// `router` with the refusals and the empty prunes added.
pub fn routes<K: KernelOps>(router: Router<Arc<Daemon<K>>>) -> Router<Arc<Daemon<K>>> {
    let router = REFUSED.iter().fold(router, |r, (path, msg)| {
        // The body is read first: a refusal sent while the CLI still writes its request
        // would close the connection under it (EPIPE) instead of answering.
        r.route(path, any(move |_: Bytes| not_supported(msg)))
    });
    let empty = |deleted: &'static str| {
        post(move || async move { Json(json!({deleted: null, "SpaceReclaimed": 0})) })
    };
    router
        .route("/containers/{id}/{action}", any(container_action))
        .route("/images/prune", empty("ImagesDeleted"))
        .route("/build/prune", empty("CachesDeleted"))
        .route("/volumes/prune", empty("VolumesDeleted"))
}
