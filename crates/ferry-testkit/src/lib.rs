//! Privileged test support for ferry's scenario tests (the root `tests/` directory).
//!
//! Every scenario builds its own [`TestHost`]: a temporary directory holding ferryd's data root,
//! exec root, `ip netns` directory and API socket, and a ferryd started in a fresh network
//! namespace of its own — the throwaway "host". Nothing is written to the real host's network
//! namespace, and everything the host started is killed by PID when it is finished or dropped.
//!
//! * [`TestHost`] — start, [`TestHost::restart_kill9`], teardown ([`TestHost::finish`]).
//! * [`Output`] / [`run_bounded`] — every command runs with a deadline and its output captured.
//! * probes ([`TestHost::run_web`], [`TestHost::expect_fetch`], …) — real TCP traffic between
//!   sandboxes with busybox `httpd` and `nc`, each client bounded inside and outside.
//! * the live leak check ([`TestHost::accounted`]) — every ferry-owned link, address,
//!   namespace and mount accounted for by the store, and every store record in the kernel.
//! * leftovers ([`TestHost::leftovers`]) — what the kernel still holds (links, addresses,
//!   namespace files, mounts), read from the kernel, never from ferryd.
//! * [`DockerCli`] — the real `docker` CLI pointed at a host's ferryd.
//! * [`Dockerd`] — a real dockerd in the host's network namespace, with ferryd as its plugin.
//!
//! A scenario reads like this:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let host = ferry_testkit::host_or_skip!();
//! let net = ferry_testkit::unique("net");
//! host.create_network(&net, &["--subnet", "10.20.0.0/24"])?;
//! let web = host.run_web("web", &["--network", &net])?;
//! host.run_idle("client", &["--network", &net])?;
//! host.expect_fetch("client", &host.ip_of("web", &net)?, &web)?;
//! host.finish()
//! # }
//! ```

mod accounted;
mod api;
mod bins;
pub mod cluster;
mod cmd;
mod containers;
mod docker;
mod dockerd;
pub mod etcd;
mod host;
mod kernel;
mod peer;
mod port;
mod probe;
mod reach;
mod teardown;
pub mod tunnel;

pub use accounted::{Accounted, EndpointView, NetView};
pub use api::ping;
pub use bins::{bin_dir, Bins, BUSYBOX};
pub use cmd::{run_bounded, Output};
pub use containers::http_get_script;
pub use docker::DockerCli;
pub use dockerd::{find_dockerd_or_skip, Dockerd, DOCKER_TIMEOUT, IMAGE};
pub use host::{TestHost, CLI_TIMEOUT, PREDEFINED_NETWORKS};
pub use kernel::{
    mounts, parse_addresses, parse_links, parse_routes, process_gone, Leftovers, Mount, Route,
};
pub use peer::Peer;
pub use port::PortCounter;
pub use probe::{is_full_id, Web};
pub use reach::{At, NoReach, REFUSED_WITHIN};

use std::sync::atomic::{AtomicU64, Ordering};

/// True when privileged scenario tests can run (effective uid 0). Otherwise reports a skip
/// ([`skip`]) and returns false — unless the `CI` variable is set, where a skip would hide a
/// broken setup, so it panics instead.
pub fn privileged(scenario: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{scenario}: scenario tests need root and CI is set, so they may not be skipped (run `scripts/test` as root)");
    }
    skip(scenario, "needs root (run `scripts/test` as root)");
    false
}

/// Report that `scenario` skips itself (the test then returns `Ok(())`, which the harness
/// counts as passed): one line `SKIP <scenario>: <why>`, written straight to the process's
/// stderr so the test harness's output capture cannot swallow it. `scripts/test` counts
/// these lines, subtracts them from "passed" and prints them as "skipped".
pub fn skip(scenario: &str, why: &str) {
    use std::io::Write;
    // One write of a whole line, starting on a fresh line in case the harness is in the
    // middle of its own (`test NAME ... `).
    let line = format!("\nSKIP {scenario}: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Whether a program the setup installs may be missing without failing the test: only when
/// the run is neither CI nor root (as root, `scripts/setup` has run and should have
/// installed it; under CI a skip would hide a broken setup).
pub fn may_skip_missing_program() -> bool {
    std::env::var_os("CI").is_none() && !nix::unistd::geteuid().is_root()
}

/// `prefix` followed by 6 random hex digits: unique per call, letters and digits only, so it is
/// usable as a network or sandbox name and inside a `{{.A.B}}` template path.
pub fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!("{prefix}{:06x}", h.finish() & 0xff_ffff)
}

/// The name of the enclosing function (the test), for messages and skip notices.
#[macro_export]
macro_rules! scenario_name {
    () => {{
        fn f() {}
        fn type_name_of<T>(_: T) -> &'static str {
            ::std::any::type_name::<T>()
        }
        let name = type_name_of(f);
        let name = name.strip_suffix("::f").unwrap_or(name);
        name.rsplit("::").next().unwrap_or(name)
    }};
}

/// Start a [`TestHost`] for the enclosing test, or return `Ok(())` from it (skip) when not root.
/// The enclosing function must return `anyhow::Result<()>`.
#[macro_export]
macro_rules! host_or_skip {
    () => {
        match $crate::TestHost::start_if_privileged($crate::scenario_name!())? {
            Some(host) => host,
            None => return Ok(()),
        }
    };
}
