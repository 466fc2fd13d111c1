//! Plans: each operation decided as a pure function over the [`State`](crate::state::State)
//! value, before anything is done.
//!
//! Design note. A planner checks the request with dockerd's rules, edits the state it is
//! given (allocations included: an address is taken in the pool, so the edit is the
//! reservation) and returns a plan value: the keys of the records it edited, which
//! ferryd commits as one store transaction, and the kernel's work as typed requests
//! ([`crate::wiring`]) with what an undo needs. It does no I/O and makes no IDs or
//! clocks of its own (the caller passes them in), so a plan is tested as a value,
//! without root, a kernel or a store. The executor in ferryd saves the records the plan
//! names, runs the planner, commits, and puts the saved records back if the planner,
//! the store or the kernel refuses; it is the only place that protocol is written.

pub mod attach;
pub mod connect;
pub mod docker;
pub mod driver;
pub mod gateway_service;
pub mod network;
pub mod publish;
pub mod sandbox;

#[cfg(test)]
mod tests;
