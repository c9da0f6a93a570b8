//! Image imports against the fake `limactl`, whose guest `sudo k3s ctr` is a real containerd.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k3s_harness::Cluster;
use k3s_harness_tests::archives::{
    TestImage, gzip_file, write_docker_archive, write_multiplatform_oci_archive, write_oci_archive,
};
use k3s_harness_tests::{Component, ExpectOk, SimulatedLima, components_present};

/// References the kubelet's view of the guest lists.
async fn listed_references(cluster: &Cluster) -> Vec<String> {
    let output = cluster
        .shell(&["sudo", "k3s", "crictl", "images", "-o", "json"])
        .await
        .expect_ok("crictl lists images");
    let listing: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("crictl prints JSON");
    listing["images"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|image| image["repoTags"].as_array().cloned().unwrap_or_default())
        .filter_map(|tag| tag.as_str().map(str::to_owned))
        .collect()
}

fn images_available(test: &str) -> bool {
    components_present(test, &[Component::Containerd, Component::Sudo])
}

#[tokio::test(flavor = "multi_thread")]
async fn two_image_archive_imports_both() {
    if !images_available("two_image_archive_imports_both") {
        return;
    }
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("two.tar");
    write_docker_archive(
        &archive,
        &[
            TestImage::new("master:2.0"),
            TestImage::new("chunkserver:2.0"),
        ],
    )
    .unwrap();

    let imported = cluster
        .import_image(&archive)
        .await
        .expect_ok("the archive imports");

    assert_eq!(
        imported,
        [
            "docker.io/library/master:2.0",
            "docker.io/library/chunkserver:2.0"
        ]
    );
    let listed = listed_references(&cluster).await;
    for reference in &imported {
        assert!(
            listed.contains(reference),
            "{reference} is listed: {listed:?}"
        );
    }
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_platform_archive_imports_guest_platform() {
    if !images_available("two_platform_archive_imports_guest_platform") {
        return;
    }
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("multi.tar");
    write_multiplatform_oci_archive(
        &archive,
        "example.test/metalogger:1.4",
        &[("linux", "amd64"), ("linux", "arm64")],
    )
    .unwrap();

    let imported = cluster
        .import_image(&archive)
        .await
        .expect_ok("the archive imports");

    assert_eq!(imported, ["example.test/metalogger:1.4"]);
    assert!(listed_references(&cluster).await.contains(&imported[0]));
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn second_import_touches_nothing_in_vm() {
    if !images_available("second_import_touches_nothing_in_vm") {
        return;
    }
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("op.tar");
    write_oci_archive(&archive, &[TestImage::new("example.test/op:0.3.0")]).unwrap();

    let first = cluster
        .import_image(&archive)
        .await
        .expect_ok("the first import");
    let calls_after_first = lima.count("shell");
    let second = cluster
        .import_image(&archive)
        .await
        .expect_ok("the second import");

    assert_eq!(first, second);
    assert_eq!(
        lima.count("shell"),
        calls_after_first,
        "the second import ran nothing in the guest"
    );
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_archive_is_decompressed_on_the_fly() {
    if !images_available("gzip_archive_is_decompressed_on_the_fly") {
        return;
    }
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let scratch = tempfile::tempdir().unwrap();
    let plain = scratch.path().join("op.tar");
    let compressed = scratch.path().join("op.tar.gz");
    write_docker_archive(&plain, &[TestImage::new("gzipped:1.0")]).unwrap();
    gzip_file(&plain, &compressed).unwrap();

    let imported = cluster
        .import_image(&compressed)
        .await
        .expect_ok("the gzip archive imports");

    assert_eq!(imported, ["docker.io/library/gzipped:1.0"]);
    assert!(listed_references(&cluster).await.contains(&imported[0]));
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_archive_fails_and_leaves_nothing_listed() {
    if !images_available("truncated_archive_fails_and_leaves_nothing_listed") {
        return;
    }
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let scratch = tempfile::tempdir().unwrap();
    let whole = scratch.path().join("whole.tar");
    let truncated = scratch.path().join("truncated.tar");
    write_docker_archive(&whole, &[TestImage::new("cut:1.0")]).unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();

    let error = cluster
        .import_image(&truncated)
        .await
        .expect_err("a truncated archive is rejected")
        .to_string();

    assert!(
        error.contains(&truncated.display().to_string()),
        "the file is named: {error}"
    );
    assert!(error.to_lowercase().contains("truncated"), "{error}");
    let listed = listed_references(&cluster).await;
    assert!(
        !listed.iter().any(|reference| reference.contains("cut")),
        "nothing half-imported is listed: {listed:?}"
    );
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

/// Writes a stand-in for `docker` that answers `save REFERENCE` with a docker archive on stdout,
/// as the real command does.
fn fake_engine(dir: &Path, archive: &Path) -> std::path::PathBuf {
    let path = dir.join("docker");
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = save ] || {{ echo \"unsupported: $*\" >&2; exit 2; }}\nexec cat '{}'\n",
        archive.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_image_streams_without_temporary_file() {
    if !images_available("engine_image_streams_without_temporary_file") {
        return;
    }
    let lima = SimulatedLima::new();
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("saved.tar");
    write_docker_archive(&archive, &[TestImage::new("moosefs-csi:0.9")]).unwrap();
    let engine = fake_engine(scratch.path(), &archive);
    let cluster = Cluster::start(lima.spec().container_engine(&engine))
        .await
        .expect_ok("the cluster starts");

    let imported = cluster
        .import_docker_image("moosefs-csi:0.9")
        .await
        .expect_ok("the saved image imports");

    assert_eq!(imported, "docker.io/library/moosefs-csi:0.9");
    assert!(listed_references(&cluster).await.contains(&imported));
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_engine_names_command_and_stderr() {
    let lima = SimulatedLima::new();
    let scratch = tempfile::tempdir().unwrap();
    let engine = scratch.path().join("docker");
    std::fs::write(
        &engine,
        "#!/bin/sh\necho 'No such image: ghost:1.0' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = Cluster::start(lima.spec().container_engine(&engine))
        .await
        .expect_ok("the cluster starts");

    let error = cluster
        .import_docker_image("ghost:1.0")
        .await
        .expect_err("a failing save is an error")
        .to_string();

    assert!(
        error.contains("save ghost:1.0"),
        "the command is named: {error}"
    );
    assert!(
        error.contains("No such image"),
        "the engine's stderr is attached: {error}"
    );
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}
