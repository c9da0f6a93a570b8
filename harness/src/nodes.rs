//! Multi-node clusters: one k3s server and agents that join it over Lima's `user-v2` network.
//!
//! Every node is a Lima instance booted from the same template. Lima's k3s template installs
//! an agent instead of a server when its `url` and `token` parameters are set (Lima 2.1 and
//! newer). Agents reach the server as `lima-<server>.internal`, a name that the `user-v2`
//! network's DNS serves to guests, so every node boots with `--network lima:user-v2`
//! (<https://lima-vm.io/docs/examples/containers/kubernetes/>). The server's join token is
//! read from the guest and passed to `limactl start` as a secret parameter, which logs and
//! errors show as `<redacted>`.
//!
//! Agents are named `<server>-a1`, `<server>-a2`, and so on. They are recorded with the server,
//! share its lock, lease, reaper and destroy policy, and are deleted before it.

use std::sync::Mutex;
use std::time::Duration;

use lima_provisioner::{
    InstanceName, LimaSpec, LimaVersion, PortForward, Provisioner, ShellOptions, ShellOutput,
};

use crate::booting::BootingMarker;
use crate::cluster::{Cluster, blocking};
use crate::error::{Error, Result};
use crate::run::ProcessId;

/// The Lima network that lets agents resolve and reach the server.
pub(crate) const USER_V2_NETWORK: &str = "lima:user-v2";

/// Path of the token that agents join with, as k3s writes it on the server.
const NODE_TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/node-token";

/// Bound on reading the join token from the server.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on a command run with [`Node::shell`] or [`Cluster::shell`].
const SHELL_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The node count's names in messages: the builder method, the variable and the flag.
const NODES_SETTING: &str = "nodes (ClusterSpec::nodes, K3S_HARNESS_NODES, --nodes)";

/// The template parameters that make Lima's k3s template install an agent.
const AGENT_PARAMS: [&str; 2] = ["url", "token"];

/// The kind of a node, by what it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRole {
    /// The k3s server: the control plane and the API server the kubeconfig reaches.
    Server,
    /// A k3s agent: a worker that joined the server.
    Agent,
}

impl NodeRole {
    /// Returns `server` or `agent`, the name of the node's group in a converge inventory.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Server => "server",
            NodeRole::Agent => "agent",
        }
    }
}

/// One VM of a [`Cluster`], for tests that act on a single node: run a command in it, or stop
/// and start it to simulate a node failure.
///
/// A node is borrowed from its cluster; get one with [`Cluster::nodes`] or [`Cluster::node`].
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    cluster: &'a Cluster,
    name: &'a InstanceName,
    role: NodeRole,
    index: usize,
}

impl<'a> Node<'a> {
    pub(crate) fn new(
        cluster: &'a Cluster,
        name: &'a InstanceName,
        role: NodeRole,
        index: usize,
    ) -> Self {
        Node {
            cluster,
            name,
            role,
            index,
        }
    }

    /// Returns the Lima instance name of this node.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    pub(crate) fn instance_name(&self) -> &InstanceName {
        self.name
    }

    /// Returns the Kubernetes node name, `lima-<instance>`: k3s names a node after the guest's
    /// host name, which Lima sets to `lima-<instance>`.
    pub fn node_name(&self) -> String {
        format!("lima-{}", self.name)
    }

    /// Returns whether this node is the server or an agent.
    pub fn role(&self) -> NodeRole {
        self.role
    }

    /// Returns the node's position: 0 for the server, then the agents in order.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Runs `argv` in this node's guest through `limactl shell`; see [`Cluster::shell`].
    pub async fn shell(&self, argv: &[&str]) -> Result<ShellOutput> {
        shell(self.cluster.provisioner(), self.name, argv).await
    }

    /// Stops this node's VM (`limactl stop`). Its Kubernetes node turns `NotReady` once the
    /// server notices, as after a node failure.
    pub async fn stop(&self) -> Result<()> {
        let provisioner = self.cluster.provisioner();
        let name = self.name;
        tracing::info!(instance = %name, "stopping node");
        blocking(move || provisioner.limactl().stop(name, false)).await?;
        Ok(())
    }

    /// Starts this node's VM again (`limactl start NAME`) after [`stop`](Self::stop), bounded
    /// by the spec's start timeout. The node rejoins the cluster on its own.
    pub async fn start(&self) -> Result<()> {
        let provisioner = self.cluster.provisioner();
        let name = self.name;
        let timeout = self.cluster.spec().start_timeout;
        tracing::info!(instance = %name, "starting node");
        blocking(move || provisioner.limactl().start_existing(name, timeout)).await?;
        Ok(())
    }
}

/// Runs `argv` in instance `name`, failing on a non-zero exit.
pub(crate) async fn shell(
    provisioner: &Provisioner,
    name: &InstanceName,
    argv: &[&str],
) -> Result<ShellOutput> {
    let argv: Vec<String> = argv.iter().map(|arg| (*arg).to_owned()).collect();
    let output = blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let options = ShellOptions {
            workdir: Some("/".to_owned()),
            timeout: SHELL_TIMEOUT,
            stdin: None,
        };
        provisioner.limactl().shell(name, &argv, &options)
    })
    .await?;
    Ok(output.check()?)
}

/// Returns the instance names of the agents of a cluster of `nodes` nodes whose server is
/// `server`: `<server>-a1` up to `<server>-a<nodes - 1>`, each checked against `lima_home`.
pub(crate) fn agent_names(
    server: &InstanceName,
    nodes: u32,
    lima_home: &std::path::Path,
) -> Result<Vec<InstanceName>> {
    (1..nodes)
        .map(|index| {
            let name = format!("{server}-a{index}");
            Ok(InstanceName::new(name, lima_home)?)
        })
        .collect()
}

/// Returns the URL agents join: the server's API on its `user-v2` host name.
pub(crate) fn server_url(server: &InstanceName) -> String {
    format!("https://lima-{server}.internal:6443")
}

/// Checks that agents can join: Lima 2.1 or newer (`version`), and a `template` that takes the
/// `url` and `token` parameters that turn it into an agent.
pub(crate) fn check_agent_support(
    provisioner: &Provisioner,
    version: &LimaVersion,
    template: &str,
    nodes: u32,
) -> Result<()> {
    if (version.major, version.minor) < (2, 1) {
        return Err(Error::InvalidConfig {
            name: NODES_SETTING.to_owned(),
            value: nodes.to_string(),
            reason: format!(
                "agents join through the k3s template's `url` and `token` parameters, which \
                 Lima has from 2.1 on, and `limactl --version` reports {}; upgrade Lima or \
                 boot a single node",
                version.raw
            ),
        });
    }
    let declared = provisioner.limactl().template_params(template)?;
    let missing: Vec<&str> = AGENT_PARAMS
        .into_iter()
        .filter(|param| !declared.iter().any(|declared| declared == param))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidConfig {
        name: NODES_SETTING.to_owned(),
        value: nodes.to_string(),
        reason: format!(
            "agents need the template parameters `url` and `token`, and `{template}` does not \
             declare {}; Lima's k3s template has them from Lima 2.1 on, so upgrade Lima or \
             boot a single node",
            missing.join(" and ")
        ),
    })
}

/// Reads the join token from the server's guest, without logging it.
pub(crate) async fn read_token(provisioner: &Provisioner, server: &InstanceName) -> Result<String> {
    let output = blocking(move || {
        let options = ShellOptions {
            workdir: Some("/".to_owned()),
            timeout: TOKEN_TIMEOUT,
            stdin: None,
        };
        provisioner
            .limactl()
            .shell(server, &["sudo", "cat", NODE_TOKEN_PATH], &options)
    })
    .await?;
    let output = output.check()?;
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if token.is_empty() {
        return Err(Error::InvalidConfig {
            name: NODES_SETTING.to_owned(),
            value: server.to_string(),
            reason: format!(
                "{NODE_TOKEN_PATH} is empty on the server, so agents cannot join; check \
                 `limactl shell {server} sudo journalctl -u k3s`"
            ),
        });
    }
    Ok(token)
}

/// Builds the spec of agent `name` from the server's: same template and size, on `user-v2`,
/// joined through `url` with `token`, and forwarding no port (only the server serves the API).
pub(crate) fn agent_spec(
    server: &LimaSpec,
    name: InstanceName,
    url: &str,
    token: &str,
) -> LimaSpec {
    let mut spec = server.clone();
    spec.name = name;
    spec.params.insert("url".to_owned(), url.to_owned());
    spec.params.insert("token".to_owned(), token.to_owned());
    spec.secret_params.insert("token".to_owned());
    spec.port_forwards = PortForward::ignore_all();
    spec
}

/// Boots the agents in parallel, one thread each, recording each `limactl start` in the
/// booting marker of the server's state directory `dir`.
///
/// Returns the first failure after every boot has ended; the caller deletes all nodes then.
pub(crate) fn boot_agents(
    provisioner: &Provisioner,
    specs: Vec<LimaSpec>,
    marker: BootingMarker,
    dir: &std::path::Path,
) -> Result<()> {
    let marker = Mutex::new(marker);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = specs
            .iter()
            .map(|spec| {
                let marker = &marker;
                scope.spawn(move || {
                    tracing::info!(instance = %spec.name, "starting k3s agent");
                    provisioner
                        .limactl()
                        .create_and_start_observed(spec, |pid| {
                            let mut marker = marker.lock().unwrap_or_else(|error| error.into_inner());
                            marker.agent_starts.extend(ProcessId::of(pid));
                            if let Err(error) = marker.replace(dir) {
                                tracing::warn!(%error, "failed to record the pid of `limactl start`");
                            }
                        })
                        .map_err(Error::from)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("an agent boot does not panic"))
            .collect()
    });
    results.into_iter().collect()
}

/// Deletes a cluster's VMs: the `agents` in parallel, then the `server`. An instance that
/// does not exist is no error, and the server is deleted even when an agent was not.
///
/// # Errors
///
/// The server's failure, else the first agent's, after every deletion has ended.
pub(crate) fn destroy_nodes(
    provisioner: &Provisioner,
    server: &InstanceName,
    agents: &[InstanceName],
) -> lima_provisioner::Result<()> {
    let results: Vec<lima_provisioner::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = agents
            .iter()
            .map(|agent| scope.spawn(move || provisioner.destroy(agent)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("deleting an agent does not panic"))
            .collect()
    });
    provisioner.destroy(server)?;
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn name(text: &str) -> InstanceName {
        InstanceName::new(text, Path::new("/tmp/lima")).unwrap()
    }

    #[test]
    fn agents_are_numbered_after_the_server() {
        let agents = agent_names(&name("k3sh-abcd1234-ef5678"), 3, Path::new("/tmp/lima")).unwrap();

        let names: Vec<&str> = agents.iter().map(InstanceName::as_str).collect();
        assert_eq!(
            names,
            ["k3sh-abcd1234-ef5678-a1", "k3sh-abcd1234-ef5678-a2"]
        );
    }

    #[test]
    fn single_node_has_no_agents() {
        assert!(
            agent_names(&name("k3sh-a"), 1, Path::new("/tmp/lima"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn agent_joins_server_url_with_secret_token() {
        let mut server = LimaSpec::new(name("srv"));
        server.networks.push(USER_V2_NETWORK.to_owned());
        server.port_forwards = PortForward::pin_api_server(40000);
        let url = server_url(&server.name);

        let agent = agent_spec(&server, name("srv-a1"), &url, "K10x::server:y");

        assert_eq!(agent.name.as_str(), "srv-a1");
        assert_eq!(agent.networks, [USER_V2_NETWORK]);
        assert_eq!(agent.params["url"], "https://lima-srv.internal:6443");
        assert_eq!(agent.params["token"], "K10x::server:y");
        assert!(agent.secret_params.contains("token"));
        assert!(
            agent
                .port_forwards
                .iter()
                .all(|rule| rule.host_port.is_none()),
            "an agent forwards no port: {:?}",
            agent.port_forwards
        );
    }
}
