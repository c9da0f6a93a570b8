//! Deleting harness clusters that outlived their run: `k3s-harness gc` and the sweep that runs
//! before a shared cluster is acquired.
//!
//! A cluster is collected only when the harness has a record of it (so instances the harness
//! did not create are never touched), its owner process is gone, no process holds its lock or a
//! lease on it, and it is neither kept by its destroy policy nor reused across runs. Normally its
//! reaper deletes it; this catches the runs whose reaper was killed too.

use std::fs::TryLockError;

use lima_provisioner::InstanceName;

use crate::booting;
use crate::error::{Error, Result};
use crate::reaper;
use crate::state::{self, StateDir};

/// The outcome of one collection.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Instances deleted.
    pub deleted: Vec<String>,
    /// Instances left alone, with the reason.
    pub kept: Vec<(String, String)>,
    /// Instances whose deletion failed, with the error.
    pub failed: Vec<(String, String)>,
}

/// Collects every orphaned cluster recorded under `state`.
pub(crate) fn collect(state: &StateDir) -> GcReport {
    let mut report = GcReport::default();
    for name in state.instance_names() {
        match collect_one(state, &name) {
            Ok(None) => report.deleted.push(name),
            Ok(Some(reason)) => report.kept.push((name, reason)),
            Err(error) => report.failed.push((name, error.to_string())),
        }
    }
    report
}

/// Runs [`collect`] and logs what it deleted; failures are logged, not returned, because the
/// sweep must not stop a test from getting its cluster.
pub(crate) fn sweep(state: &StateDir) {
    let report = collect(state);
    for name in &report.deleted {
        tracing::info!(instance = %name, "deleted a harness cluster whose run had ended");
    }
    for (name, error) in &report.failed {
        tracing::warn!(instance = %name, %error, "failed to delete a harness cluster whose run had ended");
    }
}

/// Deletes one instance if it is orphaned; returns why it was kept otherwise.
fn collect_one(state: &StateDir, name: &str) -> Result<Option<String>> {
    let dir = state.instance_dir(name);
    let lock_path = dir.join(state::LOCK_FILE);
    let lock = state::open_lock_file(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Ok(Some("a process is booting or using it".to_owned()));
        }
        Err(TryLockError::Error(error)) => {
            return Err(Error::io("lock", lock_path, error));
        }
    }

    let Some(record) = state.read_record_opt(name)? else {
        if state.holds_only_diagnostics(name) {
            return Ok(Some(format!(
                "only its diagnostics are left; delete {} when you no longer need them",
                dir.display()
            )));
        }
        return Ok(Some("no harness record".to_owned()));
    };
    if record.kept {
        return Ok(Some(
            "kept by its destroy policy or `k3s-harness up`".to_owned(),
        ));
    }
    if record.reuse {
        return Ok(Some("reused across runs".to_owned()));
    }
    if record.owner.is_alive() {
        return Ok(Some(format!(
            "its owner process {} is running",
            record.owner.pid
        )));
    }
    if reaper::lease_held(&dir) {
        return Ok(Some("a test process still holds a lease".to_owned()));
    }

    let instance = InstanceName::new(name, &record.lima_home)?;
    booting::destroy_cluster(
        &record.provisioner(),
        &instance,
        &record.agent_names()?,
        &dir,
    )?;
    drop(lock);
    state.remove_instance_dir(name)?;
    Ok(None)
}
