//! `ferry system cleanup` on the recording kernel fake: what it could not remove, it says.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;
use common::{fake_daemon, with_overlay_copy, OV};
use ferry_core::model::overlay_if_names;

/// An overlay's local copy goes with cleanup (its record, its VXLAN device and bridge);
/// when the kernel refuses one of the devices, the other still goes and cleanup's error
/// names the overlay and the failure. It used to be only logged: cleanup said it had
/// left nothing behind while the device stayed.
#[tokio::test]
async fn cleanup_names_an_overlay_copy_it_could_not_remove() {
    let (bridge, vxlan) = overlay_if_names(OV);
    let delete = |dev: &ferry_core::IfName| format!("delete {dev}");

    // Control: nothing refused, nothing reported, both devices deleted.
    let dir = tempfile::tempdir().unwrap();
    let d = fake_daemon(&dir).await;
    with_overlay_copy(&d).await;
    let res = d.cleanup().await;
    assert!(res.is_ok(), "a clean cleanup reports nothing: {res:?}");
    let lines = d.kernel.lines();
    for dev in [&vxlan, &bridge] {
        assert!(lines.contains(&delete(dev)), "{dev} not deleted: {lines:?}");
    }
    assert!(!d.state.lock().await.networks.contains_key(OV));

    // The VXLAN device refused.
    let dir = tempfile::tempdir().unwrap();
    let d = fake_daemon(&dir).await;
    with_overlay_copy(&d).await;
    *d.kernel.fail_on.lock().unwrap() = Some(delete(&vxlan));
    let err = d
        .cleanup()
        .await
        .expect_err("the refused device is reported");
    let msg = err.to_string();
    assert!(
        msg.contains("overlay ov is removed from the cluster, but this host's copy is left")
            && msg.contains("injected failure"),
        "cleanup's error names the overlay and the cause: {msg}"
    );
    let lines = d.kernel.lines();
    assert!(
        lines.contains(&delete(&bridge)),
        "the bridge goes all the same: {lines:?}"
    );
    assert!(!d.state.lock().await.networks.contains_key(OV));
}
