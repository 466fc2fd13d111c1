//! Where the binaries under test are: next to the test binary's `deps/` directory, or in
//! `FERRY_BIN_DIR`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The busybox the sandboxes run (Debian's busybox-static; sandboxes run the host's binaries).
pub const BUSYBOX: &str = "/bin/busybox";

/// The directory holding `ferryd` and `ferry`: `$FERRY_BIN_DIR`, else the parent of the test
/// binary's directory (`target/debug/deps/NAME-hash` → `target/debug`).
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FERRY_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("find the test binary")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("no target directory above {}", exe.display()))?;
    Ok(dir.to_path_buf())
}

/// Paths of the binaries a scenario runs.
#[derive(Debug, Clone)]
pub struct Bins {
    pub ferryd: PathBuf,
    pub ferry: PathBuf,
    /// The traffic helper (src/bin/ferry-probe.rs).
    pub probe: PathBuf,
}

impl Bins {
    pub fn locate() -> Result<Bins> {
        let dir = bin_dir()?;
        let bins = Bins {
            ferryd: dir.join("ferryd"),
            ferry: dir.join("ferry"),
            probe: dir.join("ferry-probe"),
        };
        for bin in [&bins.ferryd, &bins.ferry, &bins.probe] {
            if !bin.is_file() {
                bail!(
                    "{} does not exist: run `cargo build --workspace` first (or set FERRY_BIN_DIR)",
                    bin.display()
                );
            }
        }
        if !Path::new(BUSYBOX).is_file() {
            bail!("{BUSYBOX} does not exist: install Debian's busybox-static (scripts/setup does)");
        }
        Ok(bins)
    }
}
