//! `ferry network …`.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::{Args, Subcommand};
use ferry_core::docker::network::{
    ConnectRequest, DisconnectRequest, EndpointIpamConfig, EndpointSettingsReq, IpamConfigReq,
    IpamReq, NetworkCreateRequest,
};
use serde_json::Value;

use crate::client::{enc, Client};
use crate::output::{print_inspect, print_list};
use crate::rows::{network_header, network_row, NETWORK_TABLE};
use crate::DaemonError;

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks in detail.
    Inspect(NetInspectArgs),
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove all unused user networks.
    Prune {
        #[arg(short, long)]
        force: bool,
        #[arg(long = "filter")]
        filter: Vec<String>,
    },
    /// Connect a sandbox to a network.
    Connect(ConnectArgs),
    /// Disconnect a sandbox from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        sandbox: String,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    #[arg(long)]
    subnet: Option<String>,
    #[arg(long)]
    gateway: Option<String>,
    #[arg(long = "ip-range")]
    ip_range: Option<String>,
    /// Addresses the network sets aside for other devices (NAME=IP).
    #[arg(long = "aux-address")]
    aux_addresses: Vec<String>,
    #[arg(long)]
    internal: bool,
    #[arg(long)]
    attachable: bool,
    #[arg(long = "label")]
    labels: Vec<String>,
    #[arg(short = 'o', long = "opt")]
    opts: Vec<String>,
    /// An IPAM plugin to take the pool and addresses from (default: ferry's IPAM).
    #[arg(long = "ipam-driver", default_value = "default")]
    ipam_driver: String,
    name: String,
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    #[arg(short, long)]
    quiet: bool,
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Go template, `table …`, `table` or `json`, as docker's.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct NetInspectArgs {
    #[arg(required = true)]
    names: Vec<String>,
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct ConnectArgs {
    #[arg(long)]
    ip: Option<String>,
    #[arg(long = "alias")]
    aliases: Vec<String>,
    #[command(flatten)]
    publish: crate::port::PublishArgs,
    network: String,
    sandbox: String,
}

pub fn kv(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for it in items {
        match it.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                m.insert(k.to_string(), v.to_string());
            }
            _ if what == "label" && !it.is_empty() => {
                m.insert(it.clone(), String::new());
            }
            _ => bail!("invalid {what} {it:?}: expected KEY=VALUE"),
        }
    }
    Ok(m)
}

/// `--filter k=v` flags as Docker's filters JSON.
pub fn filters_json(items: &[String]) -> anyhow::Result<Option<String>> {
    if items.is_empty() {
        return Ok(None);
    }
    let mut m: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for it in items {
        let Some((k, v)) = it.split_once('=') else {
            bail!("bad format of filter (expected name=value): {it}")
        };
        m.entry(k.to_string())
            .or_default()
            .insert(v.to_string(), true);
    }
    Ok(Some(serde_json::to_string(&m)?))
}

fn check(r: &crate::client::Reply) -> anyhow::Result<()> {
    if !r.ok() {
        return Err(DaemonError(r.message()).into());
    }
    Ok(())
}

pub fn run(c: &Client, cmd: NetworkCmd) -> anyhow::Result<i32> {
    match cmd {
        NetworkCmd::Create(a) => create(c, a),
        NetworkCmd::Ls(a) => ls(c, a),
        NetworkCmd::Inspect(a) => {
            let mut items = vec![];
            let mut code = 0;
            for n in &a.names {
                let r = c.call("GET", &format!("/networks/{}", enc(n)), None)?;
                if r.ok() {
                    items.push(r.json()?);
                } else {
                    eprintln!("{}", DaemonError(r.message()));
                    code = 1;
                }
            }
            print_inspect(&items, a.format.as_deref())?;
            Ok(code)
        }
        NetworkCmd::Rm { names } => {
            crate::client::delete_each(c, &names, |n| format!("/networks/{}", enc(n)))
        }
        NetworkCmd::Prune { force, filter } => {
            if !force {
                bail!("WARNING! This will remove all custom networks not used by at least one sandbox. Pass -f to confirm.");
            }
            let q = filters_json(&filter)?
                .map(|f| format!("?filters={}", enc(&f)))
                .unwrap_or_default();
            let r = c.call("POST", &format!("/networks/prune{q}"), None)?;
            check(&r)?;
            let v = r.json()?;
            let names: Vec<&str> = v["NetworksDeleted"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !names.is_empty() {
                println!("Deleted Networks:");
                for n in names {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        NetworkCmd::Connect(a) => {
            let body = ConnectRequest {
                container: a.sandbox,
                endpoint_config: Some(EndpointSettingsReq {
                    ipam_config: Some(EndpointIpamConfig { ipv4_address: a.ip }),
                    aliases: Some(a.aliases),
                    port_bindings: Some(a.publish.bindings()?),
                }),
            };
            check(&c.post(&format!("/networks/{}/connect", enc(&a.network)), &body)?)?;
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            sandbox,
        } => {
            let body = DisconnectRequest {
                container: sandbox,
                force,
            };
            check(&c.post(&format!("/networks/{}/disconnect", enc(&network)), &body)?)?;
            Ok(0)
        }
    }
}

fn create(c: &Client, a: CreateArgs) -> anyhow::Result<i32> {
    let aux = (!a.aux_addresses.is_empty())
        .then(|| kv(&a.aux_addresses, "aux-address"))
        .transpose()?;
    let any = a.subnet.is_some() || a.gateway.is_some() || a.ip_range.is_some() || aux.is_some();
    let config = any.then_some(IpamConfigReq {
        subnet: a.subnet,
        ip_range: a.ip_range,
        gateway: a.gateway,
        auxiliary_addresses: aux,
    });
    let body = NetworkCreateRequest {
        name: a.name,
        driver: Some(a.driver),
        ipam: Some(IpamReq {
            driver: Some(a.ipam_driver),
            options: Some(BTreeMap::new()),
            config: Some(config.into_iter().collect()),
        }),
        internal: a.internal,
        attachable: a.attachable,
        options: Some(kv(&a.opts, "option")?),
        labels: Some(kv(&a.labels, "label")?),
        ..NetworkCreateRequest::default()
    };
    let r = c.post("/networks/create", &body)?;
    check(&r)?;
    println!("{}", r.json()?["Id"].as_str().unwrap_or(""));
    Ok(0)
}

fn ls(c: &Client, a: LsArgs) -> anyhow::Result<i32> {
    let q = filters_json(&a.filter)?
        .map(|f| format!("?filters={}", enc(&f)))
        .unwrap_or_default();
    let r = c.call("GET", &format!("/networks{q}"), None)?;
    check(&r)?;
    let v = r.json()?;
    let mut nets: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    nets.sort_by_key(|n| n["Name"].as_str().unwrap_or("").to_string());
    let rows: Vec<Value> = nets.iter().map(|n| network_row(n, !a.no_trunc)).collect();
    let format = if a.quiet {
        Some("{{.ID}}")
    } else {
        a.format.as_deref()
    };
    print_list(format, NETWORK_TABLE, &network_header(), &rows)?;
    Ok(0)
}
