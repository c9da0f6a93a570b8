//! The smoke suite against the fake `limactl`: boot, use the cluster with kube, import images,
//! shut down, and check that nothing is left.

use std::collections::BTreeMap;

use k3s_harness::Cluster;
use k3s_harness_tests::archives::{TestImage, write_docker_archive, write_oci_archive};
use k3s_harness_tests::{Component, ExpectOk, SimulatedLima, components_present};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

#[tokio::test(flavor = "multi_thread")]
async fn cluster_boots_serves_imports_and_is_deleted() {
    let lima = SimulatedLima::new();
    let with_images = components_present("image import", &[Component::Containerd, Component::Sudo]);

    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let name = cluster.name().to_owned();
    let instance_dir = lima.home().join(&name);
    assert!(
        instance_dir.is_dir(),
        "Lima's instance directory exists while running"
    );
    assert_eq!(
        lima.count("start"),
        1,
        "one `limactl start` per cluster: {:?}",
        lima.invocations()
    );

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
    let fetched = config_maps
        .get("settings")
        .await
        .expect_ok("the configmap is read back");
    assert_eq!(fetched.data.unwrap()["mode"], "e2e");
    namespace
        .delete()
        .await
        .expect_ok("the namespace is deleted");

    if with_images {
        let scratch = tempfile::tempdir().unwrap();
        let oci = scratch.path().join("operator-oci.tar");
        let docker = scratch.path().join("sidecar-docker.tar");
        write_oci_archive(
            &oci,
            &[TestImage::new("example.test/moosefs-operator:0.1.0")],
        )
        .unwrap();
        write_docker_archive(&docker, &[TestImage::new("sidecar:1.2")]).unwrap();

        let imported = cluster
            .import_image(&oci)
            .await
            .expect_ok("the OCI archive imports");
        assert_eq!(imported, ["example.test/moosefs-operator:0.1.0"]);
        let imported = cluster
            .import_image(&docker)
            .await
            .expect_ok("the docker archive imports");
        assert_eq!(imported, ["docker.io/library/sidecar:1.2"]);
    }

    cluster.shutdown().await.expect_ok("the cluster shuts down");

    assert!(
        !lima.instance_names().contains(&name),
        "the instance is gone from `limactl list`"
    );
    assert!(
        !instance_dir.exists(),
        "Lima's instance directory is removed"
    );
    assert!(
        !lima.state_dir().join(&name).exists(),
        "the harness's state directory for the instance is removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_preserves_every_argument() {
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let arguments = [
        "a b",
        "it's",
        "$HOME",
        "x;y",
        "&&",
        "\"quoted\"",
        "tab\there",
        "*",
    ];

    let mut argv = vec!["printf", "%s\\n"];
    argv.extend(arguments);
    let output = cluster
        .shell(&argv)
        .await
        .expect_ok("printf runs in the guest");

    let printed: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        printed, arguments,
        "each argument arrives as one word, unexpanded"
    );
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_command_failure_names_command_and_status() {
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");

    let error = cluster
        .shell(&["sh", "-c", "echo broken >&2; exit 3"])
        .await
        .expect_err("a failing command is an error")
        .to_string();

    assert!(
        error.contains("exit code 3") || error.contains("exit status: 3"),
        "{error}"
    );
    assert!(
        error.contains("broken"),
        "the stderr tail is attached: {error}"
    );
    assert!(
        error.contains("'echo broken >&2; exit 3'"),
        "the command is quoted: {error}"
    );
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_image_is_rejected_before_transfer() {
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("latest.tar");
    write_docker_archive(&archive, &[TestImage::new("moosefs-operator:latest")]).unwrap();

    let error = cluster
        .import_image(&archive)
        .await
        .expect_err("a :latest reference is rejected")
        .to_string();

    assert!(
        error.contains("docker.io/library/moosefs-operator:latest"),
        "{error}"
    );
    assert!(
        error.contains("imagePullPolicy"),
        "the pull-policy trap is explained: {error}"
    );
    assert!(
        error.contains("allow_latest_images"),
        "the opt-in is named: {error}"
    );
    assert_eq!(lima.count("shell"), 0, "nothing was sent to the guest");
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_cluster_boots_once_per_spec() {
    let lima = SimulatedLima::new();

    let first = Cluster::shared(lima.spec())
        .await
        .expect_ok("the shared cluster starts");
    let second = Cluster::shared(lima.spec())
        .await
        .expect_ok("the shared cluster is reused");
    assert_eq!(first.name(), second.name());
    assert_eq!(lima.count("start"), 1, "one boot for both calls");

    let other = Cluster::shared(lima.spec().cpus(7))
        .await
        .expect_ok("a different spec gets its own cluster");
    assert_ne!(other.name(), first.name());
    assert_eq!(lima.count("start"), 2);
}
