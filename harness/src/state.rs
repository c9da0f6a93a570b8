//! Where the harness keeps per-instance files on the host.
//!
//! `<state dir>/<instance>/` contains the rewritten kubeconfig (`kubeconfig.yaml`, mode 0600),
//! `cluster.json` (the [`ClusterRecord`], which lets other processes find and attach to the
//! cluster), `lock` (held exclusively while a process boots or inspects the instance), `lease`
//! (held shared by every process attached to a run's cluster), `booting` (the process that is
//! booting the instance and its `limactl start`), `failed` (present once a test of the run has
//! failed), `reaper.log`, and `diagnostics/`. The last contains collections of logs and cluster
//! state, which outlive the instance: removing the instance's state keeps them, and the user
//! deletes them.
//! The state dir is `K3S_HARNESS_STATE_DIR`, else
//! `$XDG_STATE_HOME/k3s-harness`,
//! else `~/.local/state/k3s-harness`; it is created with mode 0700 because kubeconfigs carry
//! client keys.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use lima_provisioner::{InstanceName, Limactl, Provisioner};
use serde::{Deserialize, Serialize};

use crate::diagnostics::DIAGNOSTICS_DIR;
use crate::error::{Error, Result};
use crate::run::ProcessId;
use crate::spec::DestroyPolicy;

/// Name of the rewritten kubeconfig inside an instance's state directory.
const KUBECONFIG_FILE: &str = "kubeconfig.yaml";

/// Name of the record of a started cluster inside an instance's state directory.
const RECORD_FILE: &str = "cluster.json";

/// Name of the file locked exclusively while a process boots or inspects the instance.
pub(crate) const LOCK_FILE: &str = "lock";

/// Name of the file that every attached process holds a shared lock on.
pub(crate) const LEASE_FILE: &str = "lease";

/// Name of the marker that names the process booting the instance; see [`crate::booting`].
pub(crate) const BOOTING_FILE: &str = "booting";

/// Name of the marker written when a test of the run fails.
pub(crate) const FAILED_FILE: &str = "failed";

/// Name of the reaper's log.
pub(crate) const REAPER_LOG_FILE: &str = "reaper.log";

/// The root of the harness's state on this host.
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Uses `root`, made absolute against the current directory: the processes of a run (test
    /// binaries of several crates, the reaper) start in different directories and must all
    /// find the same files.
    pub(crate) fn new(root: PathBuf) -> Self {
        let root = std::path::absolute(&root).unwrap_or(root);
        StateDir { root }
    }

    /// Resolves the state directory from the environment without creating it.
    pub(crate) fn from_env() -> Result<Self> {
        let lookup = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let root = if let Some(dir) = lookup("K3S_HARNESS_STATE_DIR") {
            PathBuf::from(dir)
        } else if let Some(dir) = lookup("XDG_STATE_HOME") {
            PathBuf::from(dir).join("k3s-harness")
        } else if let Some(home) = lookup("HOME") {
            PathBuf::from(home).join(".local/state/k3s-harness")
        } else {
            return Err(Error::InvalidConfig {
                name: "K3S_HARNESS_STATE_DIR".to_owned(),
                value: String::new(),
                reason: "HOME is not set either; set K3S_HARNESS_STATE_DIR to a private \
                         directory"
                    .to_owned(),
            });
        };
        Ok(StateDir::new(root))
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one instance (not created).
    pub(crate) fn instance_dir(&self, instance: &str) -> PathBuf {
        self.root.join(instance)
    }

    /// Creates the instance's directory (and the root) with mode 0700.
    pub(crate) fn create_instance_dir(&self, instance: &str) -> Result<PathBuf> {
        create_private_dir(&self.root)?;
        let dir = self.instance_dir(instance);
        create_private_dir(&dir)?;
        Ok(dir)
    }

    /// Removes an instance's directory, but keeps its `diagnostics` directory and so the
    /// instance directory around it, because errors and hints print paths into it. A missing
    /// directory is not an error.
    pub(crate) fn remove_instance_dir(&self, instance: &str) -> Result<()> {
        let dir = self.instance_dir(instance);
        if !dir.join(DIAGNOSTICS_DIR).is_dir() {
            return match fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(Error::io("remove the state directory", dir, error)),
            };
        }

        let entries = fs::read_dir(&dir)
            .map_err(|error| Error::io("list the state directory", &dir, error))?;
        for entry in entries {
            let entry =
                entry.map_err(|error| Error::io("list the state directory", &dir, error))?;
            if entry.file_name() == DIAGNOSTICS_DIR {
                continue;
            }
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(file_type) if file_type.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            match removed {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Error::io("remove", path, error)),
            }
        }
        Ok(())
    }

    /// Returns whether the instance's directory contains files of a cluster, that is anything
    /// but collected diagnostics and the lock file (which `k3s-harness gc` creates when it
    /// inspects a directory).
    pub(crate) fn holds_cluster_files(&self, instance: &str) -> bool {
        let Ok(entries) = fs::read_dir(self.instance_dir(instance)) else {
            return false;
        };
        entries.filter_map(|entry| entry.ok()).any(|entry| {
            let name = entry.file_name();
            name != DIAGNOSTICS_DIR && name != LOCK_FILE
        })
    }

    /// Returns whether only collected diagnostics (and possibly the lock file) are left of the
    /// instance.
    pub(crate) fn holds_only_diagnostics(&self, instance: &str) -> bool {
        self.instance_dir(instance).join(DIAGNOSTICS_DIR).is_dir()
            && !self.holds_cluster_files(instance)
    }

    pub(crate) fn kubeconfig_path(&self, instance: &str) -> PathBuf {
        self.instance_dir(instance).join(KUBECONFIG_FILE)
    }

    /// Writes the record of a started cluster.
    pub(crate) fn write_record(&self, record: &ClusterRecord) -> Result<()> {
        let path = self.instance_dir(&record.instance).join(RECORD_FILE);
        let json = serde_json::to_vec_pretty(record).expect("a record always serialises");
        let temporary = path.with_extension("json.tmp");
        fs::write(&temporary, json)
            .and_then(|()| fs::rename(&temporary, &path))
            .map_err(|error| Error::io("write the cluster record", path, error))
    }

    /// Reads the record of instance `instance`, or `None` when there is none.
    pub(crate) fn read_record_opt(&self, instance: &str) -> Result<Option<ClusterRecord>> {
        match self.read_record(instance) {
            Ok(record) => Ok(Some(record)),
            Err(Error::UnknownInstance { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Removes the record (and the kubeconfig) but keeps the directory and its lock file, so
    /// processes waiting on the lock keep waiting on the same file.
    pub(crate) fn remove_record(&self, instance: &str) -> Result<()> {
        let imported = self.instance_dir(instance).join("imported");
        match fs::remove_dir_all(&imported) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(Error::io("remove", imported, error)),
        }
        for file in [RECORD_FILE, KUBECONFIG_FILE, FAILED_FILE, BOOTING_FILE] {
            let path = self.instance_dir(instance).join(file);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Error::io("remove", path, error)),
            }
        }
        Ok(())
    }

    /// Names of the instance directories under the root; an absent root has none.
    pub(crate) fn instance_names(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().into_string().ok())
            // The image digest cache lives beside the instances and is not one.
            .filter(|name| name != crate::image::record::DIGEST_CACHE_DIR)
            .collect();
        names.sort();
        names
    }

    /// Reads the record of instance `instance`.
    pub(crate) fn read_record(&self, instance: &str) -> Result<ClusterRecord> {
        let path = self.instance_dir(instance).join(RECORD_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::UnknownInstance {
                    instance: instance.to_owned(),
                    state_dir: self.root.clone(),
                });
            }
            Err(error) => return Err(Error::io("read the cluster record", path, error)),
        };
        serde_json::from_slice(&bytes).map_err(|error| {
            Error::io(
                "parse the cluster record",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, error),
            )
        })
    }
}

/// The harness's record of a cluster it started: enough for another process to attach to it,
/// and for the reaper and `k3s-harness gc` to decide when to delete it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ClusterRecord {
    pub(crate) instance: String,
    pub(crate) limactl: PathBuf,
    pub(crate) lima_home: PathBuf,
    /// Extra variables for every limactl call, as the spec set them.
    #[serde(default)]
    pub(crate) limactl_env: Vec<(String, String)>,
    pub(crate) api_port: u16,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) fingerprint: String,
    pub(crate) platform: String,
    /// The process whose exit ends the run; the cluster may be deleted once it is gone.
    pub(crate) owner: ProcessId,
    /// The test run that shares the cluster, for clusters from `Cluster::shared`.
    pub(crate) run_key: Option<String>,
    pub(crate) destroy_policy: DestroyPolicy,
    pub(crate) reuse: bool,
    /// Set when the cluster outlives its run on purpose (destroy policy or `k3s-harness up`),
    /// so neither the reaper nor `k3s-harness gc` deletes it.
    pub(crate) kept: bool,
    /// False while the VM boots: the record is written before `limactl start`, so `down` and
    /// `gc` can delete a VM whose booting process was killed, and other processes never attach
    /// to a cluster that is not ready.
    #[serde(default = "ready_by_default")]
    pub(crate) ready: bool,
    /// The agents' instance names of a multi-node cluster, in node order; `instance` is the
    /// server. Written before the first `limactl start`, like the rest of the record.
    #[serde(default)]
    pub(crate) agents: Vec<String>,
}

fn ready_by_default() -> bool {
    true
}

impl ClusterRecord {
    /// Builds the provisioner that reaches this cluster's instance.
    pub(crate) fn provisioner(&self) -> Provisioner {
        let mut limactl = Limactl::new(&self.limactl).with_lima_home(&self.lima_home);
        for (key, value) in &self.limactl_env {
            limactl = limactl.with_env(key, value);
        }
        Provisioner::new(limactl)
    }

    /// Returns the agents' instance names, validated against the record's Lima home.
    pub(crate) fn agent_names(&self) -> Result<Vec<InstanceName>> {
        self.agents
            .iter()
            .map(|agent| Ok(InstanceName::new(agent, &self.lima_home)?))
            .collect()
    }
}

/// Opens (creating it if needed) a lock file in an instance's state directory.
pub(crate) fn open_lock_file(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|error| Error::io("open the lock file", path, error))
}

fn create_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(error) => return Err(Error::io("create the state directory", dir, error)),
    }
    // `recursive(true)` leaves an existing directory's mode alone, so tighten it explicitly.
    let metadata =
        fs::metadata(dir).map_err(|error| Error::io("inspect the state directory", dir, error))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|error| Error::io("restrict the state directory to its owner", dir, error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_root_made_absolute() {
        let state = StateDir::new(PathBuf::from("target/state"));

        assert!(state.root().is_absolute());
        assert_eq!(
            state.root(),
            std::env::current_dir().unwrap().join("target/state")
        );
    }

    #[test]
    fn instance_dir_is_private() {
        let temporary = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: temporary.path().join("state"),
        };

        let dir = state.create_instance_dir("k3sh-a").unwrap();

        for path in [state.root(), dir.as_path()] {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", path.display());
        }
    }

    #[test]
    fn record_round_trips_and_missing_is_unknown_instance() {
        let temporary = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: temporary.path().to_owned(),
        };
        state.create_instance_dir("k3sh-a").unwrap();
        let record = ClusterRecord {
            instance: "k3sh-a".to_owned(),
            limactl: "limactl".into(),
            lima_home: "/lima".into(),
            limactl_env: Vec::new(),
            api_port: 16443,
            kubeconfig: state.kubeconfig_path("k3sh-a"),
            fingerprint: "0011aabb".to_owned(),
            platform: "linux/amd64".to_owned(),
            owner: ProcessId::current(),
            run_key: None,
            destroy_policy: DestroyPolicy::Always,
            reuse: false,
            kept: false,
            ready: true,
            agents: vec!["k3sh-a-a1".to_owned()],
        };

        state.write_record(&record).unwrap();
        let reread = state.read_record("k3sh-a").unwrap();
        assert_eq!(reread.api_port, 16443);
        assert_eq!(reread.kubeconfig, record.kubeconfig);

        let error = state.read_record("k3sh-b").unwrap_err();
        assert!(matches!(error, Error::UnknownInstance { .. }), "{error}");
    }

    #[test]
    fn removing_instance_dir_keeps_diagnostics() {
        let temporary = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: temporary.path().to_owned(),
        };
        let dir = state.create_instance_dir("k3sh-a").unwrap();
        fs::write(dir.join(RECORD_FILE), "{}").unwrap();
        fs::write(dir.join(LOCK_FILE), "").unwrap();
        fs::create_dir_all(dir.join("imported")).unwrap();
        let collection = dir
            .join(DIAGNOSTICS_DIR)
            .join("20261204T234138Z-requested-1");
        fs::create_dir_all(&collection).unwrap();
        fs::write(collection.join("host-agent.log"), "log\n").unwrap();
        assert!(state.holds_cluster_files("k3sh-a"));

        state.remove_instance_dir("k3sh-a").unwrap();

        assert!(collection.join("host-agent.log").is_file());
        let mut left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, [DIAGNOSTICS_DIR]);
        assert!(!state.holds_cluster_files("k3sh-a"));
        assert!(state.holds_only_diagnostics("k3sh-a"));
    }

    #[test]
    fn removing_instance_dir_without_diagnostics_removes_it() {
        let temporary = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: temporary.path().to_owned(),
        };
        let dir = state.create_instance_dir("k3sh-a").unwrap();
        fs::write(dir.join(RECORD_FILE), "{}").unwrap();

        state.remove_instance_dir("k3sh-a").unwrap();

        assert!(!dir.exists());
    }

    #[test]
    fn removing_missing_instance_dir_succeeds() {
        let temporary = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: temporary.path().to_owned(),
        };

        state.remove_instance_dir("never-created").unwrap();
    }
}
