//! `POST /ferry/containers/{id}/enter`: a running sandbox's network namespace and files,
//! handed to the CLI as open file descriptors over the API's own unix socket
//! (SCM_RIGHTS), so a foreground `ferry run` or `ferry exec` works from a mount
//! namespace that does not see ferryd's namespace pins or exec root (ferryd started by
//! `ip netns exec`, or by a service manager with private mounts). Only the socket has to
//! be reachable, which it is, since the CLI is talking to it.
//!
//! The connection is taken over (101, `Upgrade: ferry-fds`); once the CLI says it is
//! ready (one byte: until then its HTTP reader could take the byte with a plain read,
//! which drops the descriptors riding on it), ferryd sends one byte carrying them — the namespace, then, unless the sandbox shares the host's
//! network, its hosts and resolv.conf files — and closes the connection. Over TCP there
//! is nothing to pass descriptors on: the connection closes with none, and the CLI says
//! so.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use ferry_core::CoreError;
use ferry_kernel::KernelOps;
use hyper_util::rt::TokioIo;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;

use super::{ApiError, ApiResult};
use crate::error::Error;
use crate::ops::Daemon;

/// How long ferryd waits for the CLI's ready byte.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The value of the `Upgrade` header both sides use.
pub const PROTOCOL: &str = "ferry-fds";

/// The sandbox's namespace and files, opened now (a sandbox removed after this still
/// hands over what it had).
async fn open_for<K: KernelOps>(d: &Daemon<K>, key: &str) -> Result<Vec<File>, ApiError> {
    let st = d.state.lock().await;
    let id = st.sandbox_id(key)?;
    let sb = &st.sandboxes[&id];
    if !sb.is_running() {
        return Err(CoreError::NotRunning(sb.name.clone()).into());
    }
    let mut paths = vec![d.netns_path(sb)];
    if sb.network_mode.own_netns() {
        let (hosts, resolv, _) = d.sandbox_files(&id);
        paths.extend([hosts, resolv]);
    }
    paths
        .iter()
        .map(|p| File::open(p).map_err(|e| Error::Other(format!("open {}: {e}", p.display()))))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Into::into)
}

/// Wait for the CLI's byte (unless it came with the request), then send the descriptors.
async fn send(mut stream: UnixStream, wait: bool, files: Vec<File>) -> std::io::Result<()> {
    if wait {
        let mut ready = [0u8; 1];
        tokio::time::timeout(READY_WITHIN, stream.read_exact(&mut ready))
            .await
            .map_err(|_| std::io::Error::other("the CLI never said it was ready"))??;
    }
    let fds: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
    stream.writable().await?;
    stream.try_io(Interest::WRITABLE, || {
        let iov = [std::io::IoSlice::new(b"F")];
        sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map(|_| ())
        .map_err(std::io::Error::from)
    })
}

pub async fn enter<K: KernelOps>(
    State(d): State<Arc<Daemon<K>>>,
    Path(key): Path<String>,
    mut req: Request,
) -> ApiResult {
    let files = open_for(&d, &key).await?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => io,
            Err(e) => return tracing::warn!("enter {key}: {e}"),
        };
        match io.downcast::<TokioIo<UnixStream>>() {
            Ok(parts) => {
                let ready = parts.read_buf.is_empty();
                if let Err(e) = send(parts.io.into_inner(), ready, files).await {
                    tracing::warn!("enter {key}: send the descriptors: {e}");
                }
            }
            Err(_) => tracing::warn!("enter {key}: not a unix socket connection"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(Body::empty())
        .map_err(|e| ApiError(Error::Other(format!("enter response: {e}"))))
}
