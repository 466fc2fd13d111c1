//! `/networks…` handlers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use ferry_core::docker::network::{
    network_resource, ConnectRequest, DisconnectRequest, NetworkCreateRequest,
};
use ferry_core::filters::networks::check_list;
use ferry_core::filters::prune::PruneFilter;
use ferry_core::filters::{network_matches, parse, NetworkUse};
use ferry_kernel::KernelOps;
use serde_json::json;

use super::{body, empty, ApiResult, Q};
use crate::ops::Daemon;

type D<K> = State<Arc<Daemon<K>>>;

pub async fn list<K: KernelOps>(State(d): D<K>, q: Q) -> ApiResult {
    let f = parse(q.get("filters").map(String::as_str))?;
    check_list(&f)?;
    let st = d.state.lock().await;
    let mut out = vec![];
    for n in st.networks.values() {
        let usage = if st.users_of(&n.id).is_empty() {
            NetworkUse::Unused
        } else {
            NetworkUse::InUse
        };
        if network_matches(n, &f, usage)? {
            out.push(network_resource(n, &[]));
        }
    }
    Ok(Json(out).into_response())
}

pub async fn inspect<K: KernelOps>(State(d): D<K>, Path(id): Path<String>) -> ApiResult {
    let st = d.state.lock().await;
    let id = st.network_id(&id)?;
    let users: Vec<_> = st.sandboxes.values().filter(|s| s.is_running()).collect();
    let mut v = network_resource(&st.networks[&id], &users);
    if let Some(c) = v["Containers"].as_object_mut() {
        c.extend(crate::plugin::docker_containers(&st, &id));
    }
    Ok(Json(v).into_response())
}

pub async fn create<K: KernelOps>(State(d): D<K>, b: axum::body::Bytes) -> ApiResult {
    let req: NetworkCreateRequest = body(&b)?;
    req.check_supported()?;
    let id = d.create_network(req).await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": id, "Warning": ""}))).into_response())
}

pub async fn remove<K: KernelOps>(State(d): D<K>, Path(id): Path<String>) -> ApiResult {
    d.remove_network(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn prune<K: KernelOps>(State(d): D<K>, q: Q) -> ApiResult {
    let f = parse(q.get("filters").map(String::as_str))?;
    let f = PruneFilter::new(&f, chrono::Utc::now().timestamp())?;
    let names = d
        .prune_networks(|n| Ok(f.matches(&n.labels, &n.created)))
        .await?;
    Ok(Json(json!({"NetworksDeleted": names})).into_response())
}

pub async fn connect<K: KernelOps>(
    State(d): D<K>,
    Path(id): Path<String>,
    b: axum::body::Bytes,
) -> ApiResult {
    let req: ConnectRequest = body(&b)?;
    d.connect(&id, req).await?;
    Ok(empty(StatusCode::OK))
}

pub async fn disconnect<K: KernelOps>(
    State(d): D<K>,
    Path(id): Path<String>,
    b: axum::body::Bytes,
) -> ApiResult {
    let req: DisconnectRequest = body(&b)?;
    d.disconnect(&id, req).await?;
    Ok(empty(StatusCode::OK))
}
