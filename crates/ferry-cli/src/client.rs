//! A minimal HTTP/1.1 client of ferryd's unix socket, on hyper's connection API.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub struct Client {
    socket: PathBuf,
    host: String,
    rt: tokio::runtime::Runtime,
}

/// An answer from ferryd.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "ferryd sent invalid JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// Docker's error message (`{"message": …}`) or the raw body.
    pub fn message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Client {
    pub fn new(host: &str) -> anyhow::Result<Self> {
        let socket = host
            .strip_prefix("unix://")
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("-H {host}: only unix:///PATH is supported"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Client {
            socket,
            host: host.to_string(),
            rt,
        })
    }

    /// The pid of the process serving the socket (ferryd), from the socket's peer
    /// credentials; None if the kernel does not say.
    pub fn server_pid(&self) -> anyhow::Result<Option<u32>> {
        self.rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .with_context(|| {
                    format!(
                        "Cannot connect to ferryd at {}. Is ferryd running?",
                        self.host
                    )
                })?;
            let cred = stream.peer_cred().context("read ferryd's credentials")?;
            Ok(cred.pid().and_then(|p| u32::try_from(p).ok()))
        })
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Reply> {
        self.rt.block_on(self.call_async(method, path, body))
    }

    async fn call_async(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| {
                format!(
                    "Cannot connect to ferryd at {}. Is ferryd running?",
                    self.host
                )
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let bytes = body
            .map(|b| serde_json::to_vec(b).expect("serializable"))
            .unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("/v1.41{path}"))
            .header("Host", "ferry");
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(bytes)))?;
        let resp = sender
            .send_request(req)
            .await
            .context("request to ferryd")?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `DELETE` each of `names` (at `path(name)`), printing each removed name, and carrying
/// on past failures as docker does; exit code 1 if any failed.
pub fn delete_each(
    c: &Client,
    names: &[String],
    path: impl Fn(&str) -> String,
) -> anyhow::Result<i32> {
    let mut code = 0;
    for n in names {
        let r = c.call("DELETE", &path(n), None)?;
        if r.ok() {
            println!("{n}");
        } else {
            eprintln!("{}", crate::DaemonError(r.message()));
            code = 1;
        }
    }
    Ok(code)
}
