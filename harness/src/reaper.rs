//! The reaper: a detached process that ends a shared cluster's run.
//!
//! The process that boots a run's cluster starts its own executable again with
//! `K3S_HARNESS_REAPER=<instance state dir>`. A constructor that runs before `main` sees the
//! variable and runs [`watch`] instead of the program, so any binary that links the harness (a
//! test binary, or the `k3s-harness` command) can be a reaper without a separate executable.
//! The reaper runs in its own process group, so the signals nextest sends to a test's group on
//! Ctrl-C or timeout do not reach it, and it holds none of the test's output pipes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::spec::DestroyPolicy;
use crate::state::{self, ClusterRecord, StateDir};
use crate::{booting, diagnostics};

/// Variable that turns a process that links the harness into a reaper for one instance.
const REAPER_ENV: &str = "K3S_HARNESS_REAPER";

/// Pause between two checks of the owner and the lease. Deleting the VM starts within this
/// long of the run's end.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Starts a reaper for the instance whose state directory is `dir`.
pub(crate) fn spawn(dir: &Path) -> Result<()> {
    let executable = std::env::current_exe()
        .map_err(|error| Error::io("find the current executable for the reaper", dir, error))?;
    let log_path = dir.join(state::REAPER_LOG_FILE);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|error| Error::io("open the reaper log", &log_path, error))?;

    let child = Command::new(&executable)
        .env(REAPER_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|error| Error::io("start the reaper", &executable, error))?;
    tracing::debug!(pid = child.id(), dir = %dir.display(), "started the reaper");
    Ok(())
}

/// Runs the reaper when this process was started as one, and exits afterwards.
#[ctor::ctor(unsafe)]
fn run_reaper_if_requested() {
    let Some(dir) = std::env::var_os(REAPER_ENV) else {
        return;
    };
    watch(Path::new(&dir));
    std::process::exit(0);
}

/// Waits until the run is over, then applies the destroy policy.
///
/// The run is over when the owner process is gone and no process holds a lease. The reaper
/// also exits when the state directory's record disappears (`k3s-harness down`, `gc`, or a
/// standalone test binary that ended its own run).
fn watch(dir: &Path) {
    log(&format!("watching {}", dir.display()));
    loop {
        let Some(record) = read_record(dir) else {
            log("the cluster record is gone; exiting");
            return;
        };
        if record.kept {
            log("the cluster is kept; exiting");
            return;
        }
        if !record.owner.is_alive() && !lease_held(dir) {
            log(&format!(
                "the run's owner (pid {}) is gone and no test holds a lease",
                record.owner.pid
            ));
            if end_run(dir) == RunEnd::LeaseTaken {
                log(
                    "a test process took a lease while the reaper waited for the lock; watching on",
                );
            } else {
                return;
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The outcome of [`end_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunEnd {
    /// The destroy policy was applied, or there was nothing left to apply it to.
    Done,
    /// A process took a lease while `end_run` waited for the lock, so the run is not over.
    LeaseTaken,
}

/// Applies the destroy policy to the instance in `dir`, under its lock.
///
/// The lease is checked again once the lock is held: a test process that was booting the
/// cluster holds the lock until it has taken its lease, and then the run is not over.
/// Failures are logged, because no caller is left to return them to.
pub(crate) fn end_run(dir: &Path) -> RunEnd {
    let lock_path = dir.join(state::LOCK_FILE);
    let Ok(lock) = state::open_lock_file(&lock_path) else {
        return RunEnd::Done;
    };
    if let Err(error) = lock.lock() {
        log(&format!("failed to lock {}: {error}", lock_path.display()));
        return RunEnd::Done;
    }
    if lease_held(dir) {
        return RunEnd::LeaseTaken;
    }
    let Some(mut record) = read_record(dir) else {
        return RunEnd::Done;
    };
    if record.kept || record.reuse {
        return RunEnd::Done;
    }

    let failed = dir.join(state::FAILED_FILE).exists();
    let keep = match record.destroy_policy {
        DestroyPolicy::Always => false,
        DestroyPolicy::OnSuccess => failed,
        DestroyPolicy::Never => true,
    };
    let state = StateDir::new(dir.parent().unwrap_or(dir).to_owned());

    if keep {
        record.kept = true;
        match state.write_record(&record) {
            Ok(()) => log(&format!(
                "keeping instance `{}` (destroy policy {}, a test failed: {failed}); delete it with \
                 `k3s-harness down {}`",
                record.instance, record.destroy_policy, record.instance
            )),
            Err(error) => log(&format!("failed to mark the cluster as kept: {error}")),
        }
        if failed {
            collect_diagnostics(&record, dir);
        }
        return RunEnd::Done;
    }

    log(&format!("deleting instance `{}`", record.instance));
    let deleted = lima_provisioner::InstanceName::new(&record.instance, &record.lima_home)
        .map_err(Error::from)
        .and_then(|name| {
            let agents = record.agent_names()?;
            Ok(booting::destroy_cluster(
                &record.provisioner(),
                &name,
                &agents,
                dir,
            )?)
        });
    match deleted {
        Ok(()) => {
            if let Err(error) = state.remove_instance_dir(&record.instance) {
                log(&format!("failed to remove the state directory: {error}"));
            } else {
                log("deleted");
            }
        }
        Err(error) => log(&format!(
            "failed to delete instance `{}`: {error}",
            record.instance
        )),
    }
    RunEnd::Done
}

/// Collects diagnostics of a kept instance at the end of a run with a failed test, and logs
/// where they are. The failed test's own namespaces are usually gone by now; the panic hook
/// collected those when the test failed.
fn collect_diagnostics(record: &ClusterRecord, dir: &Path) {
    let name = match lima_provisioner::InstanceName::new(&record.instance, &record.lima_home) {
        Ok(name) => name,
        Err(error) => {
            log(&format!("failed to collect diagnostics: {error}"));
            return;
        }
    };
    let provisioner = record.provisioner();
    let agents = record.agent_names().unwrap_or_default();
    let source = diagnostics::Source {
        limactl: provisioner.limactl(),
        instance: &name,
        agents: &agents,
        state_dir: dir,
    };
    log(&diagnostics::collect_and_describe(
        &source,
        diagnostics::Trigger::RunEnded,
    ));
}

/// Whether any process still holds its shared lock on the lease file.
pub(crate) fn lease_held(dir: &Path) -> bool {
    let path = dir.join(state::LEASE_FILE);
    let Ok(lease) = File::open(&path) else {
        return false;
    };
    match lease.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => true,
    }
}

fn read_record(dir: &Path) -> Option<ClusterRecord> {
    let name = dir.file_name()?.to_str()?;
    let state = StateDir::new(dir.parent()?.to_owned());
    state.read_record_opt(name).ok().flatten()
}

/// Appends a timestamped line to stderr, which the reaper's spawner points at `reaper.log`.
fn log(message: &str) {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs_f64())
        .unwrap_or_default();
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "[{seconds:.3}] pid {}: {message}",
        std::process::id()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_taken_during_wait_keeps_run() {
        let dir = tempfile::tempdir().unwrap();
        let lease = state::open_lock_file(&dir.path().join(state::LEASE_FILE)).unwrap();
        lease.lock_shared().unwrap();

        assert_eq!(end_run(dir.path()), RunEnd::LeaseTaken);
    }

    #[test]
    fn run_without_lease_or_record_ends() {
        let dir = tempfile::tempdir().unwrap();

        assert_eq!(end_run(dir.path()), RunEnd::Done);
    }
}
