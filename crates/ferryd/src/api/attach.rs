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
//!
//! Every run appends to the log, so the stream begins where the log ended when the
//! attach came: `docker start -a` shows what this run writes, not what earlier runs
//! left (as dockerd's attach without `logs`). A log truncated at each start instead
//! races the attach: one that reads before the start streams the last run's output,
//! then this run's.

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

use super::mark::Mark;
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

/// What the attach knows of the process it streams, from the mark on.
struct Watch {
    since: Instant,
    mark: Mark,
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
                _ => self.ran || self.mark.started_since(sb) || self.since.elapsed() > START_WITHIN,
            },
        }
    }
}

/// Where a stream begins ([`Mark`]), and where the log ended then: a run's output from
/// the mark on is streamed, none of it skipped.
async fn begin<K: KernelOps>(d: &Daemon<K>, id: &str, log: &std::fs::File) -> (Watch, u64) {
    let mark = Mark::take(d, id).await;
    let watch = Watch {
        since: Instant::now(),
        ran: mark.running,
        mark,
    };
    (watch, log.metadata().map(|m| m.len()).unwrap_or(0))
}

async fn stream_log<K: KernelOps, R, W>(
    d: Arc<Daemon<K>>,
    id: String,
    (mut watch, mut pos): (Watch, u64),
    mut log: R,
    mut out: W,
) where
    R: AsyncRead + AsyncSeekExt + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut buf, mut done) = (vec![0u8; 32 * 1024], false);
    loop {
        // Emptied behind ferryd's back: read it again from the start.
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
            let _ = tokio::time::timeout(Duration::from_millis(50), watch.mark.exits.recv()).await;
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
    let from = begin(&d, &id, &log).await;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                let log = tokio::fs::File::from_std(log);
                stream_log(d, id, from, log, TokioIo::new(io)).await
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_daemon::{ran_and_exited, with_sandbox};
    use ferry_kernel::fake::Recorder;
    use std::io::Write;

    /// A daemon on the fake with one created sandbox whose log holds an earlier run's
    /// output; the sandbox's id and its log, open for appending.
    async fn ran_before() -> (
        tempfile::TempDir,
        Arc<Daemon<Recorder>>,
        String,
        std::fs::File,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (d, id) = with_sandbox(&dir, "att", &["echo", "kept"]).await;
        let path = d.cfg.sandbox_dir(&id).join("log");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("log");
        log.write_all(b"the run before\n").expect("write");
        (dir, d, id, log)
    }

    /// The next run: its output, then the sandbox started and gone.
    async fn run_once(d: &Daemon<Recorder>, id: &str, log: &mut std::fs::File) {
        log.write_all(b"this run\n").expect("write");
        ran_and_exited(d, id, 0).await;
    }

    /// What an attach taken with `from` streams, within a bound (an attach that missed
    /// its run would wait for it for a minute).
    async fn streamed(d: &Arc<Daemon<Recorder>>, id: &str, from: (Watch, u64)) -> Vec<u8> {
        let path = d.cfg.sandbox_dir(id).join("log");
        let reader = tokio::fs::File::open(&path).await.expect("open");
        let (out, mut client) = tokio::io::duplex(64 * 1024);
        let stream = stream_log(d.clone(), id.to_string(), from, reader, out);
        tokio::time::timeout(Duration::from_secs(5), stream)
            .await
            .expect("the stream ends with the run");
        let mut got = vec![];
        client.read_to_end(&mut got).await.expect("read");
        got
    }

    /// An attach to a sandbox that ran before (`docker start -a`) streams what the next
    /// run writes and nothing of what the earlier run left in the log, however long the
    /// start comes after the attach.
    #[tokio::test]
    async fn an_attach_streams_only_what_the_run_after_it_writes() {
        let (_dir, d, id, mut log) = ran_before().await;
        let from = begin(&d, &id, &log).await;
        let stream = tokio::spawn({
            let (d, id) = (d.clone(), id.clone());
            async move { streamed(&d, &id, from).await }
        });
        // The attach has read all it could; now the run.
        tokio::time::sleep(Duration::from_millis(150)).await;
        run_once(&d, &id, &mut log).await;
        let got = stream.await.expect("stream");
        assert_eq!(
            got,
            frame(b"this run\n"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }

    /// The CLI starts the sandbox once the attach is answered; the stream's task may come
    /// later than the whole run. It still streams that run, and ends with it.
    #[tokio::test]
    async fn a_run_over_before_the_stream_begins_is_still_streamed() {
        let (_dir, d, id, mut log) = ran_before().await;
        let from = begin(&d, &id, &log).await;
        run_once(&d, &id, &mut log).await;
        let got = streamed(&d, &id, from).await;
        assert_eq!(
            got,
            frame(b"this run\n"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
}
