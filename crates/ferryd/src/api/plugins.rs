//! `GET /ferry/plugins` (`ferry plugin ls`): every plugin the discovery directories
//! name, where it was found, and whether it answers `Plugin.Activate` now (one bounded
//! probe each; nothing is cached and no capability is asked).

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use ferry_kernel::KernelOps;
use serde_json::{json, Value};

use crate::ops::Daemon;
use crate::plughost::{call_once, Conf, Found, PluginError};

async fn probe(conf: &Conf, f: &Found) -> Value {
    match call_once(conf, &f.name, &f.addr, "Plugin.Activate", None, "Err").await {
        Ok(v) => json!({
            "Name": f.name,
            "Addr": f.addr.to_string(),
            "Source": f.source.display().to_string(),
            "Implements": v.get("Implements").cloned().unwrap_or(json!([])),
            "Answered": true,
            "Error": "",
        }),
        Err(e) => json!({
            "Name": f.name,
            "Addr": f.addr.to_string(),
            "Source": f.source.display().to_string(),
            "Implements": [],
            "Answered": false,
            "Error": e.to_string(),
        }),
    }
}

pub async fn list<K: KernelOps>(State(d): State<Arc<Daemon<K>>>) -> impl IntoResponse {
    let conf = &d.cfg.plughost;
    let mut out = vec![];
    for found in conf.dirs.scan() {
        out.push(match found {
            Ok(f) => probe(conf, &f).await,
            Err(e @ PluginError::BadSpec { .. }) => json!({
                "Name": "", "Addr": "", "Source": match &e {
                    PluginError::BadSpec { path, .. } => path.display().to_string(),
                    _ => String::new(),
                },
                "Implements": [], "Answered": false, "Error": e.to_string(),
            }),
            Err(e) => json!({"Name": "", "Addr": "", "Source": "", "Implements": [],
                             "Answered": false, "Error": e.to_string()}),
        });
    }
    Json(out)
}
