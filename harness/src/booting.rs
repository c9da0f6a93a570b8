//! The `booting` marker: which process boots an instance, and which `limactl start` it runs.
//!
//! `limactl start` leads its own process group, so it survives the death of the process that
//! ran it and goes on creating the instance. A `limactl delete` that runs beside it can leave a
//! second VM behind under the same name. So every path that deletes a half-booted instance (the
//! next process of the run, the reaper, `k3s-harness gc` and `down`, an interrupted `up`) first
//! kills that `limactl start`.

use std::path::Path;
use std::time::{Duration, Instant};

use lima_provisioner::{InstanceName, Provisioner};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run::ProcessId;
use crate::state::BOOTING_FILE;

/// How long to wait for a killed `limactl start` to be gone.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two checks of whether the killed process is gone.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Contents of `<state dir>/<instance>/booting`, present while an instance boots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BootingMarker {
    /// The harness process that boots the instance.
    pub(crate) booter: ProcessId,
    /// Its `limactl start`, once that runs.
    pub(crate) limactl_start: Option<ProcessId>,
    /// The `limactl start` of each agent of a multi-node cluster, once they run.
    #[serde(default)]
    pub(crate) agent_starts: Vec<ProcessId>,
}

impl BootingMarker {
    /// Returns the marker of a boot by this process that has not started limactl yet.
    pub(crate) fn for_this_process() -> Self {
        BootingMarker {
            booter: ProcessId::current(),
            limactl_start: None,
            agent_starts: Vec::new(),
        }
    }

    /// Writes the marker into the instance directory `dir`, replacing any earlier one at once.
    /// The marker is removed when the returned guard drops, at the end of the boot.
    pub(crate) fn write(&self, dir: &Path) -> Result<MarkerGuard> {
        self.replace(dir)?;
        Ok(MarkerGuard {
            path: dir.join(BOOTING_FILE),
        })
    }

    /// Replaces the marker in `dir` without a new guard, as a boot in progress does when its
    /// `limactl start` runs.
    pub(crate) fn replace(&self, dir: &Path) -> Result<()> {
        let path = dir.join(BOOTING_FILE);
        let temporary = dir.join(format!("{BOOTING_FILE}.tmp"));
        let json = serde_json::to_vec(self).expect("a booting marker always serialises");
        std::fs::write(&temporary, json)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|error| Error::io("write the booting marker", path, error))
    }

    /// Reads the marker in `dir`. Returns `None` when there is none or it cannot be parsed.
    pub(crate) fn read(dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(dir.join(BOOTING_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Removes the booting marker when the boot that wrote it ends, however it ends.
#[must_use = "the marker is removed as soon as the guard drops"]
pub(crate) struct MarkerGuard {
    path: std::path::PathBuf,
}

impl Drop for MarkerGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Kills every `limactl start` that the marker in `dir` names (the server's and the agents')
/// that still runs, and waits up to [`EXIT_TIMEOUT`] for them to be gone. Returns how many were
/// killed.
///
/// The recorded start time guards against a reused pid: a different process with the same pid
/// is never signalled. The whole process group gets SIGKILL, since `limactl start` leads it.
pub(crate) fn stop_abandoned_start(dir: &Path) -> usize {
    let Some(marker) = BootingMarker::read(dir) else {
        return 0;
    };
    let running: Vec<ProcessId> = marker
        .limactl_start
        .into_iter()
        .chain(marker.agent_starts)
        .filter(ProcessId::is_alive)
        .collect();

    for start in &running {
        let Ok(group) = i32::try_from(start.pid) else {
            continue;
        };
        tracing::warn!(
            pid = start.pid,
            "killing a `limactl start` whose booting process is gone"
        );
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while running.iter().any(ProcessId::is_alive) && Instant::now() < deadline {
        std::thread::sleep(POLL_INTERVAL);
    }
    running.len()
}

/// Deletes the cluster whose server is `name`: first every abandoned `limactl start` recorded
/// in the state directory `dir` is killed, then the `agents` are deleted, then the server.
///
/// # Errors
///
/// As for [`Provisioner::destroy`]. The server is deleted even when an agent was not.
pub(crate) fn destroy_cluster(
    provisioner: &Provisioner,
    name: &InstanceName,
    agents: &[InstanceName],
    dir: &Path,
) -> lima_provisioner::Result<()> {
    stop_abandoned_start(dir);
    crate::nodes::destroy_nodes(provisioner, name, agents)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn marker_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let marker = BootingMarker {
            booter: ProcessId::current(),
            limactl_start: Some(ProcessId {
                pid: 42,
                start_time: 7,
            }),
            agent_starts: Vec::new(),
        };

        let guard = marker.write(dir.path()).unwrap();

        assert_eq!(BootingMarker::read(dir.path()), Some(marker));
        drop(guard);
        assert_eq!(BootingMarker::read(dir.path()), None);
    }

    #[test]
    fn recorded_start_and_its_group_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let mut leader = Command::new("sh")
            .arg("-c")
            .arg(r#"sleep 60 & echo $! > "$0"; wait"#)
            .arg(&started)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let member = wait_for_pid_file(&started);
        let marker = BootingMarker {
            booter: ProcessId::current(),
            limactl_start: ProcessId::of(leader.id()),
            agent_starts: Vec::new(),
        };
        let _guard = marker.write(dir.path()).unwrap();

        let killer = std::thread::spawn({
            let dir = dir.path().to_owned();
            move || stop_abandoned_start(&dir)
        });
        let status = leader.wait().unwrap();

        assert_eq!(
            killer.join().unwrap(),
            1,
            "the recorded process was running"
        );
        assert!(!status.success());
        let member_gone = (0..500).any(|_| {
            std::thread::sleep(POLL_INTERVAL);
            ProcessId::of(member).is_none()
        });
        assert!(member_gone, "the group member {member} still runs");
    }

    #[test]
    fn reused_pid_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let this = ProcessId::current();
        let marker = BootingMarker {
            booter: this,
            limactl_start: Some(ProcessId {
                pid: this.pid,
                start_time: this.start_time + 1,
            }),
            agent_starts: Vec::new(),
        };
        let _guard = marker.write(dir.path()).unwrap();

        assert_eq!(stop_abandoned_start(dir.path()), 0);
    }

    #[test]
    fn no_marker_means_nothing_to_stop() {
        let dir = tempfile::tempdir().unwrap();

        assert_eq!(stop_abandoned_start(dir.path()), 0);
    }

    /// Waits for `path` to hold a pid, written by the child under test.
    fn wait_for_pid_file(path: &Path) -> u32 {
        for _ in 0..500 {
            if let Some(pid) = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                return pid;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        panic!("{} never held a pid", path.display());
    }
}
