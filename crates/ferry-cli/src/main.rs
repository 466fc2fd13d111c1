//! `ferry`: the command line, a thin client of ferryd's Docker-shaped API. Flags and
//! output follow docker's. Foreground `run` and `exec` start the process here, inside
//! the sandbox's namespaces, so stdio and the exit code pass straight through.

mod client;
mod network;
mod node;
mod output;
mod plugin;
mod port;
mod process;
mod rows;
mod sandbox;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Container networking for Linux: networks and sandboxes, driven through ferryd"
)]
pub struct Cli {
    /// ferryd's socket.
    #[arg(
        short = 'H',
        long = "host",
        env = "FERRY_HOST",
        default_value = "unix:///run/ferry/ferry.sock",
        global = true
    )]
    host: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// The hosts of the cluster (ferryd --cluster-store).
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Third-party network and IPAM plugins ferryd finds (plughost).
    #[command(subcommand)]
    Plugin(plugin::PluginCmd),
    /// Create a sandbox, attach it to a network and run a command in it.
    Run(sandbox::RunArgs),
    /// List sandboxes.
    Ps(sandbox::PsArgs),
    /// Show sandboxes (or networks) in Docker's inspect shape.
    Inspect(sandbox::InspectArgs),
    /// Run a command inside a running sandbox.
    Exec(sandbox::ExecArgs),
    /// Remove sandboxes.
    Rm(sandbox::RmArgs),
    /// List a sandbox's published ports.
    Port(port::PortArgs),
    /// Reconcile the kernel with ferryd's state, or remove everything ferry made.
    #[command(subcommand)]
    System(SystemCmd),
    /// Show ferryd's version.
    Version,
}

#[derive(Subcommand)]
enum SystemCmd {
    /// Make the kernel match ferryd's state now (as at ferryd's start): bridges, links,
    /// namespaces and ferry's nftables tables.
    Reconcile,
    /// Remove every sandbox, network, kernel object and nftables rule ferry owns, then
    /// stop ferryd.
    Cleanup,
}

/// A failure the daemon reported: printed as docker prints it.
#[derive(Debug)]
pub struct DaemonError(pub String);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error response from daemon: {}", self.0)
    }
}
impl std::error::Error for DaemonError {}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let c = client::Client::new(&cli.host)?;
    match cli.cmd {
        Cmd::Network(n) => network::run(&c, n),
        Cmd::Node(n) => node::run(&c, n),
        Cmd::Plugin(p) => plugin::run(&c, p),
        Cmd::Run(a) => sandbox::run(&c, a),
        Cmd::Ps(a) => sandbox::ps(&c, a),
        Cmd::Inspect(a) => sandbox::inspect(&c, a),
        Cmd::Exec(a) => sandbox::exec(&c, a),
        Cmd::Rm(a) => sandbox::rm(&c, a),
        Cmd::Port(a) => port::port(&c, a),
        Cmd::System(s) => {
            let path = match s {
                SystemCmd::Reconcile => "/ferry/system/reconcile",
                SystemCmd::Cleanup => "/ferry/system/cleanup",
            };
            // cleanup stops ferryd: hold on to its process before asking.
            let ferryd = match s {
                SystemCmd::Cleanup => c
                    .server_pid()?
                    .map(process::Process::open)
                    .transpose()
                    .context("watch ferryd's process")?,
                SystemCmd::Reconcile => None,
            };
            let r = c.call("POST", path, None)?;
            if !r.ok() {
                eprintln!("{}", DaemonError(r.message()));
                return Ok(1);
            }
            if let Some(ferryd) = ferryd {
                if !ferryd.wait_exit(CLEANUP_EXIT_WITHIN)? {
                    eprintln!(
                        "Error: ferryd cleaned up but has not exited within {CLEANUP_EXIT_WITHIN:?}"
                    );
                    return Ok(1);
                }
            }
            Ok(0)
        }
        Cmd::Version => {
            let r = c.call("GET", "/version", None)?;
            let v = r.json()?;
            println!(
                "ferryd {} (API {})",
                v["Version"].as_str().unwrap_or(""),
                v["ApiVersion"].as_str().unwrap_or("")
            );
            Ok(0)
        }
    }
}

/// ferryd finishes deleting veth pairs for at most 5 s after a cleanup before it exits.
const CLEANUP_EXIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
