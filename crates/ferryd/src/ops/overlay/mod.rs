//! The daemon's side of the overlay (see crate::overlay for the design): joining the
//! cluster and its tasks (`agent`), keeping the tunnel entries as the view says
//! (`entries`), and the operations on overlay networks (`network`).

mod agent;
mod entries;
mod network;

pub use agent::join;
