//! What the kernel holds, read from the kernel: links and addresses inside a network namespace
//! (busybox `ip` run with `setns` into a namespace fd we hold — no dependency on ferryd being
//! alive), and mounts from /proc/self/mountinfo.

use crate::bins::BUSYBOX;
use crate::cmd::{run_bounded, Output};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `busybox ARGS` run inside the network namespace `netns` (an open nsfs file); must succeed.
pub(crate) fn in_netns(netns: &File, args: &[&str]) -> Result<Output> {
    program_in(netns, BUSYBOX, args, Duration::from_secs(10))?.expect_success()
}

/// Any program run inside the network namespace `netns`, bounded; any exit status is Ok.
pub(crate) fn program_in(
    netns: &File,
    program: &str,
    args: &[&str],
    bound: Duration,
) -> Result<Output> {
    let fd = netns.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls (setns) between fork and exec; `netns` outlives the
    // spawn because run_bounded returns only after the child has been reaped.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run_bounded(&mut cmd, bound)
}

/// Interface names in `ip -o link` output (`eth0@if7` → `eth0`).
pub fn parse_links(ip_o_link: &str) -> Vec<String> {
    ip_o_link
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// (interface, address/prefix) pairs in `ip -o addr` output.
pub fn parse_addresses(ip_o_addr: &str) -> Vec<(String, String)> {
    ip_o_addr
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let i = f.iter().position(|w| *w == "inet" || *w == "inet6")?;
            Some((
                f.get(1)?.trim_end_matches(':').to_string(),
                f.get(i + 1)?.to_string(),
            ))
        })
        .collect()
}

pub(crate) fn links_in(netns: &File) -> Result<Vec<String>> {
    Ok(parse_links(
        &in_netns(netns, &["ip", "-o", "link", "show"])?.stdout,
    ))
}

pub(crate) fn addresses_in(netns: &File) -> Result<Vec<(String, String)>> {
    Ok(parse_addresses(
        &in_netns(netns, &["ip", "-o", "addr", "show"])?.stdout,
    ))
}

/// One IPv4 route, as busybox `ip -4 route show table all` prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// `unicast` unless the line names another type (`local`, `broadcast`, …).
    pub kind: String,
    /// `default` or `ADDR[/LEN]`.
    pub dest: String,
    pub dev: String,
    pub via: Option<String>,
    /// `main` unless the line names another table.
    pub table: String,
    /// The whole line, whitespace normalised.
    pub line: String,
}

const ROUTE_KINDS: [&str; 9] = [
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "anycast",
    "unreachable",
    "blackhole",
    "prohibit",
    "throw",
];

/// The routes in `ip -4 route show [table all]` output.
pub fn parse_routes(out: &str) -> Vec<Route> {
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let after = |key: &str| {
                w.iter()
                    .position(|x| *x == key)
                    .and_then(|i| w.get(i + 1))
                    .map(|s| s.to_string())
            };
            let typed = ROUTE_KINDS.contains(w.first()?);
            Some(Route {
                kind: if typed { w[0] } else { "unicast" }.to_string(),
                dest: w.get(usize::from(typed))?.to_string(),
                dev: after("dev").unwrap_or_default(),
                via: after("via"),
                table: after("table").unwrap_or_else(|| "main".into()),
                line: w.join(" "),
            })
        })
        .collect()
}

/// Every IPv4 route of every table in `netns`.
pub(crate) fn routes_in(netns: &File) -> Result<Vec<Route>> {
    Ok(parse_routes(
        &in_netns(netns, &["ip", "-4", "route", "show", "table", "all"])?.stdout,
    ))
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u64,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// The mounts of this process's mount namespace (which ferryd shares: it only unshares the
/// network namespace; its sandboxes get mount namespaces of their own).
pub fn mounts() -> Result<Vec<Mount>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    Some(Mount {
        id: l.first()?.parse().ok()?,
        mount_point: PathBuf::from(unescape(l.get(4)?)),
        fstype: r.first()?.to_string(),
        source: unescape(r.get(1).unwrap_or(&"")),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn mounts_under(root: &Path) -> Result<Vec<Mount>> {
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(root))
        .collect())
}

/// Entries of a directory by name (empty when the directory does not exist).
pub(crate) fn dir_entries(dir: &Path) -> Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut names = Vec::new();
            for e in rd {
                names.push(
                    e.with_context(|| format!("read {}", dir.display()))?
                        .file_name()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", dir.display())),
    }
}

/// What is left in the kernel and the roots beyond what the host started with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Links in ferryd's namespace that were not there when ferryd became ready.
    pub links: Vec<String>,
    /// Addresses on those links.
    pub addresses: Vec<(String, String)>,
    /// IPv4 routes (any table) in ferryd's namespace that were not there when ferryd
    /// became ready, as `ip route` prints them.
    pub routes: Vec<String>,
    /// Files under `<exec-root>/netns/` (sandbox namespace files).
    pub netns_files: Vec<String>,
    /// Entries in the `ip netns` directory.
    pub ip_netns_links: Vec<String>,
    /// Namespace (nsfs) mounts anywhere under the host's temporary directory.
    pub ns_mounts: Vec<PathBuf>,
    /// Other mounts under the temporary directory, except bind mounts of the two namespace
    /// directories onto themselves (the `ip netns` convention ferryd may keep).
    pub other_mounts: Vec<PathBuf>,
    /// Elements of ferry's nftables sets and maps beyond those the host started with.
    pub nft_elements: Vec<String>,
    /// Mounts under /etc that appeared in the test's own mount namespace: a sandbox's
    /// /etc/hosts or /etc/resolv.conf escaping its private mount namespace.
    pub etc_mounts: Vec<PathBuf>,
}

impl Leftovers {
    /// Forget links that may legitimately stay (the default bridge `ferry0`), with their
    /// addresses and the nftables elements that name them.
    pub fn except_links(mut self, keep: &[&str]) -> Leftovers {
        self.links.retain(|l| !keep.contains(&l.as_str()));
        self.addresses.retain(|(l, _)| !keep.contains(&l.as_str()));
        self.routes.retain(|r| {
            let dev = parse_routes(r).pop().map(|r| r.dev).unwrap_or_default();
            !keep.contains(&dev.as_str())
        });
        // An element naming a kept link (a bridge still in use) stays with it.
        self.nft_elements
            .retain(|e| !keep.iter().any(|l| e.contains(&format!("\"{l}\""))));
        self
    }

    pub fn is_empty(&self) -> bool {
        *self == Leftovers::default()
    }
}

impl fmt::Display for Leftovers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "nothing left");
        }
        let paths = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        };
        let rows: [(&str, Vec<String>); 9] = [
            ("nftables elements", self.nft_elements.clone()),
            ("links", self.links.clone()),
            (
                "addresses",
                self.addresses
                    .iter()
                    .map(|(l, a)| format!("{a} on {l}"))
                    .collect(),
            ),
            ("routes", self.routes.clone()),
            ("netns files", self.netns_files.clone()),
            ("ip netns links", self.ip_netns_links.clone()),
            ("namespace mounts", paths(&self.ns_mounts)),
            ("other mounts", paths(&self.other_mounts)),
            ("mounts under /etc", paths(&self.etc_mounts)),
        ];
        for (what, items) in rows.iter().filter(|(_, v)| !v.is_empty()) {
            writeln!(f, "{what}: {}", items.join(", "))?;
        }
        Ok(())
    }
}

/// The elements of ferry's nftables sets and maps (`table inet ferry`, `table bridge
/// ferry`) in `netns`, each as `FAMILY/SET ELEMENT-JSON`; none when a table is absent.
pub(crate) fn nft_elements_in(netns: &File) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for family in ["inet", "bridge"] {
        let got = program_in(
            netns,
            "nft",
            &["-j", "list", "table", family, "ferry"],
            Duration::from_secs(10),
        )?;
        if !got.success() {
            continue; // no such table (yet): nothing of ferry's there
        }
        out.extend(parse_nft_elements(family, &got.stdout)?);
    }
    out.sort();
    Ok(out)
}

/// Set and map elements in `nft -j list table` output.
pub fn parse_nft_elements(family: &str, json: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(json).context("parse `nft -j` output")?;
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(set) = item.get("set").or_else(|| item.get("map")) else {
            continue;
        };
        let name = set["name"].as_str().unwrap_or("?");
        for e in set["elem"].as_array().into_iter().flatten() {
            out.push(format!("{family}/{name} {e}"));
        }
    }
    Ok(out)
}

/// Mount ids of the mounts under /etc now (the baseline for [`Leftovers::etc_mounts`]).
pub(crate) fn etc_mount_ids() -> Result<BTreeSet<u64>> {
    Ok(mounts()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with("/etc"))
        .map(|m| m.id)
        .collect())
}

/// True once process `pid` is gone (or a zombie: its namespaces are already released), polling
/// for at most `within`.
pub fn process_gone(pid: i32, within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // "pid (comm) S ...": the state follows the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(true),
        };
        if gone {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nft_elements_of_sets_and_maps() {
        let json = r#"{"nftables":[{"metainfo":{}},{"table":{"family":"inet","name":"ferry"}},
            {"set":{"family":"inet","name":"bridges","table":"ferry","elem":["ferry0","fy-1"]}},
            {"set":{"family":"inet","name":"masq","table":"ferry"}},
            {"map":{"family":"inet","name":"pub_any","table":"ferry","elem":[[{"concat":["tcp",8080]},{"concat":["10.0.0.2",80]}]]}}]}"#;
        let got = super::parse_nft_elements("inet", json).unwrap();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], "inet/bridges \"ferry0\"");
        assert!(got[2].starts_with("inet/pub_any [{\"concat\""), "{got:?}");
    }

    use super::*;

    #[test]
    fn link_names_drop_the_peer_suffix() {
        let out = "1: lo: <LOOPBACK,UP> mtu 65536\\    link/loopback 00:00\n\
                   7: fy3a2b1c@if6: <BROADCAST,UP> mtu 1500 master fy-0123abcd\\    link/ether 02:42\n\
                   8: fy-0123abcd: <BROADCAST> mtu 1500\\    link/ether 02:43\n";
        assert_eq!(parse_links(out), ["lo", "fy3a2b1c", "fy-0123abcd"]);
    }

    #[test]
    fn addresses_pair_interface_and_cidr() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   4: eth0    inet 10.20.0.77/24 brd 10.20.0.255 scope global eth0\\       valid_lft forever\n";
        assert_eq!(
            parse_addresses(out),
            [
                ("lo".to_string(), "127.0.0.1/8".to_string()),
                ("eth0".to_string(), "10.20.0.77/24".to_string())
            ]
        );
    }

    #[test]
    fn mountinfo_line_with_escaped_space() {
        let line =
            "36 35 0:4 net:[4026532] /tmp/ferry-t-x/run/netns/a\\040b rw shared:1 - nsfs nsfs rw";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.id, 36);
        assert_eq!(m.mount_point, PathBuf::from("/tmp/ferry-t-x/run/netns/a b"));
        assert_eq!(m.fstype, "nsfs");
    }
}
