//! Failure paths against the fake `limactl`: every one returns a clear error and leaves no VM,
//! no state directory and no process behind.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use k3s_harness::{Cluster, ClusterSpec};
use k3s_harness_tests::{ExpectOk, SimulatedLima};
use lima_provisioner::{InstanceName, Limactl, Provisioner, ShellOptions};

/// Checks that no instance and no state is left, except the diagnostics that a failed start
/// collects and keeps on purpose.
fn assert_nothing_left(lima: &SimulatedLima) {
    assert_eq!(
        lima.instance_names(),
        Vec::<String>::new(),
        "no instance is left"
    );
    let instance_dirs = std::fs::read_dir(lima.state_dir())
        .map(|entries| entries.filter_map(|entry| entry.ok()).collect::<Vec<_>>())
        .unwrap_or_default();
    for instance_dir in instance_dirs {
        let left: Vec<String> = std::fs::read_dir(instance_dir.path())
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        assert_eq!(
            left,
            ["diagnostics"],
            "only diagnostics are left in {}",
            instance_dir.path().display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_timeout_reports_log_tail_and_deletes_instance() {
    let lima = SimulatedLima::new();
    // The fake, like Lima, gives up when `--timeout` runs out.
    let spec = lima
        .spec()
        .limactl_env("FAKE_LIMACTL_START_FAIL", "timeout")
        .start_timeout(Duration::from_secs(2));

    let error = Cluster::start(spec)
        .await
        .expect_err("the start fails")
        .to_string();
    eprintln!("{error}");

    assert!(
        error.contains("did not receive an event with the"),
        "{error}"
    );
    assert!(
        error.contains("ha.stderr.log"),
        "the host agent log tail is attached: {error}"
    );
    assert!(error.contains("has already deleted the"), "{error}");
    assert!(
        !error.contains("delete it with `limactl delete"),
        "no hint to delete what the harness deleted: {error}"
    );
    assert!(lima.count("delete") >= 1, "the half-started VM is deleted");
    assert_nothing_left(&lima);
}

#[tokio::test(flavor = "multi_thread")]
async fn degraded_start_is_an_error_and_deletes_instance() {
    let lima = SimulatedLima::new();
    let spec = lima
        .spec()
        .limactl_env("FAKE_LIMACTL_START_FAIL", "degraded");

    let error = Cluster::start(spec)
        .await
        .expect_err("the start fails")
        .to_string();

    assert!(error.to_lowercase().contains("degraded"), "{error}");
    assert_nothing_left(&lima);
}

#[tokio::test(flavor = "multi_thread")]
async fn old_lima_is_rejected_before_any_vm() {
    let lima = SimulatedLima::new();
    let spec = lima.spec().limactl_env("FAKE_LIMACTL_VERSION", "1.2.1");

    let error = Cluster::start(spec)
        .await
        .expect_err("Lima 1.x is rejected")
        .to_string();

    assert!(
        error.contains("1.2.1"),
        "the found version is named: {error}"
    );
    assert!(
        error.contains("2.0"),
        "the required version is named: {error}"
    );
    assert_eq!(lima.count("start"), 0);
    assert_eq!(lima.count("create"), 0);
    assert_nothing_left(&lima);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_instance_name_runs_no_limactl() {
    let lima = SimulatedLima::new();

    for name in ["-leading-dash", "Has Space", "ends.yaml", "double--dash"] {
        let error = Cluster::start(lima.spec().instance_name(name))
            .await
            .expect_err("the name is rejected")
            .to_string();
        assert!(error.contains(name), "the value is named: {error}");
    }

    assert_eq!(
        lima.invocations(),
        Vec::<Vec<String>>::new(),
        "limactl never ran"
    );
    assert_nothing_left(&lima);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_lima_home_is_rejected() {
    let lima = SimulatedLima::new();
    let long_home = lima.home().join("x".repeat(90));

    let error = Cluster::start(lima.spec().lima_home(&long_home))
        .await
        .expect_err("the socket path budget is exceeded")
        .to_string();

    assert!(error.contains("socket"), "{error}");
    assert!(error.contains("LIMA_HOME"), "the fix is named: {error}");
    assert_eq!(
        lima.invocations(),
        Vec::<Vec<String>>::new(),
        "limactl never ran"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loose_ssh_key_permissions_fail_before_boot() {
    let lima = SimulatedLima::new();
    let key = lima.home().join("_config/user");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "not a real key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let error = Cluster::start(lima.spec())
        .await
        .expect_err("the key is rejected")
        .to_string();

    assert!(
        error.contains(&key.display().to_string()),
        "the file is named: {error}"
    );
    assert!(error.contains("chmod 600"), "the fix is named: {error}");
    assert_eq!(lima.count("start"), 0);
    assert_nothing_left(&lima);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_override_is_rejected_before_any_vm() {
    let lima = SimulatedLima::new();

    let error = Cluster::start(lima.spec().cpus(0))
        .await
        .expect_err("0 CPUs is rejected")
        .to_string();

    assert!(error.contains("cpus"), "{error}");
    assert_eq!(
        lima.invocations(),
        Vec::<Vec<String>>::new(),
        "limactl never ran"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clusters_get_their_own_api_ports() {
    let lima = SimulatedLima::new();

    let (first, second) = tokio::join!(Cluster::start(lima.spec()), Cluster::start(lima.spec()));
    let first = first.expect_ok("the first cluster starts");
    let second = second.expect_ok("the second cluster starts");

    assert_ne!(first.api_port(), second.api_port());
    for cluster in [&first, &second] {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(cluster.client().await.unwrap());
        let names: Vec<String> = nodes
            .list(&Default::default())
            .await
            .expect_ok("each cluster answers on its own port")
            .items
            .into_iter()
            .filter_map(|node| node.metadata.name)
            .collect();
        assert_eq!(
            names,
            [format!("lima-{}", cluster.name())],
            "each client reaches its own cluster"
        );
    }

    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    assert_nothing_left(&lima);
}

#[test]
fn unknown_instance_does_not_exist() {
    let lima = SimulatedLima::new();
    let limactl = Limactl::new(lima.limactl()).with_lima_home(lima.home());
    let provisioner = Provisioner::new(limactl);
    let name = InstanceName::new("k3sh-never-created", lima.home()).unwrap();

    assert!(
        !provisioner
            .exists(&name)
            .expect_ok("an unknown instance is not an error")
    );
    provisioner
        .destroy(&name)
        .expect_ok("destroying an absent instance succeeds");
}

#[test]
fn hanging_limactl_hits_deadline_and_leaves_no_process() {
    let lima = SimulatedLima::new();
    let limactl = Limactl::new(lima.limactl())
        .with_lima_home(lima.home())
        .with_env("FAKE_LIMACTL_LOG", lima.log_path())
        .with_env("FAKE_LIMACTL_HANG", "shell");
    let name = InstanceName::new("k3sh-hangs", lima.home()).unwrap();
    let options = ShellOptions {
        workdir: None,
        timeout: Duration::from_secs(2),
        stdin: None,
    };

    let error = limactl
        .shell(&name, &["true"], &options)
        .expect_err("the hanging call is cut off")
        .to_string();

    assert!(error.contains("timed out"), "{error}");
    assert!(error.contains("limactl"), "the command is named: {error}");
    let pids = lima.logged_pids();
    assert!(!pids.is_empty(), "the fake recorded its pid");
    for pid in pids {
        assert!(
            !k3s_harness_tests::process_alive(pid),
            "process {pid} is gone"
        );
    }
}

#[test]
fn default_spec_is_valid() {
    ClusterSpec::default()
        .with_env_overrides()
        .expect_ok("the default spec is valid");
}

#[tokio::test(flavor = "multi_thread")]
async fn taken_api_port_is_rejected_before_boot() {
    let lima = SimulatedLima::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    let error = Cluster::start(lima.spec().api_port(port))
        .await
        .expect_err("a taken port is rejected")
        .to_string();

    assert!(
        error.contains(&port.to_string()),
        "the port is named: {error}"
    );
    assert!(error.contains("free port"), "the fix is named: {error}");
    assert_eq!(lima.count("start"), 0, "nothing was booted");
    assert_nothing_left(&lima);
}

#[tokio::test(flavor = "multi_thread")]
async fn name_taken_by_another_instance_is_left_alone() {
    let lima = SimulatedLima::new();
    let first = Cluster::start(lima.spec().instance_name("k3sh-taken"))
        .await
        .expect_ok("the first cluster starts");

    let error = Cluster::start(lima.spec().instance_name("k3sh-taken"))
        .await
        .expect_err("the name is taken")
        .to_string();

    assert!(error.contains("already exists"), "{error}");
    assert_eq!(lima.count("delete"), 0, "the other instance is not deleted");
    assert!(lima.instance_names().contains(&"k3sh-taken".to_owned()));
    first
        .shutdown()
        .await
        .expect_ok("the first cluster shuts down");
}
