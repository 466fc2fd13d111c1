//! Published ports on the command line: `-p`/`--publish` and `--publish-from` (for `run`
//! and `network connect`), and `ferry port`.

use anyhow::Context;
use clap::Args;
use ferry_core::ports::{parse_publish, to_bindings, PortBindings, Proto};
use ipnet::Ipv4Net;

use crate::client::{enc, Client};
use crate::DaemonError;

/// The publishing flags shared by `run` and `network connect`.
#[derive(Args, Default)]
pub struct PublishArgs {
    /// Publish ports: [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/tcp|/udp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Admit only clients from this CIDR to the ports published by this command.
    #[arg(long = "publish-from", value_name = "CIDR")]
    pub publish_from: Option<String>,
}

impl PublishArgs {
    /// `PortBindings` for the request body; a bad spec is refused here, before ferryd
    /// is asked for anything.
    pub fn bindings(&self) -> anyhow::Result<PortBindings> {
        let source = match &self.publish_from {
            Some(s) => Some(
                s.parse::<Ipv4Net>()
                    .map(|n| n.trunc())
                    .with_context(|| format!("invalid --publish-from {s}: not an IPv4 CIDR"))?,
            ),
            None => None,
        };
        if source.is_some() && self.publish.is_empty() {
            anyhow::bail!("--publish-from needs at least one -p/--publish");
        }
        let mut maps = vec![];
        for spec in &self.publish {
            let mut m = parse_publish(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
            m.source = source;
            maps.push(m);
        }
        Ok(to_bindings(&maps))
    }
}

#[derive(Args)]
pub struct PortArgs {
    sandbox: String,
    /// Only this container port: PORT[/PROTO].
    private: Option<String>,
}

/// `ferry port SANDBOX [PORT[/PROTO]]`: one line per mapping, as `docker port` prints.
pub fn port(c: &Client, a: PortArgs) -> anyhow::Result<i32> {
    let want = match &a.private {
        Some(p) => {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let proto = Proto::parse(proto).map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(format!("{port}/{}", proto.as_str()))
        }
        None => None,
    };
    let r = c.call(
        "GET",
        &format!("/containers/{}/json", enc(&a.sandbox)),
        None,
    )?;
    if !r.ok() {
        eprintln!("{}", DaemonError(r.message()));
        return Ok(1);
    }
    let v = r.json()?;
    let empty = serde_json::Map::new();
    let ports = v["NetworkSettings"]["Ports"].as_object().unwrap_or(&empty);
    let mut found = false;
    for (key, list) in ports {
        if want.as_ref().is_some_and(|w| w != key) {
            continue;
        }
        for b in list.as_array().into_iter().flatten() {
            found = true;
            let (ip, hp) = (
                b["HostIp"].as_str().unwrap_or(""),
                b["HostPort"].as_str().unwrap_or(""),
            );
            if want.is_some() {
                println!("{ip}:{hp}");
            } else {
                println!("{key} -> {ip}:{hp}");
            }
        }
    }
    if let (Some(w), false) = (&want, found) {
        eprintln!("Error: No public port '{w}' published for {}", a.sandbox);
        return Ok(1);
    }
    Ok(0)
}
