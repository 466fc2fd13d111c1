//! `ferry node ls|inspect`: the hosts of the cluster (ferryd --cluster-store).

use clap::Subcommand;

use crate::client::{enc, Client};
use serde_json::{json, Value};

use crate::output::{print_inspect, print_list};
use crate::DaemonError;

#[derive(Subcommand)]
pub enum NodeCmd {
    /// List the hosts of the cluster: name, tunnel address, lease, endpoints.
    #[command(visible_alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// A Go template per node (`{{.Name}} {{.Addr}}`), `table …` or `json`.
        #[arg(long)]
        format: Option<String>,
    },
    /// Show hosts in detail.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short, long)]
        format: Option<String>,
    },
}

const NODE_TABLE: &str = r"table {{.Name}}\t{{.Addr}}\t{{.Lease}}\t{{.Endpoints}}\t{{.Blocks}}";

pub fn run(c: &Client, cmd: NodeCmd) -> anyhow::Result<i32> {
    match cmd {
        NodeCmd::Ls { quiet, format } => {
            let r = c.call("GET", "/ferry/nodes", None)?;
            if !r.ok() {
                return Err(DaemonError(r.message()).into());
            }
            let nodes = r.json()?;
            let mut rows: Vec<Value> = nodes.as_array().cloned().unwrap_or_default();
            for n in &mut rows {
                // This host is marked in the table, as `docker node ls` marks it.
                if n["Self"].as_bool() == Some(true) {
                    n["Name"] = json!(format!("{} *", n["Name"].as_str().unwrap_or("")));
                }
            }
            let format = if quiet {
                Some("{{.Name}}")
            } else {
                format.as_deref()
            };
            if quiet {
                for n in &mut rows {
                    let name = n["Name"]
                        .as_str()
                        .unwrap_or("")
                        .trim_end_matches(" *")
                        .to_string();
                    n["Name"] = json!(name);
                }
            }
            let header = json!({"Name": "NAME", "Addr": "ADDRESS", "Lease": "LEASE", "Endpoints": "ENDPOINTS", "Blocks": "BLOCKS"});
            print_list(format, NODE_TABLE, &header, &rows)?;
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
