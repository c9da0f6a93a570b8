//! The on-disk Jetpack inventory for one node: a `k3s` group, a group named after the node's
//! role, and the host's SSH variables.
//!
//! Layout (jetporch's `src/inventory/loading.rs`): `groups/<group>` is a YAML mapping with a
//! `hosts` list, `host_vars/<host>` a YAML mapping of variables. File names have no extension.

use std::fs;
use std::path::{Path, PathBuf};

use lima_provisioner::HostVars;

use super::error::ConvergeError;

/// The inventory group that contains the cluster's VM; playbooks target it with
/// `groups: [k3s]`.
pub const INVENTORY_GROUP: &str = "k3s";

/// The file contents of an inventory, before they are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Inventory {
    host: String,
    role: String,
    group_file: String,
    host_vars_file: String,
}

impl Inventory {
    /// Builds the inventory for one VM from its connection variables. The host is in the
    /// `k3s` group and in the group of its `role` (`server` or `agent`), so that a play can
    /// target one kind of node in a multi-node cluster.
    ///
    /// The inventory host is named after the address (`127.0.0.1`), not the instance, because
    /// jetporch 0.1.1 opens the TCP connection to the host's inventory name and reads
    /// `jet_ssh_hostname` only to detect `localhost` (its `src/connection/ssh.rs`). An instance
    /// name does not resolve. `jet_ssh_hostname` is still written for the Jetpack fork.
    ///
    /// # Errors
    ///
    /// [`ConvergeError::InvalidHost`] when the address is `localhost`, because jetp runs the
    /// tasks of such a host on the control machine instead of connecting over SSH.
    pub(crate) fn new(
        instance: &str,
        role: &str,
        host_vars: &HostVars,
    ) -> Result<Self, ConvergeError> {
        let host = host_vars.ssh_hostname.as_str();
        if host == "localhost" {
            return Err(ConvergeError::InvalidHost {
                host: instance.to_owned(),
                address: host.to_owned(),
            });
        }

        let group_file = format!("hosts:\n  - {}\n", quote(host));
        let host_vars_file = format!(
            "jet_ssh_hostname: {}\n\
             jet_ssh_port: {}\n\
             jet_ssh_user: {}\n\
             jet_ssh_private_key_file: {}\n",
            quote(&host_vars.ssh_hostname),
            host_vars.ssh_port,
            quote(&host_vars.ssh_user),
            quote(&host_vars.ssh_private_key_file.to_string_lossy()),
        );
        Ok(Inventory {
            host: host.to_owned(),
            role: role.to_owned(),
            group_file,
            host_vars_file,
        })
    }

    /// Writes `groups/k3s`, `groups/<role>` and `host_vars/<host>` under `dir`, which must exist, and returns
    /// `dir`.
    pub(crate) fn write(&self, dir: &Path) -> Result<PathBuf, ConvergeError> {
        let groups = dir.join("groups");
        let host_vars = dir.join("host_vars");
        for subdir in [&groups, &host_vars] {
            fs::create_dir_all(subdir).map_err(|source| ConvergeError::Io {
                action: "create the inventory directory",
                path: subdir.clone(),
                source,
            })?;
        }

        let files = [
            (groups.join(INVENTORY_GROUP), &self.group_file),
            (groups.join(&self.role), &self.group_file),
            (host_vars.join(&self.host), &self.host_vars_file),
        ];
        for (path, contents) in files {
            fs::write(&path, contents).map_err(|source| ConvergeError::Io {
                action: "write the inventory file",
                path,
                source,
            })?;
        }
        Ok(dir.to_owned())
    }
}

/// Renders `value` as a YAML double-quoted scalar. JSON string escapes are valid there, and
/// quoting keeps values such as `127.0.0.1`, `yes` or `1e3` strings.
fn quote(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn host_vars() -> HostVars {
        HostVars {
            ssh_hostname: "127.0.0.1".to_owned(),
            ssh_port: 60022,
            ssh_user: "dev".to_owned(),
            ssh_private_key_file: PathBuf::from("/home/dev/.lima/_config/user"),
        }
    }

    #[test]
    fn inventory_layout_has_no_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let inventory = Inventory::new("k3sh-abc", "server", &host_vars()).unwrap();

        inventory.write(dir.path()).unwrap();

        let mut files: Vec<String> = walk(dir.path())
            .iter()
            .map(|path| {
                path.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["groups/k3s", "groups/server", "host_vars/127.0.0.1"]
        );
    }

    #[test]
    fn group_file_lists_address() {
        let dir = tempfile::tempdir().unwrap();
        Inventory::new("k3sh-abc", "server", &host_vars())
            .unwrap()
            .write(dir.path())
            .unwrap();

        let text = fs::read_to_string(dir.path().join("groups/k3s")).unwrap();
        let group: BTreeMap<String, Vec<String>> = serde_saphyr::from_str(&text).unwrap();

        assert_eq!(group["hosts"], ["127.0.0.1"]);
        assert_eq!(group.len(), 1);
    }

    #[test]
    fn host_vars_file_has_ssh_variables() {
        let dir = tempfile::tempdir().unwrap();
        Inventory::new("k3sh-abc", "server", &host_vars())
            .unwrap()
            .write(dir.path())
            .unwrap();

        let text = fs::read_to_string(dir.path().join("host_vars/127.0.0.1")).unwrap();
        let vars: BTreeMap<String, serde_json::Value> = serde_saphyr::from_str(&text).unwrap();

        assert_eq!(vars["jet_ssh_hostname"], "127.0.0.1");
        // jetp reads the port with `as_i64`, so it must be a YAML integer, not a string.
        assert_eq!(vars["jet_ssh_port"], 60022);
        assert_eq!(vars["jet_ssh_user"], "dev");
        assert_eq!(
            vars["jet_ssh_private_key_file"],
            "/home/dev/.lima/_config/user"
        );
        assert_eq!(vars.len(), 4);
    }

    #[test]
    fn values_are_quoted() {
        let mut vars = host_vars();
        vars.ssh_user = "yes: no".to_owned();
        let inventory = Inventory::new("k3sh-abc", "server", &vars).unwrap();

        assert!(
            inventory
                .host_vars_file
                .contains("jet_ssh_user: \"yes: no\"\n"),
            "{}",
            inventory.host_vars_file
        );
    }

    #[test]
    fn localhost_address_is_rejected() {
        let mut vars = host_vars();
        vars.ssh_hostname = "localhost".to_owned();

        let error = Inventory::new("k3sh-abc", "server", &vars).unwrap_err();

        assert!(
            matches!(error, ConvergeError::InvalidHost { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("`localhost`"), "{error}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
