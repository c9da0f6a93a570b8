//! Jetpack converge against a simulated instance: the fake `limactl` gives each instance a real
//! `sshd` on 127.0.0.1, and a real `jetp` runs playbooks through it.
//!
//! The simulated guest is this host, so every playbook writes only below a temporary directory
//! passed as the `target_dir` extra variable. The tests need `jetp` and `sshd`; without them
//! each test prints why it skipped and passes, unless `K3S_HARNESS_REQUIRE_TOOLS=1` is set.
//!
//! The tests take one lock for their whole run, because the missing-binary test changes `JETP`
//! and `PATH`, which the converge runs of the other tests read (`cargo test` runs the tests of
//! this file as threads of one process).

use std::path::{Path, PathBuf};

use k3s_harness::{Cluster, ConvergeError, ConvergeOptions};
use k3s_harness_tests::{Component, ExpectOk, SimulatedLima, components_present};
use tokio::sync::Mutex;

static ENVIRONMENT: Mutex<()> = Mutex::const_new(());

fn fixture_playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/playbooks/node-prep.yml")
}

fn options_for(target: &Path) -> ConvergeOptions {
    let mut options = ConvergeOptions::default();
    options
        .extra_vars
        .insert("target_dir".to_owned(), target.display().to_string().into());
    options
}

fn write_playbook(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn converge_copies_then_matches() {
    if !components_present("converge", &[Component::Jetp, Component::Sshd]) {
        return;
    }
    let _lock = ENVIRONMENT.lock().await;
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let target = tempfile::tempdir().unwrap();
    let options = options_for(target.path());

    let first = cluster
        .converge_with(fixture_playbook(), &options)
        .await
        .expect_ok("the first converge succeeds");

    assert_eq!(first.changed, 2, "{}", first.output);
    assert_eq!(first.unchanged, 0, "{}", first.output);
    assert_eq!(
        first.changed_tasks,
        ["create the marker file", "copy the node configuration"]
    );
    assert!(!first.output.contains('\x1b'), "{}", first.output);
    let marker = target.path().join("node-prepared");
    assert!(marker.is_file(), "{} is missing", marker.display());
    assert_eq!(std::fs::read(&marker).unwrap(), b"");
    let copied = std::fs::read_to_string(target.path().join("node.conf")).unwrap();
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/playbooks/files/node.conf"),
    )
    .unwrap();
    assert_eq!(copied, source);

    let second = cluster
        .converge_with(fixture_playbook(), &options)
        .await
        .expect_ok("the second converge succeeds");
    assert_eq!(second.changed, 0, "{}", second.output);
    assert_eq!(second.unchanged, 2, "{}", second.output);

    let checked = cluster
        .check_idempotent(fixture_playbook(), &options)
        .await
        .expect_ok("the idempotence check passes");
    assert_eq!(checked.changed, 0);

    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn converge_targets_nodes_by_role() {
    if !components_present("converge", &[Component::Jetp, Component::Sshd]) {
        return;
    }
    let _lock = ENVIRONMENT.lock().await;
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec().nodes(3))
        .await
        .expect_ok("the 3-node cluster starts");
    let target = tempfile::tempdir().unwrap();
    let playbook = write_playbook(
        target.path(),
        "roles.yml",
        "- name: every node\n  groups:\n    - k3s\n  tasks:\n    - !file\n      \
         name: mark the node\n      path: \"{{ target_dir }}/all-{{ jet_ssh_port }}\"\n\
         - name: agents only\n  groups:\n    - agent\n  tasks:\n    - !file\n      \
         name: mark the agent\n      path: \"{{ target_dir }}/agent-{{ jet_ssh_port }}\"\n",
    );
    let marks = target.path().join("marks");
    std::fs::create_dir(&marks).unwrap();

    let report = cluster
        .converge_with(&playbook, &options_for(&marks))
        .await
        .expect_ok("the converge succeeds on every node");

    assert_eq!(report.changed, 5, "{}", report.output);
    let mut expected = Vec::new();
    for node in cluster.nodes() {
        let port = ssh_port(&lima, node.name());
        expected.push(format!("all-{port}"));
        if node.role() == k3s_harness::NodeRole::Agent {
            expected.push(format!("agent-{port}"));
        }
    }
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(&marks)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written, expected,
        "every node is in `k3s`, only agents in `agent`"
    );
    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

/// Returns the SSH port Lima forwards to `instance`, from `limactl list --json`.
fn ssh_port(lima: &SimulatedLima, instance: &str) -> u64 {
    let output = lima
        .command()
        .args(["list", "--json", instance])
        .output()
        .expect("limactl list runs");
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    listed["sshLocalPort"]
        .as_u64()
        .expect("the instance has an SSH port")
}

#[tokio::test(flavor = "multi_thread")]
async fn converge_reports_failures() {
    if !components_present("converge failures", &[Component::Jetp, Component::Sshd]) {
        return;
    }
    let _lock = ENVIRONMENT.lock().await;
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let playbooks = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let options = options_for(target.path());

    let failing = write_playbook(
        playbooks.path(),
        "failing.yml",
        "- name: fail on purpose\n  groups:\n    - k3s\n  tasks:\n    - !shell\n      \
         name: exit with status 3\n      cmd: echo about to fail; exit 3\n",
    );
    let error = cluster
        .converge_with(&failing, &options)
        .await
        .expect_err("a failing task fails the converge");
    let ConvergeError::Failed {
        command,
        status,
        tail,
        ..
    } = &error
    else {
        panic!("expected a failed converge, got {error:?}");
    };
    assert!(command.contains(" ssh --playbook "), "{command}");
    assert!(command.contains("failing.yml"), "{command}");
    assert_eq!(status, "exited with status 1");
    assert!(tail.contains("about to fail"), "{tail}");
    assert!(tail.contains("Failures have occured"), "{tail}");
    assert!(tail.lines().count() <= 30, "{tail}");

    let broken = write_playbook(
        playbooks.path(),
        "broken.yml",
        "- name: broken\n  groups: [k3s\n  tasks: []\n",
    );
    let error = cluster
        .converge_with(&broken, &options)
        .await
        .expect_err("a YAML error fails the converge");
    let ConvergeError::Failed { status, tail, .. } = &error else {
        panic!("expected a failed converge, got {error:?}");
    };
    assert_eq!(status, "exited with status 1");
    assert!(tail.contains("broken.yml"), "{tail}");

    let changing = write_playbook(
        playbooks.path(),
        "changing.yml",
        "- name: always runs\n  groups:\n    - k3s\n  tasks:\n    - !shell\n      \
         name: print the date\n      cmd: date\n",
    );
    let error = cluster
        .check_idempotent(&changing, &options)
        .await
        .expect_err("a command task is never idempotent");
    let message = error.to_string();
    assert!(
        matches!(error, ConvergeError::NotIdempotent { .. }),
        "{message}"
    );
    assert!(message.contains("print the date"), "{message}");

    cluster.shutdown().await.expect_ok("the cluster shuts down");
}

#[tokio::test(flavor = "multi_thread")]
async fn converge_without_jetp_explains_install() {
    let _lock = ENVIRONMENT.lock().await;
    let lima = SimulatedLima::new();
    let cluster = Cluster::start(lima.spec())
        .await
        .expect_ok("the cluster starts");
    let empty_path = tempfile::tempdir().unwrap();
    let saved_jetp = std::env::var_os("JETP");
    let saved_path = std::env::var_os("PATH");

    // SAFETY: every test of this file locks ENVIRONMENT for its whole run, so no other thread of
    // this process reads the environment meanwhile.
    unsafe { std::env::set_var("JETP", "/nonexistent") };
    let with_bad_jetp = cluster.converge(fixture_playbook()).await;
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("JETP");
        std::env::set_var("PATH", empty_path.path());
    }
    let with_empty_path = cluster.converge(fixture_playbook()).await;
    // SAFETY: as above.
    unsafe {
        match &saved_jetp {
            Some(value) => std::env::set_var("JETP", value),
            None => std::env::remove_var("JETP"),
        }
        match &saved_path {
            Some(value) => std::env::set_var("PATH", value),
            None => std::env::remove_var("PATH"),
        }
    }

    let error = with_bad_jetp.expect_err("JETP=/nonexistent fails");
    let message = error.to_string();
    assert!(
        matches!(error, ConvergeError::JetpNotExecutable { .. }),
        "{message}"
    );
    assert!(message.contains("JETP=/nonexistent"), "{message}");
    assert!(message.contains("cargo install jetp --locked"), "{message}");

    let error = with_empty_path.expect_err("no jetp on PATH fails");
    let message = error.to_string();
    assert!(
        matches!(error, ConvergeError::JetpNotFound { .. }),
        "{message}"
    );
    assert!(message.contains("cargo install jetp --locked"), "{message}");
    assert!(message.contains("riffcc/jetpack"), "{message}");

    cluster.shutdown().await.expect_ok("the cluster shuts down");
}
