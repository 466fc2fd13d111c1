//! `ferry run|ps|inspect|exec|rm`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;
use ferry_core::docker::container::{ContainerCreateRequest, HostConfigReq, NetworkingConfigReq};
use ferry_core::docker::network::{EndpointIpamConfig, EndpointSettingsReq};
use ferry_kernel::process::{SandboxExec, SandboxFiles};
use serde_json::{json, Value};

use crate::client::{enc, Client};
use crate::output::{print_inspect, print_list};
use crate::rows::{sandbox_header, sandbox_row, SANDBOX_TABLE};
use crate::DaemonError;

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Run in the background; ferryd supervises the process.
    #[arg(short, long)]
    detach: bool,
    /// Remove the sandbox when its process exits.
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    #[arg(long = "network", alias = "net", default_value = "default")]
    network: String,
    #[arg(long)]
    ip: Option<String>,
    #[arg(long = "alias", alias = "network-alias")]
    aliases: Vec<String>,
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    #[arg(long)]
    dns: Vec<String>,
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    #[arg(long = "dns-option")]
    dns_option: Vec<String>,
    /// Set metadata on the sandbox (KEY=VALUE or KEY).
    #[arg(short = 'l', long = "label")]
    labels: Vec<String>,
    #[command(flatten)]
    publish: crate::port::PublishArgs,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Args)]
pub struct PsArgs {
    #[arg(short, long)]
    all: bool,
    #[arg(short, long)]
    quiet: bool,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Filter output based on conditions provided (name, id, network, status, label, …).
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Show the n last created sandboxes (all states).
    #[arg(short = 'n', long = "last")]
    last: Option<i64>,
    /// Show the latest created sandbox (all states).
    #[arg(short = 'l', long = "latest")]
    latest: bool,
    /// Go template, `table …`, `table` or `json`, as docker's.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    names: Vec<String>,
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    sandbox: String,
    #[arg(trailing_var_arg = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

/// The `POST /containers/create` body for `ferry run`'s flags, as ferry-core's type.
fn create_body(a: &RunArgs) -> anyhow::Result<ContainerCreateRequest> {
    let endpoint = EndpointSettingsReq {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: a.ip.clone(),
        }),
        aliases: Some(a.aliases.clone()),
        port_bindings: None,
    };
    Ok(ContainerCreateRequest {
        hostname: a.hostname.clone(),
        cmd: Some(a.cmd.clone()),
        labels: Some(labels(&a.labels)?),
        host_config: Some(HostConfigReq {
            network_mode: Some(a.network.clone()),
            auto_remove: a.rm,
            dns: Some(a.dns.clone()),
            dns_search: Some(a.dns_search.clone()),
            dns_options: Some(a.dns_option.clone()),
            port_bindings: Some(a.publish.bindings()?),
            ..HostConfigReq::default()
        }),
        networking_config: Some(NetworkingConfigReq {
            endpoints_config: Some([(a.network.clone(), endpoint)].into()),
        }),
        ..ContainerCreateRequest::default()
    })
}

/// `--label k=v` / `--label k` (an empty value), as docker takes them.
fn labels(given: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    given
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            if k.is_empty() {
                bail!("invalid label {l:?}: the key is empty");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

pub fn run(c: &Client, a: RunArgs) -> anyhow::Result<i32> {
    let q = a
        .name
        .as_deref()
        .map(|n| format!("?name={}", enc(n)))
        .unwrap_or_default();
    let r = c.post(&format!("/containers/create{q}"), &create_body(&a)?)?;
    if !r.ok() {
        eprintln!("{}", DaemonError(r.message()));
        return Ok(125);
    }
    let id = r.json()?["Id"].as_str().unwrap_or("").to_string();
    let start_q = if a.detach { "" } else { "?ferry-attach=1" };
    let r = c.call("POST", &format!("/containers/{id}/start{start_q}"), None)?;
    if !r.ok() {
        eprintln!("{}", DaemonError(r.message()));
        if a.rm {
            let _ = c.call("DELETE", &format!("/containers/{id}?force=1"), None);
        }
        return Ok(125);
    }
    if a.detach {
        println!("{id}");
        return Ok(0);
    }
    let code = match run_inside(c, &id, &a.cmd, true) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            let _ = c.call(
                "POST",
                &format!("/ferry/containers/{id}/exited?code=127"),
                None,
            );
            return Ok(127);
        }
    };
    Ok(code)
}

/// Where and how to enter a running sandbox, from its inspect document.
fn exec_spec(v: &Value) -> anyhow::Result<SandboxExec> {
    if v["State"]["Running"] != json!(true) {
        bail!(
            "Container {} is not running",
            v["Name"].as_str().unwrap_or("").trim_start_matches('/')
        );
    }
    let key = v["NetworkSettings"]["SandboxKey"].as_str().unwrap_or("");
    let host = v["HostConfig"]["NetworkMode"] == json!("host");
    let files = (!host).then(|| SandboxFiles {
        hosts: PathBuf::from(v["HostsPath"].as_str().unwrap_or("")),
        resolv_conf: PathBuf::from(v["ResolvConfPath"].as_str().unwrap_or("")),
        hostname: v["Config"]["Hostname"].as_str().unwrap_or("").to_string(),
    });
    Ok(SandboxExec {
        netns: PathBuf::from(key),
        files,
        new_session: false,
    })
}

/// Whether the sandbox's namespace pin and files, as ferryd names them, are what they
/// are from this mount namespace (they are not when ferryd runs with mounts of its own).
fn visible_here(spec: &SandboxExec) -> bool {
    let ns_ok = std::fs::File::open(&spec.netns)
        .and_then(|f| nix::sys::statfs::fstatfs(&f).map_err(std::io::Error::from))
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
    let files_ok = spec
        .files
        .as_ref()
        .is_none_or(|f| f.hosts.is_file() && f.resolv_conf.is_file());
    ns_ok && files_ok
}

/// What must stay open while the child runs: the namespace's descriptor, and copies of
/// the sandbox's files.
pub struct Passed {
    _fds: Vec<std::os::fd::OwnedFd>,
    _copies: Vec<tempfile::NamedTempFile>,
}

/// Have ferryd pass the namespace and files as descriptors, and point `spec` at them:
/// the namespace at `/proc/self/fd/N` (the child inherits it across fork); the files at
/// copies made here, since a file of another mount namespace cannot be bind-mounted.
/// The copies are the files as they were at the start: names added to the network
/// later do not reach this process's /etc/hosts, as they do when ferryd's files are
/// visible.
fn through_descriptors(c: &Client, id: &str, spec: &mut SandboxExec) -> anyhow::Result<Passed> {
    use std::os::fd::AsRawFd;
    let fds = c.enter(id)?;
    let fd = |i: usize| fds.get(i).context("ferryd passed too few descriptors");
    spec.netns = PathBuf::from(format!("/proc/self/fd/{}", fd(0)?.as_raw_fd()));
    let mut copies = vec![];
    if let Some(f) = spec.files.as_mut() {
        for (i, path) in [(1, &mut f.hosts), (2, &mut f.resolv_conf)] {
            let mut from = std::fs::File::from(fd(i)?.try_clone()?);
            let mut copy = tempfile::Builder::new().prefix("ferry-exec-").tempfile()?;
            std::io::copy(&mut from, &mut copy)?;
            *path = copy.path().to_path_buf();
            copies.push(copy);
        }
    }
    Ok(Passed {
        _fds: fds,
        _copies: copies,
    })
}

/// Run `cmd` in the sandbox as a child of this process; `main` reports it to ferryd
/// as the sandbox's process.
fn run_inside(c: &Client, id: &str, cmd: &[String], main: bool) -> anyhow::Result<i32> {
    let r = c.call("GET", &format!("/containers/{}/json", enc(id)), None)?;
    if !r.ok() {
        return Err(DaemonError(r.message()).into());
    }
    let mut spec = exec_spec(&r.json()?)?;
    // Held until the child has run: the paths below name them.
    let _passed = match visible_here(&spec) {
        true => None,
        false => Some(through_descriptors(c, id, &mut spec)?),
    };
    let hook = spec.pre_exec_hook()?;
    let (prog, args) = cmd.split_first().context("no command given")?;
    let mut command = Command::new(prog);
    command.args(args);
    // SAFETY: the hook only makes syscalls on data prepared before fork.
    unsafe {
        command.pre_exec(hook);
    }
    let mut child = match command.spawn() {
        Ok(ch) => ch,
        Err(e) => bail!("exec {prog}: {e}"),
    };
    let pid = child.id();
    if main {
        let _ = c.call(
            "POST",
            &format!("/ferry/containers/{id}/attached?pid={pid}"),
            None,
        );
    }
    let status = child.wait()?;
    let code = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    if main {
        let _ = c.call(
            "POST",
            &format!("/ferry/containers/{id}/exited?code={code}&pid={pid}"),
            None,
        );
    }
    Ok(code)
}

pub fn exec(c: &Client, a: ExecArgs) -> anyhow::Result<i32> {
    match run_inside(c, &a.sandbox, &a.cmd, false) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("{e:#}");
            Ok(126)
        }
    }
}

/// The query of `GET /containers/json` for `ps`' flags, as the docker CLI builds it.
fn ps_query(a: &PsArgs) -> anyhow::Result<String> {
    let mut q = vec![];
    if a.all {
        q.push("all=1".to_string());
    }
    let limit = if a.latest {
        Some(1)
    } else {
        a.last.filter(|n| *n > 0)
    };
    if let Some(n) = limit {
        q.push(format!("limit={n}"));
    }
    if let Some(f) = crate::network::filters_json(&a.filter)? {
        q.push(format!("filters={}", enc(&f)));
    }
    Ok(if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    })
}

pub fn ps(c: &Client, a: PsArgs) -> anyhow::Result<i32> {
    let r = c.call("GET", &format!("/containers/json{}", ps_query(&a)?), None)?;
    if !r.ok() {
        return Err(DaemonError(r.message()).into());
    }
    let v = r.json()?;
    let now = chrono::Utc::now().timestamp();
    let rows: Vec<Value> = v
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|s| sandbox_row(s, !a.no_trunc, now))
                .collect()
        })
        .unwrap_or_default();
    let format = if a.quiet {
        Some("{{.ID}}")
    } else {
        a.format.as_deref()
    };
    print_list(format, SANDBOX_TABLE, &sandbox_header(), &rows)?;
    Ok(0)
}

pub fn inspect(c: &Client, a: InspectArgs) -> anyhow::Result<i32> {
    let mut items = vec![];
    let mut code = 0;
    for n in &a.names {
        let r = c.call("GET", &format!("/containers/{}/json", enc(n)), None)?;
        let r = if r.status == 404 {
            let nr = c.call("GET", &format!("/networks/{}", enc(n)), None)?;
            if nr.ok() {
                nr
            } else {
                r
            }
        } else {
            r
        };
        if r.ok() {
            items.push(r.json()?);
        } else {
            eprintln!("Error: No such object: {n}");
            code = 1;
        }
    }
    print_inspect(&items, a.format.as_deref())?;
    Ok(code)
}

pub fn rm(c: &Client, a: RmArgs) -> anyhow::Result<i32> {
    let f = if a.force { "?force=1" } else { "" };
    crate::client::delete_each(c, &a.names, |n| format!("/containers/{}{f}", enc(n)))
}
