//! `/ferry/nodes`: the hosts of the cluster, as this host's view has them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use ferry_core::CoreError;
use ferry_kernel::KernelOps;
use ferry_overlay::{NodeRecord, View};
use serde_json::{json, Value};

use super::ApiResult;
use crate::ops::Daemon;

fn node_json(view: &View, n: &NodeRecord, me: &str) -> Value {
    json!({
        "Name": n.name,
        "Addr": n.addr.to_string(),
        // A node's record lives only as long as its lease.
        "Lease": "alive",
        "LeaseID": format!("{:x}", n.lease),
        "Endpoints": view.endpoints.values().filter(|e| e.node == n.name).count(),
        "Blocks": view.blocks.values().filter(|o| **o == n.name).count(),
        "Started": n.started,
        "Self": n.name == me,
    })
}

fn cluster<K: KernelOps>(d: &Daemon<K>) -> Result<&Arc<crate::overlay::Overlay>, CoreError> {
    d.overlay.get().ok_or_else(|| {
        CoreError::Invalid("this ferryd is not in a cluster (start it with --cluster-store)".into())
    })
}

pub async fn list<K: KernelOps>(State(d): State<Arc<Daemon<K>>>) -> ApiResult {
    let ov = cluster(&d)?;
    let view = ov.view();
    let out: Vec<Value> = view
        .nodes
        .values()
        .map(|n| node_json(&view, n, ov.node()))
        .collect();
    Ok(Json(out).into_response())
}

pub async fn inspect<K: KernelOps>(
    State(d): State<Arc<Daemon<K>>>,
    Path(name): Path<String>,
) -> ApiResult {
    let ov = cluster(&d)?;
    let view = ov.view();
    let n = view
        .nodes
        .get(&name)
        .ok_or(ferry_overlay::ClusterError::NoSuchNode(name))?;
    Ok(Json(node_json(&view, n, ov.node())).into_response())
}
