//! A real etcd (Debian's etcd-server) for the tests of ferry's etcd store and overlay: one
//! member listening on loopback or, for multi-host scenarios, on an address inside a
//! network namespace the test made. Its data lives in a temporary directory; the process
//! is killed by PID when the handle is dropped.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where Debian's etcd-server puts the binary.
pub const ETCD: &str = "etcd";

pub struct Etcd {
    child: Child,
    launch: Launch,
    _dir: tempfile::TempDir,
    /// `IP:PORT` clients use.
    pub endpoint: String,
}

/// Whether the etcd binary can run here. Without it a test skips, unless `CI` is set: the
/// setup installs etcd-server, so then its absence is a failure.
pub fn etcd_or_skip(test: &str) -> bool {
    let found = Command::new(ETCD)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: etcd is not installed (scripts/setup installs etcd-server) and CI is set");
    }
    eprintln!("SKIP {test}: etcd is not installed (scripts/setup installs etcd-server)");
    false
}

/// How etcd is started, kept for a restart.
struct Launch {
    name: String,
    /// `--initial-cluster`: every member's name=peer URL.
    initial_cluster: String,
    ip: String,
    client: u16,
    peer: u16,
    netns: Option<std::path::PathBuf>,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Launch {
    fn spawn(&self) -> Result<Child> {
        let curl = format!("http://{}:{}", self.ip, self.client);
        let purl = format!("http://{}:{}", self.ip, self.peer);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("--").arg(ETCD);
                c
            }
            None => Command::new(ETCD),
        };
        cmd.args(["--name", &self.name, "--data-dir"])
            .arg(&self.data)
            .args([
                "--listen-client-urls",
                &curl,
                "--advertise-client-urls",
                &curl,
            ])
            .args([
                "--listen-peer-urls",
                &purl,
                "--initial-advertise-peer-urls",
                &purl,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--logger", "zap", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .context("open etcd's log")?,
            );
        cmd.spawn().with_context(|| format!("start {ETCD}"))
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

impl Etcd {
    /// One member on 127.0.0.1, on ports nobody holds.
    pub fn start_local() -> Result<Etcd> {
        let (client, peer) = (free_port()?, free_port()?);
        Etcd::start("127.0.0.1", client, peer, None)
    }

    /// One member on `ip`, inside the network namespace at `netns` when given.
    pub fn start(ip: &str, client: u16, peer: u16, netns: Option<&Path>) -> Result<Etcd> {
        let mut etcd = Etcd::spawn_member(
            "ferrytest",
            &format!("ferrytest=http://{ip}:{peer}"),
            ip,
            client,
            peer,
            netns,
        )?;
        etcd.wait_listening()?;
        Ok(etcd)
    }

    /// A cluster of one member per address (client port 2379, peer port 2380), all in
    /// the network namespace `netns`; returns once every member serves.
    pub fn start_cluster(ips: &[&str], netns: &Path) -> Result<Vec<Etcd>> {
        let initial = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| format!("m{i}=http://{ip}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            members.push(Etcd::spawn_member(
                &format!("m{i}"),
                &initial,
                ip,
                2379,
                2380,
                Some(netns),
            )?);
        }
        for m in &mut members {
            m.wait_listening()?;
        }
        Ok(members)
    }

    fn spawn_member(
        name: &str,
        initial_cluster: &str,
        ip: &str,
        client: u16,
        peer: u16,
        netns: Option<&Path>,
    ) -> Result<Etcd> {
        let dir = tempfile::Builder::new().prefix("ferry-etcd").tempdir()?;
        let launch = Launch {
            name: name.to_string(),
            initial_cluster: initial_cluster.to_string(),
            ip: ip.to_string(),
            client,
            peer,
            netns: netns.map(Path::to_path_buf),
            data: dir.path().join("data"),
            log: dir.path().join("etcd.log"),
        };
        let child = launch.spawn()?;
        Ok(Etcd {
            child,
            launch,
            _dir: dir,
            endpoint: format!("{ip}:{client}"),
        })
    }

    /// Start it again on its data (after [`Etcd::kill`]): the end of an outage.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let _ = std::fs::write(&self.launch.log, "");
        self.child = self.launch.spawn()?;
        self.wait_listening()
    }

    /// Wait (at most 10 s) until the client port accepts connections; from inside a
    /// namespace the port cannot be dialled from here, so wait for the process's log to
    /// say it serves instead.
    fn wait_listening(&mut self) -> Result<()> {
        let in_netns = self.launch.netns.is_some();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("etcd exited at start ({status}): {}", self.log());
            }
            let ready = if in_netns {
                self.log().contains("\"msg\":\"serving client traffic")
            } else {
                let addr = self.endpoint.parse().context("etcd endpoint")?;
                TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
            };
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "etcd did not listen on {} within 10 s: {}",
            self.endpoint,
            self.log()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.launch.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop etcd (SIGKILL) and wait for it: an outage, for the tests that need one.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
