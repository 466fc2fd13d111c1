//! A sandbox's files (hostname, hosts, resolv.conf), which its processes see bind-mounted
//! over /etc: rewritten in place, so the mounts (by inode) see every change.

use std::path::Path;

use crate::KernelError;

/// Write `contents` to `path` (truncating it in place), making its directory.
pub fn write_in_place(path: &Path, contents: &str) -> Result<(), KernelError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| KernelError::io("create dir", dir.display().to_string(), e))?;
    }
    std::fs::write(path, contents).map_err(|e| KernelError::io("write", shown, e))
}
