//! Multi-node clusters against the fake `limactl`: a k3s server and agents on Lima's `user-v2`
//! network, node failures, imports on every node, and cleanup when an agent fails to boot.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use k3s_harness::{Cluster, NodeRole};
use k3s_harness_tests::archives::{TestImage, write_docker_archive};
use k3s_harness_tests::{Component, ExpectOk, SimulatedLima, components_present, wait_until};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;

/// Bound on a node's change of readiness after its VM stops or starts.
const NODE_STATUS_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_boot_serve_and_are_deleted() {
    let lima = SimulatedLima::new();

    let cluster = Cluster::start(lima.spec().nodes(3))
        .await
        .expect_ok("the 3-node cluster starts");

    let starts: Vec<Vec<String>> = lima
        .invocations()
        .into_iter()
        .filter(|argv| argv.first().is_some_and(|command| command == "start"))
        .collect();
    assert_eq!(starts.len(), 3, "one `limactl start` per node: {starts:?}");
    let server = cluster.name().to_owned();
    assert!(
        starts[0].contains(&format!("--name={server}")),
        "the server boots first: {starts:?}"
    );
    let url = format!("--param=url=https://lima-{server}.internal:6443");
    for start in &starts {
        assert!(
            start.contains(&"--network=lima:user-v2".to_owned()),
            "every node is on user-v2: {start:?}"
        );
    }
    for start in &starts[1..] {
        assert!(start.contains(&url), "agents join the server: {start:?}");
        assert!(
            start.iter().any(|arg| arg.starts_with("--param=token=K10")),
            "agents carry the server's token: {start:?}"
        );
    }

    let nodes = cluster.nodes();
    let roles: Vec<NodeRole> = nodes.iter().map(|node| node.role()).collect();
    assert_eq!(roles, [NodeRole::Server, NodeRole::Agent, NodeRole::Agent]);
    let names: Vec<String> = nodes.iter().map(|node| node.name().to_owned()).collect();
    assert_eq!(
        names,
        [
            server.clone(),
            format!("{server}-a1"),
            format!("{server}-a2")
        ]
    );
    let ready = ready_nodes(&cluster).await;
    let expected: Vec<String> = nodes.iter().map(|node| node.node_name()).collect();
    assert_eq!(ready, sorted(expected), "the API lists 3 Ready nodes");

    cluster.shutdown().await.expect_ok("the cluster shuts down");

    assert_eq!(
        lima.instance_names(),
        Vec::<String>::new(),
        "every node is deleted"
    );
    assert!(
        !lima.state_dir().join(&server).exists(),
        "the harness's files are removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stopped_agent_turns_not_ready_and_recovers() {
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec().nodes(2))
        .await
        .expect_ok("the 2-node cluster starts");
    let agent = cluster.node(1).expect("the cluster has an agent");
    let agent_node = agent.node_name();

    agent.stop().await.expect_ok("the agent stops");
    wait_for_readiness(&cluster, &agent_node, false).await;

    agent.start().await.expect_ok("the agent starts again");
    wait_for_readiness(&cluster, &agent_node, true).await;

    let hostname = agent
        .shell(&["hostname"])
        .await
        .expect_ok("a command runs on the agent");
    assert!(hostname.status.success());
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_import_reaches_every_node() {
    if !components_present("image import", &[Component::Containerd, Component::Sudo]) {
        return;
    }
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec().nodes(3))
        .await
        .expect_ok("the 3-node cluster starts");
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("operator.tar");
    write_docker_archive(&archive, &[TestImage::new("operator:0.3.0")]).unwrap();

    let imported = cluster
        .import_image(&archive)
        .await
        .expect_ok("the archive imports");

    assert_eq!(imported, ["docker.io/library/operator:0.3.0"]);
    for node in cluster.nodes() {
        let images = node
            .shell(&["sudo", "k3s", "crictl", "images", "-o", "json"])
            .await
            .expect_ok("crictl lists the node's images");
        let listed = String::from_utf8_lossy(&images.stdout);
        assert!(
            listed.contains("docker.io/library/operator:0.3.0"),
            "node {} has the image: {listed}",
            node.name()
        );
    }
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_agent_boot_leaves_nothing() {
    let lima = SimulatedLima::new();
    let scratch = tempfile::tempdir().unwrap();
    let limactl = failing_agents_limactl(scratch.path(), lima.limactl());

    let error = Cluster::start(lima.spec().nodes(3).limactl(&limactl))
        .await
        .expect_err("an agent that fails to boot fails the start")
        .to_string();

    assert!(error.contains("-a1"), "the error names the agent: {error}");
    assert!(
        !error.contains("::server:"),
        "the join token is not in the error: {error}"
    );
    assert_eq!(
        lima.instance_names(),
        Vec::<String>::new(),
        "the server and the agents are deleted"
    );
    let left: Vec<String> = std::fs::read_dir(lima.state_dir())
        .unwrap()
        .flat_map(|instance| std::fs::read_dir(instance.unwrap().path()).unwrap())
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["diagnostics"], "only the diagnostics are left");
    assert!(
        error.contains("Diagnostics"),
        "the error names them: {error}"
    );
    let collected = std::fs::read_dir(lima.state_dir())
        .unwrap()
        .map(|instance| instance.unwrap().path().join("diagnostics"))
        .flat_map(|dir| std::fs::read_dir(dir).unwrap())
        .flat_map(|collection| std::fs::read_dir(collection.unwrap().path()).unwrap())
        .map(|file| file.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        collected.iter().any(|file| file.ends_with("-a1.log")),
        "the agents' host agent logs are collected: {collected:?}"
    );
    wait_until(Duration::from_secs(10), || lima.processes().is_empty());
    assert_eq!(
        lima.processes(),
        Vec::<(i32, String)>::new(),
        "no fake VM process is left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lima_2_1_gets_params_through_set() {
    let lima = SimulatedLima::new();

    let cluster = Cluster::start(
        lima.spec()
            .nodes(2)
            .limactl_env("FAKE_LIMACTL_VERSION", "2.1.0"),
    )
    .await
    .expect_ok("the 2-node cluster starts on Lima 2.1");

    let agent_start = lima
        .invocations()
        .into_iter()
        .filter(|argv| argv.first().is_some_and(|command| command == "start"))
        .nth(1)
        .expect("the agent was started");
    assert!(
        agent_start
            .iter()
            .any(|arg| arg.starts_with("--set=.param[\"url\"] = ")),
        "Lima 2.1 gets the URL through --set: {agent_start:?}"
    );
    assert!(
        !agent_start.iter().any(|arg| arg.starts_with("--param")),
        "Lima 2.1 has no --param: {agent_start:?}"
    );
    assert_eq!(ready_nodes(&cluster).await.len(), 2);
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn lima_2_0_rejected_for_agents() {
    let lima = SimulatedLima::new();

    let error = Cluster::start(
        lima.spec()
            .nodes(2)
            .limactl_env("FAKE_LIMACTL_VERSION", "2.0.3"),
    )
    .await
    .expect_err("Lima 2.0 cannot boot agents")
    .to_string();

    assert!(error.contains("2.0.3"), "{error}");
    assert!(error.contains("2.1"), "{error}");
    assert_eq!(lima.count("start"), 0, "nothing is booted");
    assert_eq!(lima.instance_names(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_nodes_rejected_before_limactl() {
    let lima = SimulatedLima::new();

    let error = Cluster::start(lima.spec().nodes(10))
        .await
        .expect_err("10 nodes are rejected")
        .to_string();

    assert!(error.contains("nodes"), "{error}");
    assert!(error.contains("10"), "{error}");
    assert_eq!(lima.invocations(), Vec::<Vec<String>>::new());
}

/// Writes a `limactl` wrapper that makes the host agent of every agent node exit during boot
/// (the fake's `FAKE_LIMACTL_START_FAIL=hostagent-exit`), and boots servers normally.
fn failing_agents_limactl(dir: &Path, limactl: &Path) -> std::path::PathBuf {
    let wrapper = dir.join("limactl");
    let script = format!(
        "#!/bin/sh\n\
         case \"$*\" in *--param=url=*) export FAKE_LIMACTL_START_FAIL=hostagent-exit ;; esac\n\
         exec '{}' \"$@\"\n",
        limactl.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Returns the names of the nodes that report `Ready=True`, sorted.
async fn ready_nodes(cluster: &Cluster) -> Vec<String> {
    let client = cluster.client().await.expect_ok("a client is built");
    let nodes: Api<Node> = Api::all(client);
    let list = nodes
        .list(&ListParams::default())
        .await
        .expect_ok("the nodes are listed");
    sorted(
        list.items
            .iter()
            .filter(|node| is_ready(node))
            .filter_map(|node| node.metadata.name.clone())
            .collect(),
    )
}

/// Polls the API until node `name` is Ready (`ready`) or not, within [`NODE_STATUS_TIMEOUT`].
async fn wait_for_readiness(cluster: &Cluster, name: &str, ready: bool) {
    let deadline = Instant::now() + NODE_STATUS_TIMEOUT;
    loop {
        let is_ready = ready_nodes(cluster).await.iter().any(|node| node == name);
        if is_ready == ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {name} did not become {} within {NODE_STATUS_TIMEOUT:?}",
            if ready { "Ready" } else { "NotReady" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}
