//! Containers of a test's dockerd, and traffic between them: the steps the Docker
//! scenario tests (docker_plugin, docker_overlay) share. Every container runs the
//! busybox image the testkit imports ([`IMAGE`]).

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::dockerd::{Dockerd, IMAGE};

/// A bounded HTTP/1.0 GET of `ip`:`port` over busybox nc (Debian's static busybox wget
/// crashes), as a shell pipeline that prints the body and fails unless the status is 200.
pub fn http_get_script(ip: &str, port: u16) -> String {
    format!(
        "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 2 {ip} {port} | \
         {{ IFS= read -r status || exit 1; case \"$status\" in *' 200 '*) /bin/busybox sed '1,/^[[:space:]]*$/d';; *) exit 1;; esac; }}"
    )
}

impl Dockerd {
    /// A container serving `content` over HTTP on port 80 (busybox httpd).
    pub fn run_web(&self, name: &str, net: &str, content: &str, extra: &[&str]) -> Result<()> {
        let script = format!(
            "echo '{content}' > /tmp/index.html && exec /bin/busybox httpd -f -p 80 -h /tmp"
        );
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        args.extend(extra);
        args.extend([IMAGE, "/bin/busybox", "sh", "-c", &script]);
        self.ok(&args)?;
        Ok(())
    }

    /// A container that only sleeps.
    pub fn run_idle(&self, name: &str, net: &str) -> Result<()> {
        let args = ["run", "-d", "--name", name, "--network", net];
        let cmd = [IMAGE, "/bin/busybox", "sleep", "3600"];
        self.ok(&[&args[..], &cmd[..]].concat())?;
        Ok(())
    }

    /// `container`'s address on `net`, as `docker inspect` says.
    pub fn ip_of(&self, container: &str, net: &str) -> Result<String> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
        let ip = self.ok(&["inspect", "--format", &format, container])?;
        ensure!(!ip.is_empty(), "{container} has no address on {net}");
        Ok(ip)
    }

    /// One bounded GET of `ip`:`port` from inside container `from`; the body on a 200.
    pub fn fetch(&self, from: &str, ip: &str, port: u16) -> Result<Option<String>> {
        let script = http_get_script(ip, port);
        let sh = ["/bin/busybox", "sh", "-c", &script];
        let args = ["exec", from, "/bin/busybox", "timeout", "6"];
        let out = self.docker(&[&args[..], &sh[..]].concat())?;
        Ok(out.success().then(|| out.out().to_string()))
    }

    /// From inside container `from`, a TCP connect to `ip`:`port` is dropped: busybox nc
    /// ran (so `docker exec` worked) and gave up with "timed out", not refused or
    /// unreachable, within 10 s.
    pub fn expect_dropped(&self, from: &str, ip: &str, port: u16) -> Result<()> {
        let t = Instant::now();
        let port_s = port.to_string();
        let out = self.docker(&["exec", from, "/bin/busybox", "nc", "-w", "2", ip, &port_s])?;
        ensure!(
            !out.success() && out.stderr.contains("nc: timed out"),
            "{from} -> {ip}:{port} must be dropped (nc: timed out):\n{out}"
        );
        ensure!(
            t.elapsed() < Duration::from_secs(10),
            "the refused attempt took {:?}",
            t.elapsed()
        );
        Ok(())
    }
}
