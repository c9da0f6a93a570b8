//! Diagnostics against the fake `limactl`: a failed start collects them before the VM is
//! deleted, a failing collector does not stop the others, secrets stay out of the files, and
//! the directories outlive the cluster.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k3s_harness::Cluster;
use k3s_harness_tests::{Component, ExpectOk, SimulatedLima, components_present};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// A value that must never reach a diagnostics file.
const SECRET_VALUE: &str = "hunter2-do-not-copy";

/// Returns the diagnostics directory named in `text` (an error message or a hint): the path
/// after "are in ", up to the next `;`.
#[track_caller]
fn diagnostics_dir_in(text: &str) -> PathBuf {
    let start = text
        .find(" are in ")
        .unwrap_or_else(|| panic!("no diagnostics directory named in: {text}"))
        + " are in ".len();
    let rest = &text[start..];
    let end = rest.find(';').unwrap_or(rest.len());
    PathBuf::from(&rest[..end])
}

/// Reads `collectors.txt` of a collection into file name → status.
#[track_caller]
fn statuses(dir: &Path) -> BTreeMap<String, String> {
    let summary = read(&dir.join("collectors.txt"));
    summary
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.is_empty())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let status = words.next()?;
            let file = words.next()?;
            matches!(status, "collected" | "failed" | "skipped")
                .then(|| (file.to_owned(), status.to_owned()))
        })
        .collect()
}

#[track_caller]
fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()))
}

#[track_caller]
fn assert_status(dir: &Path, file: &str, expected: &str) {
    let statuses = statuses(dir);
    assert_eq!(
        statuses.get(file).map(String::as_str),
        Some(expected),
        "{file} in {}:\n{}",
        dir.display(),
        read(&dir.join("collectors.txt"))
    );
}

/// Lists the entries of `dir` by name.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_start_collects_diagnostics_before_deleting() {
    let lima = SimulatedLima::new();
    // The fake's degraded boot leaves a guest that runs commands but no API server.
    let spec = lima
        .spec()
        .instance_name("k3sh-diag-degraded")
        .limactl_env("FAKE_LIMACTL_START_FAIL", "degraded");

    let error = Cluster::start(spec)
        .await
        .expect_err("the start fails")
        .to_string();

    let dir = diagnostics_dir_in(&error);
    let expected_parent = lima
        .state_dir()
        .join("k3sh-diag-degraded")
        .join("diagnostics");
    assert_eq!(dir.parent(), Some(expected_parent.as_path()), "{error}");
    assert!(
        dir.file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.contains("-start-failed-")),
        "{}",
        dir.display()
    );
    assert_status(&dir, "host-agent.log", "collected");
    let host_agent_log = read(&dir.join("host-agent.log"));
    assert!(
        host_agent_log.contains("hostagent socket created at"),
        "the host agent's log is copied:\n{host_agent_log}"
    );
    assert!(
        host_agent_log.contains("Waiting for the optional requirement 1 of 1"),
        "the boot's progress is in the copy:\n{host_agent_log}"
    );
    assert_status(&dir, "serial-console.log", "collected");
    assert!(read(&dir.join("serial-console.log")).contains("Booting"));
    assert_status(&dir, "nodes.txt", "failed");
    assert!(
        read(&dir.join("nodes.txt")).contains("no API server"),
        "the guest command's error is kept"
    );

    assert_eq!(
        lima.instance_names(),
        Vec::<String>::new(),
        "the VM is deleted"
    );
    assert_eq!(
        entries(&lima.state_dir().join("k3sh-diag-degraded")),
        ["diagnostics"],
        "only the diagnostics are left of the instance's state"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_guest_skips_guest_collectors() {
    let lima = SimulatedLima::new();
    // The fake's host agent exits during the boot, so `limactl shell` cannot connect. (After
    // a start that times out the guest is still reachable, as in Lima, whose shell works once
    // the essential requirements are met.)
    let spec = lima
        .spec()
        .limactl_env("FAKE_LIMACTL_START_FAIL", "hostagent-exit");

    let error = Cluster::start(spec)
        .await
        .expect_err("the start fails")
        .to_string();

    let dir = diagnostics_dir_in(&error);
    assert_status(&dir, "host-agent.log", "collected");
    for file in [
        "namespaces.txt",
        "k3s-journal.log",
        "cloud-init-output.log",
        "nodes.txt",
        "events.txt",
        "pods-kube-system.txt",
        "logs-kube-system.txt",
    ] {
        assert_status(&dir, file, "skipped");
    }
    let summary = read(&dir.join("collectors.txt"));
    assert!(
        summary.contains("the guest is unreachable"),
        "the reason is given:\n{summary}"
    );
    assert!(
        error.contains("collectors failed or were skipped"),
        "the error says the collection is incomplete: {error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_collectors_do_not_stop_others() {
    if !components_present(
        "guest commands of the diagnostics",
        &[Component::Sudo, Component::Kubectl],
    ) {
        return;
    }
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let namespace = cluster
        .namespace("diag")
        .await
        .expect_ok("a test namespace is created");

    // An unreadable host log fails one host collector.
    let host_agent_log = lima.home().join(cluster.name()).join("ha.stderr.log");
    std::fs::set_permissions(&host_agent_log, std::fs::Permissions::from_mode(0o000)).unwrap();
    let unreadable = cluster.dump_diagnostics().await;
    std::fs::set_permissions(&host_agent_log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir = unreadable.expect_ok("the collection completes");

    assert_status(&dir, "host-agent.log", "failed");
    assert!(
        read(&dir.join("collectors.txt")).contains("Permission denied"),
        "the reason is given"
    );
    assert_status(&dir, "nodes.txt", "collected");
    let nodes = read(&dir.join("nodes.txt"));
    assert!(
        nodes.contains(&format!("lima-{}", cluster.name())),
        "{nodes}"
    );
    assert!(nodes.contains("Ready=True"), "{nodes}");
    assert_status(&dir, "pods-kube-system.txt", "collected");
    assert!(read(&dir.join("pods-kube-system.txt")).contains("coredns"));
    let namespaces = read(&dir.join("namespaces.txt"));
    assert!(
        namespaces.contains(&format!("namespace/{}", namespace.name())),
        "the test namespace is found by its label: {namespaces}"
    );
    assert_status(&dir, &format!("pods-{}.txt", namespace.name()), "collected");
    assert_status(&dir, &format!("logs-{}.txt", namespace.name()), "collected");

    // A missing guest command fails every collector that needs k3s.
    let k3s = lima.home().join(cluster.name()).join("fake/bin/k3s");
    std::fs::remove_file(&k3s).unwrap();
    let dir = cluster
        .dump_diagnostics()
        .await
        .expect_ok("the collection completes");

    assert_status(&dir, "host-agent.log", "collected");
    assert_status(&dir, "serial-console.log", "collected");
    for file in [
        "namespaces.txt",
        "nodes.txt",
        "events.txt",
        "pods-kube-system.txt",
    ] {
        assert_status(&dir, file, "failed");
    }
    assert!(
        read(&dir.join("nodes.txt")).contains("k3s"),
        "the failure names the missing command"
    );

    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn diagnostics_hold_no_secrets_and_outlive_cluster() {
    if !components_present(
        "guest commands of the diagnostics",
        &[Component::Sudo, Component::Kubectl],
    ) {
        return;
    }
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let name = cluster.name().to_owned();
    let namespace = cluster
        .namespace("secrets")
        .await
        .expect_ok("a test namespace is created");
    let pods: Api<Pod> = Api::namespaced(namespace.client(), namespace.name());
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("operator".to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "operator".to_owned(),
                image: Some("example.test/operator:0.1.0".to_owned()),
                args: Some(vec![format!("--token={SECRET_VALUE}")]),
                env: Some(vec![EnvVar {
                    name: "API_CREDENTIAL".to_owned(),
                    value: Some(SECRET_VALUE.to_owned()),
                    ..EnvVar::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    pods.create(&PostParams::default(), &pod)
        .await
        .expect_ok("the pod is created");

    let dir = cluster
        .dump_diagnostics()
        .await
        .expect_ok("the collection completes");

    let description = read(&dir.join(format!("pods-{}.txt", namespace.name())));
    assert!(
        description.contains("API_CREDENTIAL:"),
        "the variable's name is kept:\n{description}"
    );
    let kubeconfig = read(cluster.kubeconfig_path());
    let client_key = kubeconfig
        .lines()
        .find_map(|line| line.trim().strip_prefix("client-key-data:"))
        .map(|value| value.trim().to_owned())
        .expect("the kubeconfig has a client key");
    for file in entries(&dir) {
        let text = read(&dir.join(&file));
        assert!(
            !text.contains(SECRET_VALUE),
            "{file} holds the secret value:\n{text}"
        );
        assert!(
            !text.contains(&client_key),
            "{file} holds the kubeconfig's client key"
        );
    }

    drop(namespace);
    cluster.shutdown().await.expect_ok("the cluster shuts down");
    assert!(
        dir.join("collectors.txt").is_file(),
        "the diagnostics outlive the cluster"
    );
    assert_eq!(
        entries(&lima.state_dir().join(&name)),
        ["diagnostics"],
        "only the diagnostics are left of the instance's state"
    );
}
