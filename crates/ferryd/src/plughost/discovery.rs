//! Finding a plugin by name, as dockerd's local registry does: first a unix socket
//! `NAME.sock` or `NAME/NAME.sock` in the sockets directory, then `NAME.spec` /
//! `NAME/NAME.spec` and `NAME.json` / `NAME/NAME.json` in each spec directory, in the
//! order the directories were given. A `.spec` holds one URL; a `.json` holds
//! `{"Name", "Addr", "TLSConfig"}`. ferryd's own Docker-plugin socket is never a
//! candidate: ferryd driving itself would deadlock on its own state lock.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::client::Addr;
use super::tls::TlsFiles;
use super::PluginError;

/// Where discovery looks (every directory a ferryd flag).
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    pub sockets: Option<PathBuf>,
    pub specs: Vec<PathBuf>,
    /// ferryd's own plugin socket: skipped wherever it is found.
    pub own_socket: Option<PathBuf>,
}

/// A plugin found on disk: where it listens, and the file that said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub addr: Addr,
    pub source: PathBuf,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonSpec {
    #[serde(default)]
    name: String,
    addr: String,
    #[serde(rename = "TLSConfig", default)]
    tls_config: Option<TlsFiles>,
}

fn candidates(base: &Path, name: &str, ext: &str) -> [PathBuf; 2] {
    [
        base.join(format!("{name}{ext}")),
        base.join(name).join(format!("{name}{ext}")),
    ]
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

impl Dirs {
    fn is_own(&self, p: &Path) -> bool {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        self.own_socket
            .as_deref()
            .is_some_and(|own| canon(own) == canon(p))
    }

    /// The plugin called `name`, or None if no file names it (yet).
    pub fn find(&self, name: &str) -> Result<Option<Found>, PluginError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Ok(None);
        }
        if let Some(dir) = &self.sockets {
            for p in candidates(dir, name, ".sock") {
                if is_socket(&p) && !self.is_own(&p) {
                    let addr = Addr::Unix(p.clone());
                    return Ok(Some(Found {
                        name: name.into(),
                        addr,
                        source: p,
                    }));
                }
            }
        }
        for dir in &self.specs {
            for ext in [".spec", ".json"] {
                for p in candidates(dir, name, ext) {
                    if p.is_file() {
                        let found = read_spec(name, &p)?;
                        if matches!(&found.addr, Addr::Unix(s) if self.is_own(s)) {
                            continue;
                        }
                        return Ok(Some(found));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Every plugin the directories name (for `ferry plugin ls`), first match per name.
    pub fn scan(&self) -> Vec<Result<Found, PluginError>> {
        let mut names: Vec<String> = vec![];
        let mut add = |dir: &Path, exts: &[&str]| {
            let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
            for e in entries {
                let p = e.path();
                let stem = |p: &Path| {
                    let ext = p.extension()?.to_str()?;
                    exts.contains(&ext)
                        .then(|| p.file_stem()?.to_str().map(String::from))?
                };
                let name = if p.is_dir() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    exts.iter()
                        .any(|x| p.join(format!("{n}.{x}")).exists())
                        .then_some(n)
                } else {
                    stem(&p)
                };
                if let Some(n) = name.filter(|n| !names.contains(n)) {
                    names.push(n);
                }
            }
        };
        if let Some(d) = &self.sockets {
            add(d, &["sock"]);
        }
        for d in &self.specs {
            add(d, &["spec", "json"]);
        }
        names.sort();
        names
            .into_iter()
            .filter_map(|n| self.find(&n).transpose())
            .collect()
    }
}

fn read_spec(name: &str, p: &Path) -> Result<Found, PluginError> {
    let bad = |why: String| PluginError::BadSpec {
        path: p.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
    let (url, tls) = if p.extension().is_some_and(|x| x == "json") {
        let j: JsonSpec = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if !j.name.is_empty() && j.name != name {
            return Err(bad(format!("its Name is {:?}, not {name:?}", j.name)));
        }
        (j.addr, j.tls_config)
    } else {
        (text, None)
    };
    let addr = Addr::parse(&url).ok_or_else(|| {
        bad(format!(
            "address {:?} is neither unix:///PATH nor tcp://HOST:PORT",
            url.trim()
        ))
    })?;
    let addr = match (addr, tls) {
        (a, None) => a,
        (Addr::Tcp(hp), Some(t)) => {
            t.check().map_err(bad)?;
            Addr::TcpTls(hp, t)
        }
        (_, Some(_)) => return Err(bad("TLSConfig needs a tcp:// address".into())),
    };
    Ok(Found {
        name: name.into(),
        addr,
        source: p.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(p: &Path) -> std::os::unix::net::UnixListener {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::net::UnixListener::bind(p).unwrap()
    }

    #[test]
    fn a_socket_wins_over_specs_and_subdirectories_are_one_level() {
        let t = tempfile::tempdir().unwrap();
        let (socks, etc, lib) = (
            t.path().join("run"),
            t.path().join("etc"),
            t.path().join("lib"),
        );
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        let dirs = Dirs {
            sockets: Some(socks.clone()),
            specs: vec![etc.clone(), lib.clone()],
            own_socket: Some(socks.join("ferry.sock")),
        };
        let _a = listen(&socks.join("a.sock"));
        let _b = listen(&socks.join("b").join("b.sock"));
        let _own = listen(&socks.join("ferry.sock"));
        std::fs::write(etc.join("a.spec"), "tcp://127.0.0.1:1").unwrap();
        std::fs::write(lib.join("c.spec"), "unix:///x/c.sock\n").unwrap();
        std::fs::write(
            etc.join("d.json"),
            r#"{"Name": "d", "Addr": "tcp://127.0.0.1:8010"}"#,
        )
        .unwrap();
        std::fs::create_dir_all(etc.join("e")).unwrap();
        std::fs::write(etc.join("e").join("e.spec"), "tcp://[::1]:9").unwrap();

        let addr = |n: &str| dirs.find(n).unwrap().map(|f| f.addr.to_string());
        assert_eq!(
            addr("a").unwrap(),
            format!("unix://{}", socks.join("a.sock").display())
        );
        assert!(addr("b").unwrap().ends_with("/b/b.sock"));
        assert_eq!(addr("c").unwrap(), "unix:///x/c.sock");
        assert_eq!(addr("d").unwrap(), "tcp://127.0.0.1:8010");
        assert_eq!(addr("e").unwrap(), "tcp://[::1]:9");
        assert_eq!(addr("ferry"), None, "ferryd's own socket is never a plugin");
        assert_eq!(addr("nope"), None);
        assert_eq!(addr("../a"), None);
        let names: Vec<String> = dirs.scan().into_iter().map(|f| f.unwrap().name).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn a_json_spec_with_tls_config_is_reached_over_tls_with_its_files() {
        let t = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            specs: vec![t.path().to_path_buf()],
            ..Default::default()
        };
        std::fs::write(
            t.path().join("secure.json"),
            r#"{"Name":"secure","Addr":"tcp://127.0.0.1:8010","TLSConfig":{"InsecureSkipVerify":false,"CAFile":"/etc/p/ca.pem","CertFile":"/etc/p/c.pem","KeyFile":"/etc/p/k.pem"}}"#,
        )
        .unwrap();
        let found = dirs.find("secure").unwrap().unwrap();
        let want = TlsFiles {
            insecure_skip_verify: false,
            ca_file: Some("/etc/p/ca.pem".into()),
            cert_file: Some("/etc/p/c.pem".into()),
            key_file: Some("/etc/p/k.pem".into()),
        };
        assert_eq!(found.addr, Addr::TcpTls("127.0.0.1:8010".into(), want));
        assert_eq!(found.addr.to_string(), "tcp://127.0.0.1:8010 (TLS)");
    }

    #[test]
    fn bad_spec_files_are_refused_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            specs: vec![t.path().to_path_buf()],
            ..Default::default()
        };
        for (file, body, why) in [
            ("x.spec", "http//nope", "neither"),
            ("y.json", "{", "EOF"),
            (
                "z.json",
                r#"{"Name":"other","Addr":"tcp://a:1"}"#,
                "not \"z\"",
            ),
            (
                "w.json",
                r#"{"Addr":"unix:///a.sock","TLSConfig":{"CAFile":"/x"}}"#,
                "TLSConfig needs a tcp://",
            ),
        ] {
            std::fs::write(t.path().join(file), body).unwrap();
            let name = file.split('.').next().unwrap();
            let e = dirs.find(name).unwrap_err().to_string();
            assert!(e.contains(file) && e.contains(why), "{file}: {e}");
        }
    }
}
