//! Docker calls ferry does not do, answered 501 with what to use instead (rather
//! than dockerd's "page not found"), and the prunes of what ferry never has (images,
//! build cache, volumes), answered with empty reports so `docker system prune`
//! goes on to the networks.

use std::sync::Arc;

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

/// `router` with the refusals and the empty prunes added.
pub fn routes<K: KernelOps>(router: Router<Arc<Daemon<K>>>) -> Router<Arc<Daemon<K>>> {
    let router = REFUSED.iter().fold(router, |r, (path, msg)| {
        r.route(path, any(move || not_supported(msg)))
    });
    let empty = |deleted: &'static str| {
        post(move || async move { Json(json!({deleted: null, "SpaceReclaimed": 0})) })
    };
    router
        .route("/images/prune", empty("ImagesDeleted"))
        .route("/build/prune", empty("CachesDeleted"))
        .route("/volumes/prune", empty("VolumesDeleted"))
}
