//! `POST /containers/{id}/attach`: an attached `docker run` (or `docker start -a`)
//! reads the process's output here. The connection is taken over (101, as dockerd
//! answers) and the sandbox's log file (stdout and stderr of the process ferryd
//! spawns) is streamed in docker's multiplexed frames until the process has exited
//! and the file is read to its end. Stdout and stderr share the file, so everything
//! arrives as stdout. No input: `-i` is refused at create.
//!
//! The log is opened (created if need be) before the sandbox starts, so its inode is
//! held even when an auto-removed sandbox's directory goes with its exit. The CLI
//! starts the sandbox right after attaching; one not started within
//! [`START_WITHIN`] (its start failed) ends the stream, so no attach outlives it.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use ferry_core::model::RunState;
use ferry_kernel::KernelOps;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use super::{ApiError, ApiResult};
use crate::error::Error;
use crate::ops::Daemon;

/// How long an attach waits for the sandbox to start.
const START_WITHIN: Duration = Duration::from_secs(60);

/// docker's stdcopy frame: stream 1 (stdout), three zero bytes, the length, the data.
fn frame(data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&[1, 0, 0, 0]);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

/// What the attach knows of the process it streams.
struct Watch {
    since: Instant,
    first_start: Option<String>,
    ran: bool,
}

impl Watch {
    /// Has the process come and gone (or never come)?
    async fn finished<K: KernelOps>(&mut self, d: &Daemon<K>, id: &str) -> bool {
        let st = d.state.lock().await;
        match st.sandboxes.get(id) {
            None => true,
            Some(sb) => match sb.state {
                RunState::Running { .. } => {
                    self.ran = true;
                    false
                }
                _ => {
                    self.ran
                        || sb.started_at != self.first_start
                        || self.since.elapsed() > START_WITHIN
                }
            },
        }
    }
}

async fn stream_log<K: KernelOps, R, W>(d: Arc<Daemon<K>>, id: String, mut log: R, mut out: W)
where
    R: AsyncRead + AsyncSeekExt + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut exits = d.exits.subscribe();
    let mut watch = {
        let st = d.state.lock().await;
        let sb = st.sandboxes.get(&id);
        Watch {
            since: Instant::now(),
            first_start: sb.and_then(|s| s.started_at.clone()),
            ran: sb.is_some_and(|s| s.is_running()),
        }
    };
    let (mut pos, mut buf, mut done) = (0u64, vec![0u8; 32 * 1024], false);
    loop {
        // A restart truncates the log: read it again from the start.
        let len = log.seek(SeekFrom::End(0)).await.unwrap_or(0);
        if len < pos {
            pos = 0;
        }
        let _ = log.seek(SeekFrom::Start(pos)).await;
        let n = log.read(&mut buf).await.unwrap_or(0);
        if n > 0 {
            pos += n as u64;
            if out.write_all(&frame(&buf[..n])).await.is_err() {
                return;
            }
            continue;
        }
        if done {
            break;
        }
        done = watch.finished(&d, &id).await;
        if !done {
            let _ = tokio::time::timeout(Duration::from_millis(50), exits.recv()).await;
        }
    }
    let _ = out.shutdown().await;
}

pub async fn attach<K: KernelOps>(
    State(d): State<Arc<Daemon<K>>>,
    Path(id): Path<String>,
    mut req: Request,
) -> ApiResult {
    let id = d.state.lock().await.sandbox_id(&id)?;
    let dir = d.cfg.sandbox_dir(&id);
    let open = || {
        std::fs::create_dir_all(&dir)?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("log"))
    };
    let log = open().map_err(|e| Error::Other(format!("open the log of {id}: {e}")))?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => stream_log(d, id, tokio::fs::File::from_std(log), TokioIo::new(io)).await,
            Err(e) => tracing::warn!("attach to {id}: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONTENT_TYPE, "application/vnd.docker.raw-stream")
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Body::empty())
        .map_err(|e| ApiError(Error::Other(format!("attach response: {e}"))))
}
