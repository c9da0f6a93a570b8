//! Where the harness keeps per-instance files on the host.
//!
//! `<state dir>/<instance>/` holds the rewritten kubeconfig (`kubeconfig.yaml`, mode 0600) and
//! `cluster.json`, which lets another process (the `k3s-harness` CLI) find a cluster by
//! instance name. The state dir is `K3S_HARNESS_STATE_DIR`, else `$XDG_STATE_HOME/k3s-harness`,
//! else `~/.local/state/k3s-harness`; it is created with mode 0700 because kubeconfigs carry
//! client keys.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Name of the rewritten kubeconfig inside an instance's state directory.
const KUBECONFIG_FILE: &str = "kubeconfig.yaml";

/// Name of the record of a started cluster inside an instance's state directory.
const RECORD_FILE: &str = "cluster.json";

/// The root of the harness's state on this host.
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub(crate) fn new(root: PathBuf) -> Self {
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
        Ok(StateDir { root })
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

    /// Removes an instance's directory; a missing one is not an error.
    pub(crate) fn remove_instance_dir(&self, instance: &str) -> Result<()> {
        let dir = self.instance_dir(instance);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(Error::io("remove the state directory", dir, error)),
        }
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

/// What the harness remembers about a cluster it started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ClusterRecord {
    pub(crate) instance: String,
    pub(crate) lima_home: PathBuf,
    pub(crate) api_port: u16,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) fingerprint: String,
    pub(crate) owner_pid: u32,
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
    fn instance_dir_is_private() {
        let temporary = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: temporary.path().join("state"),
        };

        let dir = state.create_instance_dir("k3sh-a").unwrap();

        for path in [state.root.as_path(), dir.as_path()] {
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
            lima_home: "/lima".into(),
            api_port: 16443,
            kubeconfig: state.kubeconfig_path("k3sh-a"),
            fingerprint: "0011aabb".to_owned(),
            owner_pid: 42,
        };

        state.write_record(&record).unwrap();
        let reread = state.read_record("k3sh-a").unwrap();
        assert_eq!(reread.api_port, 16443);
        assert_eq!(reread.kubeconfig, record.kubeconfig);

        let error = state.read_record("k3sh-b").unwrap_err();
        assert!(matches!(error, Error::UnknownInstance { .. }), "{error}");
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
