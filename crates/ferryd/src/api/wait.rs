//! `POST /containers/{id}/wait?condition=`: the headers go out at once and the body
//! (`{"StatusCode": …}`) when the condition holds, as dockerd does; docker run sends
//! this before it starts the container and waits for the headers first.
//!
//! Conditions: `not-running` (the default: now, unless it runs), `next-exit` (the
//! next exit from now on, even of a sandbox not yet started), `removed`. Exits come
//! from the daemon's exit channel, so an auto-removed sandbox's code is not lost; a
//! poll of the state, four times a second, backs it up and sees removals.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use ferry_core::model::RunState;
use ferry_core::CoreError;
use ferry_kernel::KernelOps;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::mark::Mark;
use super::{ApiError, ApiResult, Q};
use crate::ops::Daemon;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    NotRunning,
    NextExit,
    Removed,
}

fn condition(q: &Q) -> Result<Condition, ApiError> {
    match q.get("condition").map(String::as_str).unwrap_or("") {
        "" | "not-running" => Ok(Condition::NotRunning),
        "next-exit" => Ok(Condition::NextExit),
        "removed" => Ok(Condition::Removed),
        other => Err(ApiError(
            CoreError::Invalid(format!("invalid condition: \"{other}\"")).into(),
        )),
    }
}

/// What the state says now: the exit code if the condition already holds. `last`
/// is the last exit code seen, the answer once the sandbox is gone.
fn settled(state: Option<&RunState>, cond: Condition, started: bool, last: i32) -> Option<i32> {
    match (cond, state) {
        (_, None) => Some(last),
        (Condition::NotRunning, Some(RunState::Created)) => Some(0),
        (Condition::NotRunning, Some(RunState::Exited { code })) => Some(*code),
        (Condition::NextExit, Some(RunState::Exited { code })) if started => Some(*code),
        _ => None,
    }
}

async fn wait_for<K: KernelOps>(d: &Daemon<K>, id: &str, cond: Condition, mut from: Mark) -> i32 {
    let mut last = 0;
    loop {
        {
            let st = d.state.lock().await;
            let sb = st.sandboxes.get(id);
            // A new start since the wait began means the exit seen now is the next one.
            let started = sb.is_some_and(|s| from.started_since(s));
            if let Some(RunState::Exited { code }) = sb.map(|s| &s.state) {
                last = *code;
            }
            if let Some(code) = settled(sb.map(|s| &s.state), cond, started, last) {
                return code;
            }
        }
        match tokio::time::timeout(Duration::from_millis(250), from.exits.recv()).await {
            Ok(Ok((exited, code))) if exited == id && cond != Condition::Removed => return code,
            Ok(Ok((exited, code))) if exited == id => last = code,
            Ok(Err(RecvError::Closed)) => return last,
            _ => {}
        }
    }
}

pub async fn wait<K: KernelOps>(
    State(d): State<Arc<Daemon<K>>>,
    Path(id): Path<String>,
    q: Q,
) -> ApiResult {
    let cond = condition(&q)?;
    let id = d.state.lock().await.sandbox_id(&id)?;
    let from = Mark::take(&d, &id).await;
    let body = futures::stream::once(async move {
        let code = wait_for(&d, &id, cond, from).await;
        let v = json!({"StatusCode": code, "Error": null});
        Ok::<_, Infallible>(Bytes::from(format!("{v}\n")))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .map_err(|e| ApiError(crate::error::Error::Other(format!("wait response: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_daemon::{ran_and_exited, with_sandbox};

    /// `docker run` waits for the next exit, then starts the sandbox once the wait's
    /// headers are out; the body may be polled only after the run is over. The wait still
    /// answers with that run's code, where one that looked at the sandbox only then took
    /// the run for the one before it and waited for ever.
    #[tokio::test]
    async fn a_run_over_before_the_wait_is_polled_is_its_next_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (d, id) = with_sandbox(&dir, "w", &["true"]).await;
        let from = Mark::take(&d, &id).await;
        ran_and_exited(&d, &id, 7).await;
        let wait = wait_for(&d, &id, Condition::NextExit, from);
        let code = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the wait answers");
        assert_eq!(code, 7);
    }

    #[test]
    fn conditions_hold_as_dockerds_do() {
        let run = RunState::Running {
            pid: 1,
            start_time: 1,
        };
        let exited = RunState::Exited { code: 3 };
        let nr = Condition::NotRunning;
        assert_eq!(settled(Some(&RunState::Created), nr, false, 0), Some(0));
        assert_eq!(settled(Some(&run), nr, false, 0), None);
        assert_eq!(settled(Some(&exited), nr, false, 3), Some(3));
        // next-exit: an exit from before the wait does not count.
        assert_eq!(settled(Some(&exited), Condition::NextExit, false, 3), None);
        assert_eq!(
            settled(Some(&exited), Condition::NextExit, true, 3),
            Some(3)
        );
        assert_eq!(settled(Some(&exited), Condition::Removed, true, 3), None);
        assert_eq!(settled(None, Condition::Removed, true, 3), Some(3));
    }
}
