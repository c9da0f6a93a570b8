//! The on-disk Jetpack inventory for a cluster: a `k3s` group with every node, a group per
//! role, and each node's SSH variables.
//!
//! Layout (jetporch's `src/inventory/loading.rs`): `groups/<group>` is a YAML mapping with a
//! `hosts` list, `host_vars/<host>` a YAML mapping of variables. File names have no extension.

use std::fs;
use std::path::{Path, PathBuf};

use lima_provisioner::HostVars;

use super::error::ConvergeError;

/// The inventory group that contains every node of the cluster; playbooks target it with
/// `groups: [k3s]`. Each node is also in the group of its role, `server` or `agent`.
pub const INVENTORY_GROUP: &str = "k3s";

/// Spellings of 127.0.0.1 that the system resolver reads as that address (`inet_aton` accepts
/// short, decimal, octal and hexadecimal forms), one per node that Lima reaches through
/// 127.0.0.1. jetporch 0.1.1 connects to a host by its inventory name, so the nodes of one
/// cluster need distinct names for the same address.
const LOOPBACK_SPELLINGS: [&str; 9] = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "0177.1",
    "0x7f.0.0.1",
    "0177.0.0.1",
];

/// One node to put in the inventory.
pub(crate) struct InventoryNode<'a> {
    /// The Lima instance name, for messages.
    pub(crate) instance: &'a str,
    /// The node's role, which names its second group.
    pub(crate) role: &'a str,
    /// How to reach the node over SSH.
    pub(crate) vars: &'a HostVars,
}

/// The file contents of an inventory, before they are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Inventory {
    /// Inventory host names with the instance each one reaches, in node order.
    hosts: Vec<(String, String)>,
    /// Paths relative to the inventory directory, with their contents.
    files: Vec<(PathBuf, String)>,
}

impl Inventory {
    /// Builds the inventory for a cluster's nodes from their connection variables.
    ///
    /// A host is named after its address, not its instance. jetporch 0.1.1 opens the TCP
    /// connection to the host's inventory name and reads `jet_ssh_hostname` only to detect
    /// `localhost` (its `src/connection/ssh.rs`), and an instance name does not resolve. Nodes
    /// that share 127.0.0.1 get the spellings in [`LOOPBACK_SPELLINGS`]. `jet_ssh_hostname` is
    /// still written, for the Jetpack fork.
    ///
    /// # Errors
    ///
    /// [`ConvergeError::InvalidHost`] when an address is `localhost`, because jetp runs the
    /// tasks of such a host on the control machine instead of connecting over SSH, and
    /// [`ConvergeError::SharedAddress`] when two nodes share an address other than 127.0.0.1.
    pub(crate) fn new(nodes: &[InventoryNode<'_>]) -> Result<Self, ConvergeError> {
        let mut hosts: Vec<(String, String)> = Vec::new();
        let mut files = Vec::new();
        let mut groups: Vec<(&str, Vec<String>)> = vec![(INVENTORY_GROUP, Vec::new())];

        for node in nodes {
            let address = node.vars.ssh_hostname.as_str();
            if address == "localhost" {
                return Err(ConvergeError::InvalidHost {
                    host: node.instance.to_owned(),
                    address: address.to_owned(),
                });
            }
            let in_use = |name: &str| hosts.iter().any(|(host, _)| host == name);
            let host = if !in_use(address) {
                address.to_owned()
            } else if address == LOOPBACK_SPELLINGS[0] {
                LOOPBACK_SPELLINGS
                    .iter()
                    .find(|spelling| !in_use(spelling))
                    .map(|spelling| (*spelling).to_owned())
                    .ok_or_else(|| ConvergeError::SharedAddress {
                        host: node.instance.to_owned(),
                        address: address.to_owned(),
                    })?
            } else {
                return Err(ConvergeError::SharedAddress {
                    host: node.instance.to_owned(),
                    address: address.to_owned(),
                });
            };

            files.push((
                Path::new("host_vars").join(&host),
                format!(
                    "jet_ssh_hostname: {}\n\
                     jet_ssh_port: {}\n\
                     jet_ssh_user: {}\n\
                     jet_ssh_private_key_file: {}\n",
                    quote(address),
                    node.vars.ssh_port,
                    quote(&node.vars.ssh_user),
                    quote(&node.vars.ssh_private_key_file.to_string_lossy()),
                ),
            ));
            groups[0].1.push(host.clone());
            match groups.iter_mut().find(|(group, _)| *group == node.role) {
                Some((_, members)) => members.push(host.clone()),
                None => groups.push((node.role, vec![host.clone()])),
            }
            hosts.push((host, node.instance.to_owned()));
        }

        for (group, members) in groups {
            let mut text = "hosts:\n".to_owned();
            for member in members {
                text.push_str(&format!("  - {}\n", quote(&member)));
            }
            files.push((Path::new("groups").join(group), text));
        }
        Ok(Inventory { hosts, files })
    }

    /// Returns the inventory host names with the instance each one reaches, in node order.
    pub(crate) fn hosts(&self) -> &[(String, String)] {
        &self.hosts
    }

    /// Writes `groups/k3s`, a group per role and `host_vars/<host>` per node under `dir`,
    /// which must exist, and returns `dir`.
    pub(crate) fn write(&self, dir: &Path) -> Result<PathBuf, ConvergeError> {
        for subdir in ["groups", "host_vars"] {
            let subdir = dir.join(subdir);
            fs::create_dir_all(&subdir).map_err(|source| ConvergeError::Io {
                action: "create the inventory directory",
                path: subdir.clone(),
                source,
            })?;
        }
        for (relative, contents) in &self.files {
            let path = dir.join(relative);
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

    fn node<'a>(instance: &'a str, role: &'a str, vars: &'a HostVars) -> InventoryNode<'a> {
        InventoryNode {
            instance,
            role,
            vars,
        }
    }

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
        let inventory = Inventory::new(&[node("k3sh-abc", "server", &host_vars())]).unwrap();

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
        Inventory::new(&[node("k3sh-abc", "server", &host_vars())])
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
        Inventory::new(&[node("k3sh-abc", "server", &host_vars())])
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
        let inventory = Inventory::new(&[node("k3sh-abc", "server", &vars)]).unwrap();

        let (_, host_vars_file) = &inventory.files[0];
        assert!(
            host_vars_file.contains("jet_ssh_user: \"yes: no\"\n"),
            "{host_vars_file}"
        );
    }

    #[test]
    fn loopback_nodes_get_distinct_names() {
        let server = host_vars();
        let mut agent_one = host_vars();
        agent_one.ssh_port = 60023;
        let mut agent_two = host_vars();
        agent_two.ssh_port = 60024;
        let dir = tempfile::tempdir().unwrap();

        let inventory = Inventory::new(&[
            node("srv", "server", &server),
            node("srv-a1", "agent", &agent_one),
            node("srv-a2", "agent", &agent_two),
        ])
        .unwrap();
        inventory.write(dir.path()).unwrap();

        let hosts: Vec<&str> = inventory
            .hosts()
            .iter()
            .map(|(host, _)| host.as_str())
            .collect();
        assert_eq!(hosts, ["127.0.0.1", "127.1", "127.0.1"]);
        let group = |name: &str| -> Vec<String> {
            let text = fs::read_to_string(dir.path().join("groups").join(name)).unwrap();
            let group: BTreeMap<String, Vec<String>> = serde_saphyr::from_str(&text).unwrap();
            group["hosts"].clone()
        };
        assert_eq!(group("k3s"), ["127.0.0.1", "127.1", "127.0.1"]);
        assert_eq!(group("server"), ["127.0.0.1"]);
        assert_eq!(group("agent"), ["127.1", "127.0.1"]);
        let agent_vars = fs::read_to_string(dir.path().join("host_vars/127.1")).unwrap();
        assert!(agent_vars.contains("jet_ssh_port: 60023\n"), "{agent_vars}");
        assert!(
            agent_vars.contains("jet_ssh_hostname: \"127.0.0.1\"\n"),
            "{agent_vars}"
        );
    }

    #[test]
    fn loopback_spellings_resolve_to_localhost() {
        use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

        for spelling in LOOPBACK_SPELLINGS {
            // jetporch resolves `HOST:PORT` exactly like this.
            let resolved: Vec<SocketAddr> = format!("{spelling}:22")
                .to_socket_addrs()
                .unwrap_or_else(|error| panic!("{spelling} does not resolve: {error}"))
                .collect();
            assert_eq!(
                resolved,
                [SocketAddr::from((Ipv4Addr::LOCALHOST, 22))],
                "{spelling}"
            );
        }
    }

    #[test]
    fn shared_remote_address_is_rejected() {
        let mut vars = host_vars();
        vars.ssh_hostname = "192.0.2.7".to_owned();

        let error =
            Inventory::new(&[node("a", "server", &vars), node("b", "agent", &vars)]).unwrap_err();

        assert!(
            matches!(error, ConvergeError::SharedAddress { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("192.0.2.7"), "{error}");
    }

    #[test]
    fn localhost_address_is_rejected() {
        let mut vars = host_vars();
        vars.ssh_hostname = "localhost".to_owned();

        let error = Inventory::new(&[node("k3sh-abc", "server", &vars)]).unwrap_err();

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
