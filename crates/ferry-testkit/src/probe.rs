//! Sandboxes and traffic: a busybox httpd serving a page unique to the scenario, clients that
//! fetch it over busybox nc (bounded by `busybox timeout` inside the sandbox, by the CLI
//! deadline outside), and inspect helpers.

use crate::bins::BUSYBOX;
use crate::cmd::Output;
use crate::host::TestHost;
use crate::kernel::{parse_addresses, parse_links};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long a client keeps retrying a fetch (the server may still be starting).
const FETCH_WITHIN: Duration = Duration::from_secs(15);

/// A sandbox running `busybox httpd` on port 80, serving `content` as /index.html.
#[derive(Debug, Clone)]
pub struct Web {
    pub name: String,
    pub content: String,
}

/// True for Docker's 64-hex-digit IDs.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl TestHost {
    /// `ferry network create ARGS… NAME`; checks it printed a 64-hex ID and returns it.
    pub fn create_network(&self, name: &str, args: &[&str]) -> Result<String> {
        let mut a = vec!["network", "create"];
        a.extend(args);
        a.push(name);
        let id = self.ferry_ok(&a)?;
        ensure!(
            is_full_id(&id),
            "`ferry network create {name}` printed {id:?}, not a 64-hex ID"
        );
        Ok(id)
    }

    /// `ferry run -d --name NAME RUN_ARGS… -- busybox httpd -f -p 80 -h DIR`, DIR holding an
    /// index.html unique to this call.
    pub fn run_web(&self, name: &str, run_args: &[&str]) -> Result<Web> {
        let content = format!("served by {name} {}", crate::unique("page"));
        let dir = self.www.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::write(dir.join("index.html"), format!("{content}\n"))
            .context("write index.html")?;
        let dir = dir.to_str().context("non-UTF-8 temporary path")?;
        self.run_detached(
            name,
            run_args,
            &[BUSYBOX, "httpd", "-f", "-p", "80", "-h", dir],
        )?;
        Ok(Web {
            name: name.to_string(),
            content,
        })
    }

    /// `ferry run -d --name NAME RUN_ARGS… -- busybox sleep 3600`; returns the ID.
    pub fn run_idle(&self, name: &str, run_args: &[&str]) -> Result<String> {
        self.run_detached(name, run_args, &[BUSYBOX, "sleep", "3600"])
    }

    /// `ferry run -d --name NAME RUN_ARGS… -- CMD…`; checks it printed a 64-hex ID.
    pub fn run_detached(&self, name: &str, run_args: &[&str], cmd: &[&str]) -> Result<String> {
        let mut a = vec!["run", "-d", "--name", name];
        a.extend(run_args);
        a.push("--");
        a.extend(cmd);
        let id = self.ferry_ok(&a)?;
        ensure!(
            is_full_id(&id),
            "`ferry run -d --name {name}` printed {id:?}, not a 64-hex ID"
        );
        Ok(id)
    }

    /// `ferry exec NAME -- CMD…` (bounded); any exit status is Ok.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Result<Output> {
        let mut a = vec!["exec", name, "--"];
        a.extend(cmd);
        self.ferry(&a)
    }

    /// One attempt: from sandbox `from`, `GET http://IP[:port]/index.html` (3 s network
    /// timeout, killed after 8 s inside the sandbox); prints the body, fails unless 200.
    /// A hand-made HTTP/1.0 request over `busybox nc`, because Debian's static busybox
    /// `wget` crashes (SIGSEGV) before it sends anything.
    pub fn fetch(&self, from: &str, addr: &str) -> Result<Output> {
        let (ip, port) = addr.split_once(':').unwrap_or((addr, "80"));
        let script = format!(
            "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | {BUSYBOX} nc -w 3 {ip} {port} | \\
             {{ IFS= read -r status || exit 1; case \"$status\" in *' 200 '*) {BUSYBOX} sed '1,/^[[:space:]]*$/d';; *) exit 1;; esac; }}"
        );
        self.exec(
            from,
            &[BUSYBOX, "timeout", "8", BUSYBOX, "sh", "-c", &script],
        )
    }

    /// From sandbox `from`, fetch `web`'s page at `addr` and get exactly its content — a TCP
    /// request and its reply. Retries for up to 15 s while the server starts.
    pub fn expect_fetch(&self, from: &str, addr: &str, web: &Web) -> Result<()> {
        let deadline = Instant::now() + FETCH_WITHIN;
        loop {
            let out = self.fetch(from, addr)?;
            if out.success() && out.out() == web.content {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{from} did not get {}'s page from http://{addr}/ within {FETCH_WITHIN:?} (expected {:?}); last attempt:\n{out}\n{}",
                    web.name,
                    web.content,
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `ferry inspect NAME` parsed (the first element when it prints an array).
    pub fn inspect(&self, name: &str) -> Result<Value> {
        first(&self.ferry_ok(&["inspect", name])?).with_context(|| format!("ferry inspect {name}"))
    }

    /// `ferry network inspect NAME` parsed (the first element of the array).
    pub fn network_inspect(&self, name: &str) -> Result<Value> {
        first(&self.ferry_ok(&["network", "inspect", name])?)
            .with_context(|| format!("ferry network inspect {name}"))
    }

    /// `.NetworkSettings.Networks.<network>.IPAddress` of a sandbox.
    pub fn ip_of(&self, sandbox: &str, network: &str) -> Result<String> {
        let v = self.inspect(sandbox)?;
        let ip = v["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or("");
        ensure!(
            !ip.is_empty(),
            "ferry inspect {sandbox}: no IPAddress on network {network}; NetworkSettings.Networks = {}",
            v["NetworkSettings"]["Networks"]
        );
        Ok(ip.to_string())
    }

    /// Network names a sandbox's inspect lists under `.NetworkSettings.Networks`.
    pub fn networks_of(&self, sandbox: &str) -> Result<Vec<String>> {
        let v = self.inspect(sandbox)?;
        Ok(v["NetworkSettings"]["Networks"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// Interface names inside a sandbox (`busybox ip -o link show` run by `ferry exec`).
    pub fn sandbox_links(&self, name: &str) -> Result<Vec<String>> {
        let out = self
            .exec(name, &[BUSYBOX, "ip", "-o", "link", "show"])?
            .expect_success()?;
        Ok(parse_links(&out.stdout))
    }

    /// IPv4 (interface, address/prefix) pairs inside a sandbox.
    pub fn sandbox_ipv4(&self, name: &str) -> Result<Vec<(String, String)>> {
        let out = self
            .exec(name, &[BUSYBOX, "ip", "-4", "-o", "addr", "show"])?
            .expect_success()?;
        Ok(parse_addresses(&out.stdout))
    }

    /// IDs from `ferry ps -aq`.
    pub fn sandbox_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .ferry_ok(&["ps", "-aq"])?
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }
}

fn first(json: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(json).with_context(|| format!("not JSON: {json:?}"))?;
    match v {
        Value::Array(mut items) if !items.is_empty() => Ok(items.swap_remove(0)),
        Value::Array(_) => bail!("an empty JSON array"),
        other => Ok(other),
    }
}
