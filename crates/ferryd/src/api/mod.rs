//! The HTTP API on a unix socket, shaped like the Docker Engine API 1.41 so that the
//! docker CLI works against ferryd. Paths may carry a `/v1.NN` prefix, stripped before
//! routing (too new or too old versions are refused as dockerd refuses them).
//! ferry-only calls live under `/ferry/…`.

mod attach;
mod containers;
mod enter;
mod mark;
mod networks;
mod nodes;
mod plugins;
mod system;
#[cfg(test)]
mod test_daemon;
mod unsupported;
mod wait;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ferry_core::docker::{API_VERSION, MIN_API_VERSION};
use ferry_kernel::KernelOps;

use crate::error::Error;
use crate::ops::Daemon;

pub type Q = axum::extract::Query<HashMap<String, String>>;

/// An error as dockerd sends it: the status and `{"message": …}`.
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!("{}", self.0);
        }
        (
            status,
            Json(serde_json::json!({ "message": self.0.to_string() })),
        )
            .into_response()
    }
}

pub type ApiResult = Result<Response, ApiError>;

pub fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

pub fn router<K: KernelOps>(d: Arc<Daemon<K>>) -> Router {
    unsupported::routes(Router::new())
        .route("/_ping", get(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info::<K>))
        .route("/networks", get(networks::list::<K>))
        .route("/networks/create", post(networks::create::<K>))
        .route("/networks/prune", post(networks::prune::<K>))
        .route(
            "/networks/{id}",
            get(networks::inspect::<K>).delete(networks::remove::<K>),
        )
        .route("/networks/{id}/connect", post(networks::connect::<K>))
        .route("/networks/{id}/disconnect", post(networks::disconnect::<K>))
        .route("/containers/json", get(containers::list::<K>))
        .route("/containers/create", post(containers::create::<K>))
        .route("/containers/prune", post(containers::prune::<K>))
        .route("/containers/{id}/json", get(containers::inspect::<K>))
        .route("/containers/{id}/start", post(containers::start::<K>))
        .route("/containers/{id}/stop", post(containers::stop::<K>))
        .route("/containers/{id}/kill", post(containers::stop::<K>))
        .route("/containers/{id}/restart", post(containers::restart::<K>))
        .route("/containers/{id}/wait", post(wait::wait::<K>))
        .route("/containers/{id}/attach", post(attach::attach::<K>))
        .route("/containers/{id}", delete(containers::remove::<K>))
        .route(
            "/ferry/containers/{id}/attached",
            post(containers::attached::<K>),
        )
        .route(
            "/ferry/containers/{id}/exited",
            post(containers::exited::<K>),
        )
        .route("/ferry/containers/{id}/enter", post(enter::enter::<K>))
        .route("/ferry/nodes", get(nodes::list::<K>))
        // plughost: the third-party plugins discovery finds.
        .route("/ferry/plugins", get(plugins::list::<K>))
        .route("/ferry/nodes/{name}", get(nodes::inspect::<K>))
        .route("/ferry/system/reconcile", post(system::reconcile::<K>))
        .route("/ferry/system/cleanup", post(system::cleanup::<K>))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"message": "page not found"})),
            )
        })
        .layer(axum::middleware::from_fn(crate::serve::bounded_body))
        .layer(axum::middleware::map_response(add_headers))
        .with_state(d)
}

async fn add_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("Ferry/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    r
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Strip `/vX.Y` before routing; refuse versions outside what ferryd speaks.
pub async fn strip_version(mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some((ver, tail)) = rest.split_once('/') {
            if let Some(v) = parse_version(ver) {
                let max = parse_version(API_VERSION).expect("valid");
                let min = parse_version(MIN_API_VERSION).expect("valid");
                if v > max {
                    let msg = format!("client version {ver} is too new. Maximum supported API version is {API_VERSION}");
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(serde_json::json!({"message": msg})),
                    )
                        .into_response();
                }
                if v < min {
                    let msg = format!("client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version");
                    return (StatusCode::BAD_REQUEST, msg).into_response();
                }
                let q = req
                    .uri()
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                if let Ok(uri) = format!("/{tail}{q}").parse() {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    next.run(req).await
}

/// A request body as JSON; an empty body reads as `{}`.
pub fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let src = if bytes.is_empty() {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(src).map_err(|e| {
        ApiError(ferry_core::CoreError::Invalid(format!("invalid JSON body: {e}")).into())
    })
}

pub fn empty(status: StatusCode) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .expect("valid response")
}
