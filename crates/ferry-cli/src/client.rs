//! A minimal HTTP/1.1 client of ferryd's unix socket, on hyper's connection API.

use std::os::fd::OwnedFd;
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
            let stream = self.connect().await?;
            let cred = stream.peer_cred().context("read ferryd's credentials")?;
            Ok(cred.pid().and_then(|p| u32::try_from(p).ok()))
        })
    }

    async fn connect(&self) -> anyhow::Result<tokio::net::UnixStream> {
        tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| {
                format!(
                    "Cannot connect to ferryd at {}. Is ferryd running?",
                    self.host
                )
            })
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Reply> {
        self.rt.block_on(self.call_async(method, path, body))
    }

    /// `POST path` with a typed request body (ferry-core's request types).
    pub fn post<B: serde::Serialize>(&self, path: &str, body: &B) -> anyhow::Result<Reply> {
        self.call("POST", path, Some(&serde_json::to_value(body)?))
    }

    async fn call_async(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let stream = self.connect().await?;
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

impl Client {
    /// A running sandbox's network namespace and, unless it shares the host's network,
    /// its hosts and resolv.conf files, as descriptors ferryd passes over the socket
    /// (`POST /ferry/containers/{id}/enter`): for when ferryd's pins and files are not
    /// visible from this mount namespace.
    pub fn enter(&self, id: &str) -> anyhow::Result<Vec<OwnedFd>> {
        self.rt.block_on(self.enter_async(id))
    }

    async fn enter_async(&self, id: &str) -> anyhow::Result<Vec<OwnedFd>> {
        let stream = self.connect().await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn.with_upgrades());
        let req = Request::builder()
            .method("POST")
            .uri(format!("/v1.41/ferry/containers/{}/enter", enc(id)))
            .header("Host", "ferry")
            .header("Connection", "Upgrade")
            .header("Upgrade", "ferry-fds")
            .body(Full::new(Bytes::new()))?;
        let resp = sender
            .send_request(req)
            .await
            .context("request to ferryd")?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(anyhow!(Reply { status, body }.message()));
        }
        let io = hyper::upgrade::on(resp).await.context("ferryd's upgrade")?;
        let parts = io
            .downcast::<TokioIo<tokio::net::UnixStream>>()
            .map_err(|_| anyhow!("the upgraded connection is not the unix socket"))?;
        let mut stream = parts.io.into_inner();
        // Ready: from here on only recvmsg reads this socket.
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"R").await?;
        stream.readable().await?;
        let fds = stream.try_io(tokio::io::Interest::READABLE, || receive(&stream))?;
        if fds.is_empty() {
            return Err(anyhow!(
                "ferryd passed no descriptors (is -H a unix socket?)"
            ));
        }
        Ok(fds)
    }
}

/// One byte and the descriptors riding on it.
fn receive(stream: &tokio::net::UnixStream) -> std::io::Result<Vec<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 3]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = vec![];
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: each descriptor was just received with this message and is ours.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(fds)
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
