//! `/_ping`, `/version`, `/info`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ferry_core::docker::{API_VERSION, MIN_API_VERSION};
use ferry_kernel::KernelOps;
use serde_json::json;

use crate::ops::Daemon;

pub async fn ping() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (header::PRAGMA, "no-cache"),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "OK",
    )
        .into_response()
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Go's name for this machine's architecture (GOARCH), which `docker version` shows.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// `MemTotal` of /proc/meminfo in bytes (0 when unreadable).
fn mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `PRETTY_NAME` of /etc/os-release, as dockerd's OperatingSystem.
fn os_name() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "linux".into())
}

pub async fn version() -> Json<serde_json::Value> {
    let v = env!("CARGO_PKG_VERSION");
    Json(json!({
        "Platform": {"Name": "ferry"},
        "Components": [{"Name": "Engine", "Version": v, "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": go_arch(), "KernelVersion": kernel_version()}}],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel_version(),
        "BuildTime": "",
    }))
}

pub async fn info<K: KernelOps>(State(d): State<Arc<Daemon<K>>>) -> Json<serde_json::Value> {
    let st = d.state.lock().await;
    let running = st.sandboxes.values().filter(|s| s.is_running()).count();
    Json(json!({
        "ID": "", "Containers": st.sandboxes.len(), "ContainersRunning": running,
        "ContainersPaused": 0, "ContainersStopped": st.sandboxes.len() - running, "Images": 0,
        "Driver": "", "Name": nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        "ServerVersion": env!("CARGO_PKG_VERSION"), "OperatingSystem": os_name(), "OSType": "linux",
        "Architecture": std::env::consts::ARCH, "KernelVersion": kernel_version(),
        "NCPU": std::thread::available_parallelism().map_or(0, |n| n.get()), "MemTotal": mem_total(),
        "DockerRootDir": d.cfg.data_root, "Plugins": {"Network": ["bridge", "host", "null"]},
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
    }))
}

/// `POST /ferry/system/reconcile`: what ferryd does at start, on demand.
pub async fn reconcile<K: KernelOps>(State(d): State<Arc<Daemon<K>>>) -> super::ApiResult {
    crate::reconcile::reconcile(&d).await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `POST /ferry/system/cleanup`: remove all ferry made; ferryd stops afterwards.
pub async fn cleanup<K: KernelOps>(State(d): State<Arc<Daemon<K>>>) -> super::ApiResult {
    let res = d.cleanup().await;
    // Stop once this answer is on its way.
    let stop = d.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        stop.shutdown.notify_one();
    });
    res?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
