//! The Docker plugin listener: libnetwork's remote NetworkDriver and IpamDriver (plugin
//! API v1) on a second unix socket, `<plugin-dir>/ferry.sock`, where dockerd finds it
//! by name (`docker network create -d ferry [--ipam-driver ferry]`).
//!
//! Every call is `POST /<Role>.<Method>` with a JSON body (empty for the argument-less
//! ones, and no Content-Type). Each maps onto one operation in `ops::plugin`. Errors
//! go back as HTTP 4xx (the request's fault) or 500 (ferry's) with
//! `{"Err": "<ferry's message>"}`: dockerd reads that key for
//! both roles on a non-200 reply and shows `<Role>.<Method>: <message>` (on a 200 reply
//! the IPAM role would need `Error` instead, a trap the captures show).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use ferry_core::docker::plugin::{
    ActivateResponse, AddressSpaces, IpamCapabilities, NetworkCapabilities, GLOBAL_ADDRESS_SPACE,
    LOCAL_ADDRESS_SPACE,
};
use ferry_core::model::mac_string;
use ferry_kernel::KernelOps;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;
use crate::ops::Daemon;

/// The name Docker knows the plugin by, and so the socket's file name.
pub const PLUGIN_NAME: &str = "ferry";
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

fn reply(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

fn ok<T: Serialize>(v: &T) -> Response {
    reply(
        StatusCode::OK,
        serde_json::to_vec(v).expect("plugin responses serialize"),
    )
}

/// dockerd takes any non-200 answer as the call's failure and shows `Err`; the status
/// says whose failure it is: 4xx for a request ferry refuses (a bad body, an address
/// outside the pool…), 500 for ferry's own.
fn err(method: &str, e: Error) -> Response {
    let msg = e.to_string();
    tracing::warn!("plugin {method}: {msg}");
    reply(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        serde_json::to_vec(&serde_json::json!({ "Err": msg })).expect("serializes"),
    )
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        Error::Core(ferry_core::CoreError::Invalid(format!(
            "invalid JSON in plugin request: {e}"
        )))
    })
}

/// Answer one plugin call (exposed for the fixture replay tests).
pub async fn handle<K: KernelOps>(d: &Daemon<K>, method: &str, body: &[u8]) -> Response {
    macro_rules! call {
        ($op:ident) => {
            match parse(body) {
                Ok(req) => match d.$op(req).await {
                    Ok(resp) => ok(&resp),
                    Err(e) => err(method, e),
                },
                Err(e) => err(method, e),
            }
        };
        ($op:ident, empty) => {
            match parse(body) {
                Ok(req) => match d.$op(req).await {
                    Ok(()) => ok(&serde_json::json!({})),
                    Err(e) => err(method, e),
                },
                Err(e) => err(method, e),
            }
        };
    }
    match method {
        "Plugin.Activate" => ok(&ActivateResponse::ferry()),
        "NetworkDriver.GetCapabilities" => ok(&NetworkCapabilities {
            scope: "local".into(),
            connectivity_scope: "local".into(),
        }),
        "IpamDriver.GetCapabilities" => ok(&IpamCapabilities {
            requires_mac_address: false,
            requires_request_replay: false,
        }),
        "IpamDriver.GetDefaultAddressSpaces" => ok(&AddressSpaces {
            local: LOCAL_ADDRESS_SPACE.into(),
            global: GLOBAL_ADDRESS_SPACE.into(),
        }),
        "IpamDriver.RequestPool" => call!(plugin_request_pool),
        "IpamDriver.RequestAddress" => call!(plugin_request_address),
        "IpamDriver.ReleaseAddress" => call!(plugin_release_address, empty),
        "IpamDriver.ReleasePool" => call!(plugin_release_pool, empty),
        "NetworkDriver.CreateNetwork" => call!(plugin_create_network, empty),
        "NetworkDriver.DeleteNetwork" => call!(plugin_delete_network, empty),
        "NetworkDriver.CreateEndpoint" => call!(plugin_create_endpoint),
        "NetworkDriver.DeleteEndpoint" => call!(plugin_delete_endpoint, empty),
        "NetworkDriver.Join" => call!(plugin_join),
        "NetworkDriver.Leave" => call!(plugin_leave, empty),
        "NetworkDriver.EndpointOperInfo" => call!(plugin_oper_info),
        "NetworkDriver.ProgramExternalConnectivity" => call!(plugin_program_external, empty),
        "NetworkDriver.RevokeExternalConnectivity" => call!(plugin_revoke_external, empty),
        // Never called for a local-scope driver; harmless to accept.
        "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.AllocateNetwork"
        | "NetworkDriver.FreeNetwork" => ok(&serde_json::json!({})),
        other => reply(
            StatusCode::NOT_FOUND,
            serde_json::to_vec(&serde_json::json!({
                "Err": format!("ferry does not implement {other}")
            }))
            .expect("serializes"),
        ),
    }
}

async fn dispatch<K: KernelOps>(State(d): State<Arc<Daemon<K>>>, req: Request) -> Response {
    let method = req.uri().path().trim_start_matches('/').to_string();
    let body: Bytes = match axum::body::to_bytes(req.into_body(), 16 << 20).await {
        Ok(b) => b,
        Err(e) => {
            return err(
                &method,
                Error::Core(ferry_core::CoreError::Invalid(format!(
                    "read request body: {e}"
                ))),
            )
        }
    };
    tracing::debug!("plugin {method} {}", String::from_utf8_lossy(&body).trim());
    handle(&d, &method, &body).await
}

pub fn router<K: KernelOps>(d: Arc<Daemon<K>>) -> Router {
    Router::new()
        .fallback(dispatch::<K>)
        .layer(axum::middleware::from_fn(crate::serve::bounded_body))
        .with_state(d)
}

/// `Containers` entries of `GET /networks/{id}` for Docker's endpoints on a network,
/// keyed by endpoint ID (a plugin never learns container IDs), named after Docker's
/// sandbox (the last part of the SandboxKey).
pub fn docker_containers(st: &crate::state::State, network_id: &str) -> Vec<(String, Value)> {
    st.plugin
        .endpoints
        .values()
        .filter(|e| e.endpoint.network_id == network_id && e.joined)
        .filter_map(|e| {
            let live = e.endpoint.live.as_ref()?;
            let sandbox = e
                .sandbox_key
                .as_deref()
                .and_then(|k| k.rsplit('/').next())
                .unwrap_or("");
            Some((
                e.id.clone(),
                serde_json::json!({
                    "Name": format!("docker-{sandbox}"),
                    "EndpointID": e.id,
                    "MacAddress": mac_string(&live.mac),
                    "IPv4Address": format!("{}/{}", live.ip, live.prefix_len),
                    "IPv6Address": "",
                }),
            ))
        })
        .collect()
}

/// The socket path in a plugin directory.
pub fn socket_in(dir: &Path) -> std::path::PathBuf {
    dir.join(format!("{PLUGIN_NAME}.sock"))
}

/// Listen on `<dir>/ferry.sock` (the directory is made if missing).
pub fn bind(dir: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let socket = socket_in(dir);
    // Like the API socket: root and its group only (dockerd runs as root).
    let listener = crate::serve::bind_private(&socket)
        .with_context(|| format!("listen on {}", socket.display()))?;
    tracing::info!(
        "Docker plugin \"{PLUGIN_NAME}\" listening on unix://{}",
        socket.display()
    );
    Ok(listener)
}

/// Serve the plugin protocol until the future is dropped, with the bounds of
/// [`crate::serve`].
pub async fn serve<K: KernelOps>(d: Arc<Daemon<K>>, listener: tokio::net::UnixListener) {
    let gate = crate::serve::Gate::new(d.cfg.netns_root());
    crate::serve::serve_unix(listener, gate, router(d)).await
}
