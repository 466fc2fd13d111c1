//! `ferry node ls|inspect`: the hosts of the cluster (ferryd --cluster-store).

use clap::Subcommand;

use crate::client::{enc, Client};
use crate::output::{print_inspect, table};
use crate::DaemonError;

#[derive(Subcommand)]
pub enum NodeCmd {
    /// List the hosts of the cluster: name, tunnel address, lease, endpoints.
    #[command(visible_alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show hosts in detail.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short, long)]
        format: Option<String>,
    },
}

pub fn run(c: &Client, cmd: NodeCmd) -> anyhow::Result<i32> {
    match cmd {
        NodeCmd::Ls { quiet } => {
            let r = c.call("GET", "/ferry/nodes", None)?;
            if !r.ok() {
                return Err(DaemonError(r.message()).into());
            }
            let nodes = r.json()?;
            let nodes = nodes.as_array().cloned().unwrap_or_default();
            if quiet {
                for n in &nodes {
                    println!("{}", n["Name"].as_str().unwrap_or(""));
                }
                return Ok(0);
            }
            let mut rows = vec![["NAME", "ADDRESS", "LEASE", "ENDPOINTS", "BLOCKS"]
                .map(String::from)
                .to_vec()];
            for n in &nodes {
                let me = if n["Self"].as_bool() == Some(true) {
                    " *"
                } else {
                    ""
                };
                rows.push(vec![
                    format!("{}{me}", n["Name"].as_str().unwrap_or("")),
                    n["Addr"].as_str().unwrap_or("").into(),
                    n["Lease"].as_str().unwrap_or("").into(),
                    n["Endpoints"].to_string(),
                    n["Blocks"].to_string(),
                ]);
            }
            print!("{}", table(&rows));
            Ok(0)
        }
        NodeCmd::Inspect { names, format } => {
            let mut items = vec![];
            let mut code = 0;
            for n in &names {
                let r = c.call("GET", &format!("/ferry/nodes/{}", enc(n)), None)?;
                if r.ok() {
                    items.push(r.json()?);
                } else {
                    eprintln!("{}", DaemonError(r.message()));
                    code = 1;
                }
            }
            print_inspect(&items, format.as_deref())?;
            Ok(code)
        }
    }
}
