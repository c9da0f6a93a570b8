//! Diagnostics of a cluster that failed: the evidence attached to start errors, and the
//! directories of logs and cluster state collected when a start fails, when a test fails on a VM
//! that is kept, and on request (`Cluster::dump_diagnostics`, `k3s-harness logs`).
//!
//! A collection lives in `<state dir>/<instance>/diagnostics/<UTC time>-<trigger>-<pid>/`; see
//! [`collect::collect`] for its contents. Removing an instance's state keeps its `diagnostics`
//! directory, so that the paths printed in errors and hints stay valid after the VM is gone.

mod collect;
mod logs_command;
mod redact;
mod tail;

pub(crate) use collect::rfc3339_utc;
pub(crate) use collect::{
    DIAGNOSTICS_DIR, Source, Trigger, collect, collect_and_describe, on_collector_thread,
};
pub(crate) use logs_command::collect_named;
pub(crate) use tail::serial_log_tail;
