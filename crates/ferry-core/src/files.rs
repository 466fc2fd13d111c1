//! The sandbox's own /etc/hosts and /etc/resolv.conf, rendered from the model.

use std::net::IpAddr;

use crate::model::DnsConf;

/// /etc/hosts: localhost entries, then each address of the sandbox with its hostname
/// (and name, if it differs), as Docker writes it.
pub fn hosts_file(hostname: &str, name: &str, addrs: &[IpAddr]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for a in addrs {
        if hostname == name {
            s.push_str(&format!("{a}\t{hostname}\n"));
        } else {
            s.push_str(&format!("{a}\t{hostname} {name}\n"));
        }
    }
    s
}

/// /etc/resolv.conf: the sandbox's `--dns*` settings, else the host's resolv.conf
/// without loopback nameservers (they cannot be reached from a sandbox). No public
/// resolver is ever put in as a fallback.
pub fn resolv_conf(host_resolv: &str, dns: &DnsConf) -> String {
    let mut out = String::new();
    let mut servers: Vec<String> = dns.servers.clone();
    let mut search: Vec<String> = dns.search.clone();
    let mut options: Vec<String> = dns.options.clone();
    for line in host_resolv.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") if dns.servers.is_empty() => {
                if let Some(ip) = words.next() {
                    if !(ip.starts_with("127.") || ip == "::1") {
                        servers.push(ip.to_string());
                    }
                }
            }
            Some("search") | Some("domain") if dns.search.is_empty() => {
                search.extend(words.map(String::from))
            }
            Some("options") if dns.options.is_empty() => options.extend(words.map(String::from)),
            _ => {}
        }
    }
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lists_the_sandbox_address_with_its_names() {
        let h = hosts_file("web", "web", &["10.0.0.2".parse().unwrap()]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.0.0.2\tweb\n"));
        let h = hosts_file("h1", "web", &["10.0.0.2".parse().unwrap()]);
        assert!(h.ends_with("10.0.0.2\th1 web\n"));
    }

    #[test]
    fn resolv_drops_loopback_servers_and_honours_dns_flags() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.53\nsearch corp\noptions edns0\n";
        let r = resolv_conf(host, &DnsConf::default());
        assert_eq!(r, "nameserver 10.0.0.53\nsearch corp\noptions edns0\n");
        let dns = DnsConf {
            servers: vec!["10.9.9.9".into()],
            search: vec!["x.test".into()],
            options: vec!["ndots:2".into()],
        };
        assert_eq!(
            resolv_conf(host, &dns),
            "nameserver 10.9.9.9\nsearch x.test\noptions ndots:2\n"
        );
    }
}
