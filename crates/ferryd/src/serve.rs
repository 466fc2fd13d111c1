//! Serving HTTP on ferryd's unix sockets (the API and the Docker plugin) with bounds, so
//! that a client that sends half a request cannot pin a connection, a task and a file
//! descriptor forever, nor make ferryd buffer an unbounded body:
//!
//! - the request head must arrive within [`HEADER_TIMEOUT`] (hyper's
//!   `header_read_timeout`, which also closes a connection that sends nothing);
//! - the body must arrive within [`BODY_TIMEOUT`] (408) and hold at most [`BODY_LIMIT`]
//!   bytes (413): [`bounded_body`] reads it whole before any handler runs.
//!
//! `axum::serve` exposes neither timeout, hence the accept loop of our own.
//!
//! The loop also turns away a process inside one of ferry's sandboxes ([`Gate`]):
//! sandboxes run on the host's filesystem, where ferryd's sockets are, and root in a
//! sandbox must not drive ferryd or be dockerd to its plugin. The peer's network namespace
//! (SO_PEERCRED's pid, then `/proc/PID/ns/net`) decides: ferryd's own is let in at once;
//! another is refused when it is a sandbox's, i.e. one pinned under ferryd's
//! `<exec-root>/netns`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Far above any request ferry or Docker sends (a network or container create is a few
/// KiB), far below what would hurt.
pub const BODY_LIMIT: usize = 1 << 20;

/// Listen on a unix socket at `path` (an old one is replaced) that is 0660 from the
/// moment it exists: bound under umask 0117, so that no one else can connect in the
/// instant between the bind and a chmod; then set to 0660 whatever the umask was.
pub fn bind_private(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use nix::sys::stat::{umask, Mode};
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    // The umask is the process's: this runs at start, before any sandbox or request.
    let old = umask(Mode::from_bits_truncate(0o117));
    let bound = tokio::net::UnixListener::bind(path);
    umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Give the socket at `path` to group `name` (its mode stays 0660): its members may
/// connect, others get EACCES. A group that does not exist is not an error (dockerd's
/// `-G docker` on a host without that group): the socket stays root's only, and the log
/// says so.
pub fn give_to_group(path: &std::path::Path, name: &str) -> std::io::Result<()> {
    match nix::unistd::Group::from_name(name).map_err(std::io::Error::from)? {
        Some(g) => {
            nix::unistd::chown(path, None, Some(g.gid)).map_err(std::io::Error::from)?;
            tracing::info!("{}: group {name} may connect", path.display());
        }
        None => tracing::info!(
            "{}: no group {name} on this host: only root may connect",
            path.display()
        ),
    }
    Ok(())
}

fn refusal(status: StatusCode, msg: String) -> Response {
    // Both shapes: the Engine API reads `message`, a plugin client reads `Err`.
    (
        status,
        axum::Json(serde_json::json!({ "message": msg, "Err": msg })),
    )
        .into_response()
}

/// Middleware: the whole body, within the time and size bounds, before the handler.
pub async fn bounded_body(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body: larger than the limit of {BODY_LIMIT} bytes"),
        );
    }
    let bytes =
        match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let too_big = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                return match too_big {
                    true => refusal(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body: larger than the limit of {BODY_LIMIT} bytes"),
                    ),
                    false => refusal(StatusCode::BAD_REQUEST, format!("request body: {e}")),
                };
            }
            Err(_) => {
                return refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("request body: not received within {BODY_TIMEOUT:?}"),
                )
            }
        };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A namespace's identity: the device and inode `stat` gives its file.
type NsId = (u64, u64);

/// Who may connect: anyone but a process in one of ferry's sandboxes.
#[derive(Debug, Clone)]
pub struct Gate {
    /// ferryd's own network namespace, read at start.
    own: Option<NsId>,
    /// Where ferryd pins its sandboxes' namespaces.
    pins: std::path::PathBuf,
    /// Namespaces already looked up among the pins (a client outside ferryd's namespace,
    /// the usual case in tests, connects many times), valid while the pins directory's
    /// modification time is the one recorded: a new pin clears it.
    known: std::sync::Arc<std::sync::Mutex<Known>>,
}

#[derive(Debug, Default)]
struct Known {
    stamp: Option<std::time::SystemTime>,
    sandbox_of: std::collections::HashMap<NsId, Option<String>>,
}

/// At most this many namespaces are remembered.
const KNOWN_MAX: usize = 1024;

fn ns_id(path: &std::path::Path) -> Option<NsId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Gate {
    pub fn new(pins: std::path::PathBuf) -> Gate {
        Gate {
            own: ns_id(std::path::Path::new("/proc/self/ns/net")),
            pins,
            known: Default::default(),
        }
    }

    /// The sandbox `stream`'s peer runs in, if it runs in one (by its namespace pin's
    /// name); None for ferryd's namespace and any namespace ferry did not make.
    pub fn sandbox_of(&self, stream: &tokio::net::UnixStream) -> Option<String> {
        let pid = stream.peer_cred().ok()?.pid()?;
        let peer = ns_id(
            &std::path::Path::new("/proc")
                .join(pid.to_string())
                .join("ns/net"),
        )?;
        if Some(peer) == self.own {
            return None;
        }
        let stamp = std::fs::metadata(&self.pins)
            .and_then(|m| m.modified())
            .ok();
        let mut known = self.known.lock().expect("gate lock");
        if known.stamp != stamp || known.sandbox_of.len() >= KNOWN_MAX {
            known.stamp = stamp;
            known.sandbox_of.clear();
        }
        if let Some(found) = known.sandbox_of.get(&peer) {
            return found.clone();
        }
        let found = self.pinned_as(peer);
        known.sandbox_of.insert(peer, found.clone());
        found
    }

    /// The name of the pin of namespace `ns`, if ferryd pinned it.
    fn pinned_as(&self, ns: NsId) -> Option<String> {
        std::fs::read_dir(&self.pins)
            .ok()?
            .flatten()
            .find(|e| ns_id(&e.path()) == Some(ns))
            .map(|e| e.file_name().to_string_lossy().into_owned())
    }
}

/// Accept connections on `listener` and serve each with `svc` (HTTP/1.1, the head
/// within [`HEADER_TIMEOUT`]) until the future is dropped; a connection from inside a
/// sandbox is closed unanswered.
pub async fn serve_unix<S>(listener: tokio::net::UnixListener, gate: Gate, svc: S)
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(sandbox) = gate.sandbox_of(&stream) {
            tracing::warn!("refused a connection from inside sandbox namespace {sandbox}");
            continue;
        }
        let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
            svc.clone(),
            |r: axum::http::Request<Incoming>| r.map(Body::new),
        ));
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                // `docker attach`/`run` hijack the connection (101 Upgrade).
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
        });
    }
}

/// Requests being answered, so that a SIGTERM lets them finish (a `network disconnect`
/// half done is not cut off) before ferryd exits: counted by [`track`], awaited by
/// [`InFlight::drain`].
#[derive(Default)]
pub struct InFlight {
    n: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One request in flight while held.
struct Counted(std::sync::Arc<InFlight>);

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Wait until no request is being answered, at most `within`; false if some still
    /// are (a `wait` on a sandbox that does not exit, say).
    pub async fn drain(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = self.idle.notified();
            if self.n.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
    }
}

/// Middleware: count the request in flight until its answer is ready.
pub async fn track(
    axum::extract::State(inflight): axum::extract::State<std::sync::Arc<InFlight>>,
    req: Request,
    next: Next,
) -> Response {
    inflight.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _counted = Counted(inflight);
    next.run(req).await
}
