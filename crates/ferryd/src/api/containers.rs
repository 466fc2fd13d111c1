//! `/containers…` handlers: sandboxes seen the way `docker ps` and `docker inspect`
//! see containers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use ferry_core::docker::container::{
    inspect as inspect_json, summary, ContainerCreateRequest, SandboxPaths,
};
use ferry_core::filters::containers::{Listed, PsQuery};
use ferry_core::filters::parse;
use ferry_core::filters::prune::PruneFilter;
use ferry_core::CoreError;
use ferry_kernel::KernelOps;
use serde_json::json;

use super::{body, empty, flag, ApiError, ApiResult, Q};
use crate::error::Error;
use crate::ops::{Daemon, ExitReport};

type D<K> = State<Arc<Daemon<K>>>;

/// `docker ps`: `all`, `limit` and `filters` as dockerd applies them.
pub async fn list<K: KernelOps>(State(d): D<K>, q: Q) -> ApiResult {
    let filters = parse(q.get("filters").map(String::as_str))?;
    let limit = match q.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => l.parse().map_err(|_| {
            ApiError(CoreError::Invalid(format!("invalid limit {l:?}: not an integer")).into())
        })?,
        None => -1,
    };
    let st = d.state.lock().await;
    let created_of = |r: &str| st.sandbox_id(r).map(|id| st.sandboxes[&id].created.clone());
    let query = PsQuery::new(filters, flag(&q, "all"), limit, created_of)?;
    let mut v: Vec<_> = st.sandboxes.values().collect();
    v.sort_by(|a, b| b.created.cmp(&a.created));
    let listed = v
        .into_iter()
        .map(|s| Listed {
            sandbox: s,
            networks: st.networks_of(s),
        })
        .collect();
    let now = chrono::Utc::now().timestamp();
    let out: Vec<_> = query
        .select(listed)
        .iter()
        .map(|l| summary(l.sandbox, &l.networks, now))
        .collect();
    Ok(Json(out).into_response())
}

pub async fn create<K: KernelOps>(State(d): D<K>, q: Q, b: axum::body::Bytes) -> ApiResult {
    let req: ContainerCreateRequest = body(&b)?;
    let warnings = ferry_core::docker::run::check(&req)?;
    let id = d
        .create_sandbox(q.get("name").map(String::as_str), req)
        .await?;
    let created = json!({"Id": id, "Warnings": warnings});
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `docker container prune`: remove the sandboxes that do not run (created or
/// exited) and pass the `label`/`label!`/`until` filters.
pub async fn prune<K: KernelOps>(State(d): D<K>, q: Q) -> ApiResult {
    let f = parse(q.get("filters").map(String::as_str))?;
    let f = PruneFilter::new(&f, chrono::Utc::now().timestamp())?;
    let ids: Vec<String> = {
        let st = d.state.lock().await;
        let none = std::collections::BTreeMap::new();
        st.sandboxes
            .values()
            .filter(|s| !s.is_running() && f.matches(&none, &s.created))
            .map(|s| s.id.clone())
            .collect()
    };
    let mut deleted = vec![];
    for id in ids {
        match d.remove_sandbox(&id, false).await {
            Ok(()) => deleted.push(id),
            // Started or removed meanwhile: not prune's to take.
            Err(Error::Core(CoreError::RemoveRunning(_) | CoreError::NoSuchContainer(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let deleted = (!deleted.is_empty()).then_some(deleted);
    Ok(Json(json!({"ContainersDeleted": deleted, "SpaceReclaimed": 0})).into_response())
}

pub async fn inspect<K: KernelOps>(State(d): D<K>, Path(id): Path<String>) -> ApiResult {
    let st = d.state.lock().await;
    let id = st.sandbox_id(&id)?;
    let sb = &st.sandboxes[&id];
    let (hosts, resolv, hostname) = d.sandbox_files(&id);
    let host = !sb.network_mode.own_netns();
    let paths = SandboxPaths {
        sandbox_key: d.netns_path(sb).display().to_string(),
        hosts: if host {
            String::new()
        } else {
            hosts.display().to_string()
        },
        resolv_conf: if host {
            String::new()
        } else {
            resolv.display().to_string()
        },
        hostname: hostname.display().to_string(),
        log: d.cfg.sandbox_dir(&id).join("log").display().to_string(),
    };
    Ok(Json(inspect_json(sb, &st.networks_of(sb), &paths)).into_response())
}

/// `?ferry-attach=1`: the CLI runs the process itself (foreground `ferry run`).
/// A sandbox made with `--rm` whose start failed is removed, as dockerd removes such a
/// container: `docker run --rm` waits for that removal before it reports the error.
pub async fn start<K: KernelOps>(State(d): D<K>, Path(id): Path<String>, q: Q) -> ApiResult {
    let Err(e) = d.start_sandbox(&id, !flag(&q, "ferry-attach")).await else {
        return Ok(empty(StatusCode::NO_CONTENT));
    };
    let auto_remove = {
        let st = d.state.lock().await;
        let sb = st.sandbox_id(&id).ok().and_then(|i| st.sandboxes.get(&i));
        sb.is_some_and(|s| s.auto_remove && !s.is_running())
    };
    if auto_remove {
        if let Err(r) = d.remove_sandbox(&id, true).await {
            tracing::warn!("remove --rm sandbox {id} after its failed start: {r}");
        }
    }
    Err(e.into())
}

pub async fn stop<K: KernelOps>(State(d): D<K>, Path(id): Path<String>) -> ApiResult {
    d.stop_sandbox(&id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `docker restart`: stop the process if it runs (and wait for its exit), then
/// start the sandbox again under ferryd's supervision.
pub async fn restart<K: KernelOps>(State(d): D<K>, Path(id): Path<String>) -> ApiResult {
    let id = d.state.lock().await.sandbox_id(&id)?;
    let mut exits = d.exits.subscribe();
    match d.stop_sandbox(&id).await {
        Ok(()) | Err(Error::Core(CoreError::NotRunning(_))) => {}
        Err(e) => return Err(e.into()),
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while d
        .state
        .lock()
        .await
        .sandboxes
        .get(&id)
        .is_some_and(|s| s.is_running())
    {
        if tokio::time::Instant::now() > deadline {
            let msg = format!("sandbox {id} did not stop within 10 s");
            return Err(Error::Other(msg).into());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(100), exits.recv()).await;
    }
    d.start_sandbox(&id, true).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn remove<K: KernelOps>(State(d): D<K>, Path(id): Path<String>, q: Q) -> ApiResult {
    d.remove_sandbox(&id, flag(&q, "force")).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn attached<K: KernelOps>(State(d): D<K>, Path(id): Path<String>, q: Q) -> ApiResult {
    let pid = q
        .get("pid")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| ApiError(CoreError::Invalid("pid missing".into()).into()))?;
    d.attached(&id, pid).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

pub async fn exited<K: KernelOps>(State(d): D<K>, Path(id): Path<String>, q: Q) -> ApiResult {
    let code = q.get("code").and_then(|p| p.parse().ok()).unwrap_or(-1);
    let pid = q.get("pid").and_then(|p| p.parse().ok()).unwrap_or(0);
    let id = d.state.lock().await.sandbox_id(&id)?;
    d.on_exit(&id, ExitReport { pid, code }).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
