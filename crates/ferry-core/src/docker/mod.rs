//! The Docker Engine API 1.41 shapes ferryd speaks, field for field as dockerd 20.10
//! answers them (../shared/fixtures/docker-engine-api/). Requests accept and ignore
//! unknown fields, since newer clients send fields 1.41 does not know.

pub mod container;
pub mod duration;
pub mod network;
pub mod plugin;
pub mod run;

pub const API_VERSION: &str = "1.41";
pub const MIN_API_VERSION: &str = "1.12";
