//! One libnetwork plugin call: `POST /<Role>.<Method>` with a JSON body, over a unix
//! socket or TCP, as dockerd's plugin client sends it (HTTP/1.1, the v1.2 `Accept`
//! header, an empty body for calls without arguments). A new connection per call:
//! plugins are local, calls are few (a handful per sandbox start), and a plugin that
//! restarted is reached again without stale keep-alive state.
//!
//! Every call is bounded by the caller's timeout, connect included: a plugin that
//! hangs costs one timeout, never a hung request.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::tls::{server_name, TlsFiles};
use super::PluginError;

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Unix(PathBuf),
    /// HOST:PORT.
    Tcp(String),
    /// HOST:PORT, spoken to over TLS (a `.json` spec with a `TLSConfig`).
    TcpTls(String, TlsFiles),
}

impl Addr {
    /// `unix:///path` or `tcp://host:port` (a `.spec` file's content, a `.json`'s Addr).
    pub fn parse(url: &str) -> Option<Addr> {
        let url = url.trim();
        if let Some(p) = url.strip_prefix("unix://") {
            return (!p.is_empty()).then(|| Addr::Unix(PathBuf::from(p)));
        }
        let hp = url
            .strip_prefix("tcp://")
            .or_else(|| url.strip_prefix("http://"))?;
        let hp = hp.trim_end_matches('/');
        hp.rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            .map(|_| Addr::Tcp(hp.to_string()))
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix://{}", p.display()),
            Addr::Tcp(hp) => write!(f, "tcp://{hp}"),
            Addr::TcpTls(hp, _) => write!(f, "tcp://{hp} (TLS)"),
        }
    }
}

/// What came back: the HTTP status and the body.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// Why a call got no reply at all.
#[derive(Debug)]
pub enum Failure {
    /// Nothing listens there (or the socket file is missing): worth retrying.
    Unreachable(std::io::Error),
    /// Connected, then the exchange broke (the plugin crashed mid-call, spoke no HTTP).
    Broken(String),
    TimedOut,
}

/// `POST /<method>` with `body` (`None`: an empty body), within `timeout`.
pub async fn post(
    addr: &Addr,
    method: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Reply, Failure> {
    let bytes = match body {
        Some(v) => {
            let mut b = serde_json::to_vec(v).expect("JSON values serialise");
            b.push(b'\n');
            Bytes::from(b)
        }
        None => Bytes::new(),
    };
    let path = format!("/{method}");
    let exchange = async {
        match addr {
            Addr::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(Failure::Unreachable)?;
                exchange(s, "", &path, bytes).await
            }
            Addr::Tcp(hp) => exchange(tcp(hp).await?, hp, &path, bytes).await,
            Addr::TcpTls(hp, tls) => {
                let broken = |why: String| Failure::Broken(format!("TLS: {why}"));
                let connector = tls.connector().map_err(broken)?;
                let name = server_name(hp).map_err(broken)?;
                let s = connector
                    .connect(name, tcp(hp).await?)
                    .await
                    .map_err(|e| broken(e.to_string()))?;
                exchange(s, hp, &path, bytes).await
            }
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(Failure::TimedOut))
}

async fn tcp(host_port: &str) -> Result<tokio::net::TcpStream, Failure> {
    let s = tokio::net::TcpStream::connect(host_port)
        .await
        .map_err(Failure::Unreachable)?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

async fn exchange<S>(stream: S, host: &str, path: &str, body: Bytes) -> Result<Reply, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let broken = |e: hyper::Error| Failure::Broken(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(broken)?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "ferryd")
        .header(
            hyper::header::ACCEPT,
            "application/vnd.docker.plugins.v1.2+json",
        )
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .expect("a valid request");
    let res = async {
        let resp = sender.send_request(req).await.map_err(broken)?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(broken)?.to_bytes();
        Ok(Reply { status, body })
    }
    .await;
    conn.abort();
    res
}

/// Read a reply as dockerd does (docker-protocols.md A3): HTTP 200 with JSON is the
/// answer unless it carries an error under `err_key` (`Err` for network drivers,
/// `Error` for IPAM); any other status is an error whose text is the body's `Err`, or
/// the body itself.
pub fn decode(
    plugin: &str,
    method: &str,
    reply: Reply,
    err_key: &str,
) -> Result<Value, PluginError> {
    let text = String::from_utf8_lossy(&reply.body).trim().to_string();
    let parsed: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let refused = |msg: String| PluginError::Refused {
        plugin: plugin.into(),
        call: method.into(),
        msg,
    };
    if reply.status == 404 {
        return Err(PluginError::NotImplemented {
            plugin: plugin.into(),
            call: method.into(),
        });
    }
    if reply.status != 200 {
        let msg = parsed
            .as_ref()
            .and_then(|v| v.get("Err"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(text);
        return Err(refused(format!("HTTP {}: {msg}", reply.status)));
    }
    let Some(v) = parsed else {
        // An empty 200 is an empty answer; anything else that is not JSON is garbage.
        if text.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        return Err(PluginError::Garbage {
            plugin: plugin.into(),
            call: method.into(),
            why: format!("not JSON: {:.120}", text),
        });
    };
    match v.get(err_key).and_then(Value::as_str) {
        Some(msg) if !msg.is_empty() => Err(refused(msg.to_string())),
        _ => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn addresses_parse_as_dockerd_reads_spec_files() {
        assert_eq!(
            Addr::parse("unix:///run/x.sock\n"),
            Some(Addr::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            Addr::parse("tcp://127.0.0.1:8010"),
            Some(Addr::Tcp("127.0.0.1:8010".into()))
        );
        assert_eq!(Addr::parse("tcp://127.0.0.1"), None);
        assert_eq!(Addr::parse("ftp://x:1"), None);
        assert_eq!(Addr::parse("unix://"), None);
    }

    #[test]
    fn replies_are_read_with_the_error_key_of_the_role() {
        let ok = decode(
            "p",
            "NetworkDriver.Join",
            reply(200, r#"{"Gateway":"1.2.3.4"}"#),
            "Err",
        );
        assert_eq!(ok.unwrap()["Gateway"], "1.2.3.4");
        let e = decode(
            "p",
            "NetworkDriver.Join",
            reply(200, r#"{"Err":"no br1"}"#),
            "Err",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no br1") && e.contains("NetworkDriver.Join") && e.contains("\"p\""),
            "{e}"
        );
        // IPAM's success-with-error key is Error; its Err on a 200 is not an error.
        let e = decode(
            "p",
            "IpamDriver.RequestPool",
            reply(200, r#"{"Error":"full"}"#),
            "Error",
        );
        assert!(e.unwrap_err().to_string().contains("full"));
        let e = decode("p", "X.Y", reply(500, "boom"), "Err")
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP 500: boom"), "{e}");
        let e = decode("p", "X.Y", reply(200, "<html>"), "Err")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not JSON"), "{e}");
        assert!(matches!(
            decode("p", "X.Y", reply(404, "404 page not found"), "Err"),
            Err(PluginError::NotImplemented { .. })
        ));
        assert!(decode("p", "X.Y", reply(200, ""), "Err")
            .unwrap()
            .is_object());
    }
}
