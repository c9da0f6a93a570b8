//! The real tier: the smoke suite against a real Lima, booting `template:k3s`.
//!
//! Every test here is ignored by default and runs under the `lima` nextest profile:
//! `cargo nextest run --profile lima --run-ignored only`. On a machine without `limactl` the
//! tests fail when `K3S_HARNESS_REQUIRE_LIMA=1` and otherwise return early with a message, so a
//! machine that is meant to run them can never pass by skipping.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use k3s_harness::{Cluster, ClusterSpec};
use k3s_harness_tests::archives::{TestImage, write_docker_archive, write_oci_archive};
use k3s_harness_tests::{ExpectOk, REQUIRE_LIMA_ENV};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// Whether a real `limactl` is available; panics instead when the environment requires it.
fn real_lima_present() -> bool {
    let program = std::env::var_os("LIMACTL").unwrap_or_else(|| "limactl".into());
    let found = Command::new(&program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return true;
    }
    let message = format!(
        "{} --version failed: Lima is not installed",
        program.to_string_lossy()
    );
    if std::env::var(REQUIRE_LIMA_ENV).is_ok_and(|value| value == "1") {
        panic!("{message} ({REQUIRE_LIMA_ENV}=1 makes this a failure)");
    }
    eprintln!("skipped: {message}; set {REQUIRE_LIMA_ENV}=1 to fail instead");
    false
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Lima (boots a k3s VM with limactl)"]
async fn real_cluster_boots_serves_imports_and_is_deleted() {
    if !real_lima_present() {
        return;
    }

    let cluster = Cluster::start(ClusterSpec::default().cpus(2).memory_mib(2048))
        .await
        .expect_ok("the cluster starts");
    let name = cluster.name().to_owned();

    let namespace = cluster
        .namespace("smoke")
        .await
        .expect_ok("a test namespace is created");
    let config_maps: Api<ConfigMap> = Api::namespaced(namespace.client(), namespace.name());
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("mode".to_owned(), "e2e".to_owned())])),
        ..ConfigMap::default()
    };
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .expect_ok("the configmap is created");
    namespace
        .delete()
        .await
        .expect_ok("the namespace is deleted");

    let scratch = tempfile::tempdir().unwrap();
    let oci = scratch.path().join("operator-oci.tar");
    let docker = scratch.path().join("sidecar-docker.tar");
    let platform = cluster.platform();
    write_oci_archive(
        &oci,
        &[TestImage::new("example.test/moosefs-operator:0.1.0").for_platform(platform)],
    )
    .unwrap();
    write_docker_archive(
        &docker,
        &[TestImage::new("sidecar:1.2").for_platform(platform)],
    )
    .unwrap();
    cluster
        .import_image(&oci)
        .await
        .expect_ok("the OCI archive imports");
    cluster
        .import_image(&docker)
        .await
        .expect_ok("the docker archive imports");

    cluster.shutdown().await.expect_ok("the cluster shuts down");

    let listed = Command::new(std::env::var_os("LIMACTL").unwrap_or_else(|| "limactl".into()))
        .args(["list", "--quiet"])
        .stdin(Stdio::null())
        .output()
        .expect_ok("limactl list runs");
    let names = String::from_utf8_lossy(&listed.stdout);
    assert!(
        !names.lines().any(|line| line == name),
        "the instance is gone: {names}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Lima 2.1 or newer (boots three k3s VMs on the user-v2 network)"]
async fn real_three_node_cluster_survives_an_agent_restart() {
    if !real_lima_present() {
        return;
    }

    let cluster = Cluster::start(ClusterSpec::default().cpus(2).memory_mib(2048).nodes(3))
        .await
        .expect_ok("the 3-node cluster starts");
    let names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| node.name().to_owned())
        .collect();
    let client = cluster.client().await.expect_ok("a client is built");
    let nodes: Api<Node> = Api::all(client);
    let listed = nodes
        .list(&Default::default())
        .await
        .expect_ok("the nodes are listed");
    assert_eq!(listed.items.len(), 3, "the API lists every node");

    let agent = cluster.node(2).expect("the cluster has a second agent");
    agent.stop().await.expect_ok("the agent stops");
    agent.start().await.expect_ok("the agent starts again");
    let hostname = agent
        .shell(&["hostname"])
        .await
        .expect_ok("a command runs on the restarted agent");
    assert_eq!(
        String::from_utf8_lossy(&hostname.stdout).trim(),
        agent.node_name()
    );

    cluster.shutdown().await.expect_ok("the cluster shuts down");
    let listed = Command::new(std::env::var_os("LIMACTL").unwrap_or_else(|| "limactl".into()))
        .args(["list", "--quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("limactl lists instances");
    let remaining = String::from_utf8_lossy(&listed.stdout);
    for name in &names {
        assert!(
            !remaining.lines().any(|line| line == name),
            "node {name} is deleted: {remaining}"
        );
    }
}
