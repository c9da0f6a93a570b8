//! The `k3s-harness` command against the fake `limactl`, used from a shell the way a developer
//! would: `up`, then `kubectl --kubeconfig`, then `down`.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use k3s_harness_tests::{Component, SimulatedLima, components_present, workspace_binary};

fn harness(lima: &SimulatedLima, args: &[&str]) -> Output {
    Command::new(workspace_binary("k3s-harness"))
        .args(args)
        .env("LIMACTL", lima.limactl())
        .env("LIMA_HOME", lima.home())
        .env("K3S_HARNESS_STATE_DIR", lima.state_dir())
        .env("FAKE_LIMACTL_LOG", lima.log_path())
        .env("K3S_HARNESS_READY_TIMEOUT", "60s")
        .stdin(Stdio::null())
        .output()
        .expect("k3s-harness runs")
}

fn stdout_value(output: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= line in {stdout:?}"))
        .to_owned()
}

#[test]
fn up_kubectl_down_from_a_shell() {
    let lima = SimulatedLima::new();

    let up = harness(&lima, &["up"]);
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let name = stdout_value(&up, "instance");
    let kubeconfig = stdout_value(&up, "kubeconfig");
    assert!(lima.instance_names().contains(&name));

    let printed = harness(&lima, &["kubeconfig", &name]);
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), kubeconfig);

    if components_present("kubectl against the fake API server", &[Component::Kubectl]) {
        let namespaces = Command::new("kubectl")
            .args([
                "--kubeconfig",
                &kubeconfig,
                "get",
                "namespaces",
                "-o",
                "name",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("kubectl runs");
        let listed = String::from_utf8_lossy(&namespaces.stdout);
        assert!(
            namespaces.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&namespaces.stderr)
        );
        assert!(
            listed.lines().any(|line| line == "namespace/kube-system"),
            "{listed}"
        );
    }

    let down = harness(&lima, &["down", &name]);
    assert!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        !lima.instance_names().contains(&name),
        "the instance is gone"
    );
    assert!(
        !std::path::Path::new(&kubeconfig).exists(),
        "the kubeconfig is removed"
    );
}

#[test]
fn down_of_unknown_instance_fails_clearly() {
    let lima = SimulatedLima::new();

    let down = harness(&lima, &["down", "k3sh-not-mine"]);

    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("k3sh-not-mine"), "{stderr}");
    assert!(stderr.contains("not started by k3s-harness"), "{stderr}");
    assert_eq!(lima.count("delete"), 0, "nothing is deleted");
}

#[test]
fn logs_prints_diagnostics_directory() {
    let lima = SimulatedLima::new();
    let up = harness(&lima, &["up"]);
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let name = stdout_value(&up, "instance");

    let logs = harness(&lima, &["logs", &name]);

    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert!(logs.status.success(), "logs failed: {stderr}");
    let stdout = String::from_utf8_lossy(&logs.stdout);
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed.len(), 1, "stdout is the path alone: {stdout:?}");
    let dir = std::path::Path::new(printed[0]);
    assert_eq!(
        dir.parent(),
        Some(lima.state_dir().join(&name).join("diagnostics").as_path()),
        "{stdout}"
    );
    assert!(dir.join("collectors.txt").is_file(), "{stderr}");
    assert!(dir.join("host-agent.log").is_file(), "{stderr}");
    assert!(
        stderr.contains(printed[0]),
        "the summary names the directory: {stderr}"
    );

    let down = harness(&lima, &["down", &name]);
    assert!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
}

#[test]
fn logs_of_unknown_instance_fails_clearly() {
    let lima = SimulatedLima::new();

    let logs = harness(&lima, &["logs", "k3sh-not-mine"]);

    assert_eq!(logs.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&logs.stderr);
    assert!(stderr.contains("k3sh-not-mine"), "{stderr}");
    assert!(stderr.contains("not started by k3s-harness"), "{stderr}");
    assert!(logs.stdout.is_empty(), "no path is printed");
    assert!(
        !lima.state_dir().join("k3sh-not-mine").exists(),
        "nothing is created for an unknown instance"
    );
}

#[test]
fn invalid_arguments_exit_2() {
    let lima = SimulatedLima::new();

    let up = harness(&lima, &["up", "--cpus", "many"]);

    assert_eq!(up.status.code(), Some(2));
    assert_eq!(
        lima.invocations(),
        Vec::<Vec<String>>::new(),
        "limactl never ran"
    );
}

#[test]
fn invalid_value_exits_2_and_names_it() {
    let lima = SimulatedLima::new();

    let up = harness(&lima, &["up", "--cpus", "0"]);

    assert_eq!(up.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(stderr.contains("cpus"), "{stderr}");
    assert_eq!(
        lima.invocations(),
        Vec::<Vec<String>>::new(),
        "limactl never ran"
    );
}

#[test]
fn flag_wins_over_environment() {
    let lima = SimulatedLima::new();

    let up = Command::new(workspace_binary("k3s-harness"))
        .args(["up", "--cpus", "2"])
        .env("LIMACTL", lima.limactl())
        .env("LIMA_HOME", lima.home())
        .env("K3S_HARNESS_STATE_DIR", lima.state_dir())
        .env("FAKE_LIMACTL_LOG", lima.log_path())
        .env("K3S_HARNESS_CPUS", "3")
        .stdin(Stdio::null())
        .output()
        .expect("k3s-harness runs");
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    let start = lima
        .invocations()
        .into_iter()
        .find(|argv| argv.iter().any(|arg| arg == "start"))
        .expect("limactl start ran");
    assert!(start.contains(&"--cpus=2".to_owned()), "{start:?}");
    let name = stdout_value(&up, "instance");
    let down = harness(&lima, &["down", &name]);
    assert!(down.status.success());
}

#[test]
fn killed_up_leaves_vm_that_gc_deletes() {
    let lima = SimulatedLima::new();
    let mut up = Command::new(workspace_binary("k3s-harness"))
        .args(["up", "--name", "k3sh-killed"])
        .env("LIMACTL", lima.limactl())
        .env("LIMA_HOME", lima.home())
        .env("K3S_HARNESS_STATE_DIR", lima.state_dir())
        .env("FAKE_LIMACTL_LOG", lima.log_path())
        .env("FAKE_LIMACTL_BOOT_DELAY_MS", "4000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("k3s-harness runs");

    // SIGKILL while Lima boots: no handler runs, and Lima's host agent survives.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !lima.instance_names().contains(&"k3sh-killed".to_owned()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the instance never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    up.kill().unwrap();
    up.wait().unwrap();

    let gc = harness(&lima, &["gc"]);
    assert!(
        gc.status.success(),
        "gc failed: {}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(
        String::from_utf8_lossy(&gc.stdout).contains("deleted k3sh-killed"),
        "{}",
        String::from_utf8_lossy(&gc.stdout)
    );
    assert!(
        !lima.instance_names().contains(&"k3sh-killed".to_owned()),
        "the VM is gone"
    );
}

#[test]
fn ctrl_c_during_up_deletes_the_booting_vm() {
    let lima = SimulatedLima::new();
    let name = "k3sh-interrupted";
    let scratch = tempfile::tempdir().unwrap();
    let stderr_path = scratch.path().join("up.stderr");
    let mut up = Command::new(workspace_binary("k3s-harness"))
        .args(["up", "--name", name])
        .env("LIMACTL", lima.limactl())
        .env("LIMA_HOME", lima.home())
        .env("K3S_HARNESS_STATE_DIR", lima.state_dir())
        .env("FAKE_LIMACTL_LOG", lima.log_path())
        .env("FAKE_LIMACTL_BOOT_DELAY_MS", "4000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("k3s-harness runs");
    let group = Pid::from_raw(i32::try_from(up.id()).unwrap());
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // Ctrl-C reaches the terminal's foreground process group: `k3s-harness up`, but not the
    // `limactl start` it runs, which leads a process group of its own.
    let marker = lima.state_dir().join(name).join("booting");
    let booting = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&marker).is_ok_and(|text| text.contains("\"limactl_start\":{"))
            && lima.instance_names().contains(&name.to_owned())
    });
    assert!(booting, "limactl start never ran:\n{}", stderr());
    killpg(group, Signal::SIGINT).expect("the up process group can be signalled");
    let status = up.wait().unwrap();

    assert_eq!(status.code(), Some(130), "{}", stderr());
    assert!(
        stderr().contains("interrupted; deleting instance"),
        "{}",
        stderr()
    );
    assert_eq!(
        lima.instance_names(),
        Vec::<String>::new(),
        "the VM is gone"
    );
    assert!(
        !lima.state_dir().join(name).exists(),
        "the harness's files for it are gone"
    );
    let exited = wait_until(Duration::from_secs(10), || lima.processes().is_empty());
    assert!(
        exited,
        "the fake VM's processes still run: {:?}",
        lima.processes()
    );
}

/// Polls `done` every 20 ms until it holds or `timeout` has passed; returns whether it held.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
