//! The real `docker` CLI, pointed at a TestHost's ferryd with its own DOCKER_CONFIG.

use crate::cmd::{run_bounded, Output};
use crate::host::{TestHost, CLI_TIMEOUT};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct DockerCli {
    bin: PathBuf,
    config: PathBuf,
    host_url: String,
}

impl DockerCli {
    /// /usr/local/bin/docker, else `docker` on PATH. When there is none, reports a skip and
    /// returns None — or panics when `CI` is set or the run is root (`scripts/setup`
    /// installs docker.io, so a missing CLI is a broken setup).
    pub fn find_or_skip(scenario: &str) -> Option<PathBuf> {
        let preferred = PathBuf::from("/usr/local/bin/docker");
        let found = if preferred.is_file() {
            Some(preferred)
        } else {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("docker"))
                    .find(|p| p.is_file())
            })
        };
        if found.is_none() {
            if !crate::may_skip_missing_program() {
                panic!("{scenario}: no docker CLI (/usr/local/bin/docker or on PATH); scripts/setup installs it (docker.io), and as root or under CI this may not be skipped");
            }
            crate::skip(scenario, "no docker CLI (/usr/local/bin/docker or on PATH)");
        }
        found
    }

    /// A docker CLI for `host`: DOCKER_HOST is its socket, DOCKER_CONFIG a fresh directory
    /// under its root.
    pub fn new(host: &TestHost, bin: &Path) -> Result<DockerCli> {
        let config = host.root().join("docker-config");
        std::fs::create_dir_all(&config).with_context(|| format!("create {}", config.display()))?;
        Ok(DockerCli {
            bin: bin.to_path_buf(),
            config,
            host_url: host.host_url(),
        })
    }

    /// `docker ARGS…`, bounded; any exit status is Ok.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("DOCKER_HOST", &self.host_url)
            .env("DOCKER_CONFIG", &self.config)
            .env("DOCKER_CLI_HINTS", "false")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        run_bounded(&mut cmd, CLI_TIMEOUT)
    }

    /// `docker ARGS…` that must succeed; its trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        Ok(self.run(args)?.expect_success()?.out().to_string())
    }
}
