//! ferry's embedded DNS responder.
//!
//! * [`table`] — the pure part: a [`Table`] built from plain data and changed
//!   record by record, and [`lookup`], a pure function of (table, asker address,
//!   name, type).
//! * [`packet`] — one query packet → reply, forward or drop; never panics on input.
//! * [`forward`] — the upstream forwarder: UDP, TCP when truncated, one deadline.
//! * [`server`] — the sockets: UDP and TCP per listen address, one shared table
//!   swapped whole on change.

pub mod forward;
pub mod packet;
pub mod server;
pub mod table;

pub use forward::Forwarder;
pub use packet::{handle, Action, Transport};
pub use server::{DnsError, Server};
pub use table::{lookup, Answer, Membership, SandboxRecord, Table, TTL};
