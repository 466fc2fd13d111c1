//! plughost against plugins served in-process: activation, caching, forgetting a
//! plugin that went away, timeouts, dockerd's backoff. No root needed.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plugin on a unix socket answering every call from `answer` (method → JSON), and
/// counting the calls; it stops when the returned handle is aborted.
fn serve(
    path: &std::path::Path,
    answer: fn(&str) -> &'static str,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let calls: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = calls.clone();
    let task = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let method = head
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let body = answer(&method);
            seen.lock().unwrap().push(method);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(reply.as_bytes()).await.unwrap();
        }
    });
    (task, calls)
}

fn conf(dir: &std::path::Path) -> Conf {
    Conf {
        dirs: Dirs {
            sockets: Some(dir.to_path_buf()),
            ..Default::default()
        },
        call_timeout: Duration::from_secs(2),
        retry_budget: Duration::ZERO,
        records: dir.join("records"),
    }
}

fn driver(method: &str) -> &'static str {
    match method {
        "Plugin.Activate" => r#"{"Implements": ["NetworkDriver"]}"#,
        "NetworkDriver.GetCapabilities" => r#"{"Scope": "local"}"#,
        _ => "{}",
    }
}

#[tokio::test]
async fn a_plugin_is_activated_once_and_again_after_it_stopped_answering() {
    let t = tempfile::tempdir().unwrap();
    let conf = conf(t.path());
    let host = PlugHost::default();
    let e = host.get(&conf, "p", "NetworkDriver").await.unwrap_err();
    assert!(matches!(e, PluginError::NotFound(_)), "{e}");
    assert_eq!(e.status(), 404);

    let sock = t.path().join("p.sock");
    let (task, calls) = serve(&sock, driver);
    let p = host.get(&conf, "p", "NetworkDriver").await.unwrap();
    host.call(
        &conf,
        &p,
        "NetworkDriver.CreateNetwork",
        Some(&serde_json::json!({})),
    )
    .await
    .unwrap();
    let p = host.get(&conf, "p", "NetworkDriver").await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "Plugin.Activate",
            "NetworkDriver.GetCapabilities",
            "NetworkDriver.CreateNetwork"
        ],
        "activated once, then cached"
    );
    let e = host.get(&conf, "p", "IpamDriver").await.unwrap_err();
    assert!(matches!(e, PluginError::WrongRole { .. }), "{e}");

    // The plugin goes away: the call names it and the call, and it is forgotten.
    task.abort();
    let _ = task.await;
    std::fs::remove_file(&sock).unwrap();
    let e = host
        .call(&conf, &p, "NetworkDriver.Join", None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("\"p\"") && e.to_string().contains("NetworkDriver.Join"),
        "{e}"
    );
    // Back on the same socket: activated again on next use.
    let (_task, calls) = serve(&sock, driver);
    host.get(&conf, "p", "NetworkDriver").await.unwrap();
    assert_eq!(calls.lock().unwrap()[0], "Plugin.Activate");
}

#[tokio::test]
async fn a_plugin_that_does_not_answer_costs_one_call_timeout() {
    let t = tempfile::tempdir().unwrap();
    let conf = Conf {
        call_timeout: Duration::from_millis(300),
        ..conf(t.path())
    };
    // Accepts and never answers.
    let listener = tokio::net::UnixListener::bind(t.path().join("mute.sock")).unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = vec![];
        loop {
            held.push(listener.accept().await.unwrap());
        }
    });
    let started = Instant::now();
    let e = PlugHost::default()
        .get(&conf, "mute", "NetworkDriver")
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::TimedOut { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn backoff_is_dockerds() {
    let waits: Vec<u64> = (0..6).map(|r| backoff(r).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32]);
}
