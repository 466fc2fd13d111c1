//! `ferry plugin ls`: the third-party plugins ferryd finds, where, what they implement
//! and whether they answered.

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;
use crate::output::print_list;
use crate::DaemonError;

#[derive(Subcommand)]
pub enum PluginCmd {
    /// List the plugins found in ferryd's plugin directories.
    #[command(visible_alias = "list")]
    Ls {
        /// A Go template per plugin (`{{.Name}} {{.Addr}}`), `table …` or `json`.
        #[arg(long)]
        format: Option<String>,
    },
}

const PLUGIN_TABLE: &str = r"table {{.Name}}\t{{.Kind}}\t{{.Status}}\t{{.Addr}}\t{{.Source}}";

pub fn run(c: &Client, cmd: PluginCmd) -> anyhow::Result<i32> {
    match cmd {
        PluginCmd::Ls { format } => {
            let r = c.call("GET", "/ferry/plugins", None)?;
            if !r.ok() {
                return Err(DaemonError(r.message()).into());
            }
            let mut rows: Vec<Value> = r.json()?.as_array().cloned().unwrap_or_default();
            for p in &mut rows {
                let kinds: Vec<&str> = p["Implements"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                p["Kind"] = json!(kinds.join(","));
                p["Status"] = json!(match p["Answered"].as_bool() {
                    Some(true) => "answered".to_string(),
                    _ => format!("no answer: {}", p["Error"].as_str().unwrap_or("")),
                });
            }
            let header = json!({"Name": "NAME", "Kind": "KIND", "Status": "STATUS",
                                "Addr": "ADDRESS", "Source": "FOUND IN"});
            print_list(format.as_deref(), PLUGIN_TABLE, &header, &rows)?;
            Ok(0)
        }
    }
}
