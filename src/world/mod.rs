//! The simulated world: a queue, the workers that drain it, and the
//! arrivals that fill it.
//!
//! Two very different users need the same model of a queue and its workers:
//! the policy simulator (the `qscale simulate` command), which
//! replays a trace in virtual time, and the `demo` source and target, which
//! run the daemon for real on a laptop with no cloud account. Both live
//! above this module; this module imports nothing from the rest of the
//! crate, so the demo adapters never depend on the simulator command.
//!
//! - [`trace`]: arrivals second by second, from a CSV or a generated pattern;
//! - [`model`]: the queue-and-workers model (pods that start, take one
//!   message at a time, and stop gracefully);
//! - [`demo`]: the model advanced in real time, in a registry shared by the
//!   demo source and target of one process.

pub mod demo;
pub mod model;
pub mod trace;

pub use demo::{DemoQueue, DemoWorld};
