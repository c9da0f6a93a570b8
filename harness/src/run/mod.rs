//! Identity of the current test run and liveness of the process that owns it.
//!
//! Every process of one test run (a nextest run, a `cargo test` invocation, or a test binary
//! run directly) computes the same run key, and the run ends when the owner process exits.

mod key;
mod process;

pub use key::Run;
pub use process::ProcessId;
