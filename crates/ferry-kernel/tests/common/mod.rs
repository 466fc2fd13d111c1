//! What ferry-kernel's privileged tests share: the root check and a network namespace
//! of the test's own.

use std::path::PathBuf;

/// True as root; otherwise a skip (a failure when CI is set, which runs as root).
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs root for ferry-kernel's {test} test"
    );
    // The testkit's skip marker (this crate does not depend on it): scripts/test counts
    // these lines as skipped, not passed. Written to stderr directly, past the capture.
    use std::io::Write;
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("\nSKIP ferry-kernel-{test}: needs root\n").as_bytes());
    false
}

/// Run `scenario` on a thread of its own in a network namespace of its own (which takes
/// everything made in it along when the thread ends), with a temporary directory, on a
/// runtime of `workers` threads (1: the current thread only, as in one of ferryd's
/// tasks; more: as ferryd's tasks together); skipped without root.
pub fn in_own_netns<F, Fut>(test: &str, workers: usize, scenario: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if !privileged(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let mut runtime = match workers {
            1 => tokio::runtime::Builder::new_current_thread(),
            n => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
        };
        runtime
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(scenario(path))
    })
    .join()
    .expect("scenario");
}
