//! The `k3s-harness` command against the fake `limactl`, used from a shell the way a developer
//! would: `up`, then `kubectl --kubeconfig`, `status`, `shell`, `import` and `converge`, then
//! `down`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use k3s_harness_tests::archives::{TestImage, write_docker_archive};
use k3s_harness_tests::{
    Component, SimulatedLima, components_present, wait_until, workspace_binary,
};

/// The phases `up` reports against the fake, in boot order.
const BOOT_PHASES: [&str; 12] = [
    "creating the Lima instance",
    "booting the VM",
    "waiting for SSH",
    "waiting for provisioning",
    "waiting for the guest agent",
    "waiting for the boot scripts",
    "copying the kubeconfig out of the guest",
    "rewriting the kubeconfig",
    "waiting for the API server",
    "waiting for every node to be Ready",
    "waiting for CoreDNS",
    "waiting for the default service account",
];

/// `k3s-harness` pointed at the simulated host, with stdin null.
fn harness_command(lima: &SimulatedLima, args: &[&str]) -> Command {
    let mut command = Command::new(workspace_binary("k3s-harness"));
    command
        .args(args)
        .env("LIMACTL", lima.limactl())
        .env("LIMA_HOME", lima.home())
        .env("K3S_HARNESS_STATE_DIR", lima.state_dir())
        .env("FAKE_LIMACTL_LOG", lima.log_path())
        .env("K3S_HARNESS_READY_TIMEOUT", "60s")
        .stdin(Stdio::null());
    command
}

fn harness(lima: &SimulatedLima, args: &[&str]) -> Output {
    harness_command(lima, args)
        .output()
        .expect("k3s-harness runs")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `up` and returns the instance name and kubeconfig path it printed.
fn up(lima: &SimulatedLima, args: &[&str]) -> (String, String) {
    let mut argv = vec!["up"];
    argv.extend_from_slice(args);
    let up = harness(lima, &argv);
    assert!(up.status.success(), "up failed: {}", stderr_of(&up));
    (
        stdout_value(&up, "instance"),
        stdout_value(&up, "kubeconfig"),
    )
}

/// Runs `down NAME` and checks that it succeeded.
fn down(lima: &SimulatedLima, name: &str) {
    let down = harness(lima, &["down", name]);
    assert!(down.status.success(), "down failed: {}", stderr_of(&down));
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
    // Ctrl-C reaches the terminal's foreground process group: `k3s-harness up`, but not the
    // `limactl start` it runs, which leads a process group of its own.
    signal_during_up_deletes_the_booting_vm(Signal::SIGINT, 130, "interrupted");
}

#[test]
fn sigterm_during_up_deletes_the_booting_vm() {
    // A CI job's timeout or cancellation, and `timeout(1)`, send SIGTERM.
    signal_during_up_deletes_the_booting_vm(Signal::SIGTERM, 143, "terminated");
}

/// Sends `signal` to the process group of `k3s-harness up` while `limactl start` runs, and
/// checks the exit status, the message naming `what` happened, and that nothing is left.
fn signal_during_up_deletes_the_booting_vm(signal: Signal, status: i32, what: &str) {
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

    let marker = lima.state_dir().join(name).join("booting");
    let booting = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&marker).is_ok_and(|text| text.contains("\"limactl_start\":{"))
            && lima.instance_names().contains(&name.to_owned())
    })
    .is_some();
    assert!(booting, "limactl start never ran:\n{}", stderr());
    killpg(group, signal).expect("the up process group can be signalled");
    let exit = up.wait().unwrap();

    assert_eq!(exit.code(), Some(status), "{}", stderr());
    assert!(
        stderr().contains(&format!("{what}; deleting instance")),
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
    let exited = wait_until(Duration::from_secs(10), || lima.processes().is_empty()).is_some();
    assert!(
        exited,
        "the fake VM's processes still run: {:?}",
        lima.processes()
    );
}

/// Returns the text after the timestamp of a progress line (`2025-09-18T07:52:43Z TEXT`), or `None`
/// for any other line.
fn progress_text(line: &str) -> Option<&str> {
    let (stamp, text) = line.split_once(' ')?;
    let shape = stamp.len() == "2025-09-18T07:52:43Z".len()
        && stamp.ends_with('Z')
        && stamp.chars().enumerate().all(|(index, c)| match index {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            19 => c == 'Z',
            _ => c.is_ascii_digit(),
        });
    shape.then_some(text)
}

/// Parses `  1m05.2s  LABEL` from the phase summary into seconds and label.
fn summary_entry(line: &str) -> Option<(f64, &str)> {
    let (elapsed, label) = line.trim_start().split_once("  ")?;
    let elapsed = elapsed.strip_suffix('s')?;
    let seconds = match elapsed.split_once('m') {
        Some((minutes, seconds)) => {
            minutes.parse::<f64>().ok()? * 60.0 + seconds.parse::<f64>().ok()?
        }
        None => elapsed.parse().ok()?,
    };
    Some((seconds, label))
}

#[test]
fn up_prints_timestamped_phases_then_summary() {
    let lima = SimulatedLima::new();

    let up = harness(&lima, &["up", "--name", "k3sh-phases"]);

    let stderr = stderr_of(&up);
    assert!(up.status.success(), "up failed: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let phase_lines: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter_map(|(index, line)| progress_text(line).map(|text| (index, text)))
        .collect();
    let mut seen = Vec::new();
    for (_, text) in &phase_lines {
        let label = BOOT_PHASES
            .iter()
            .find(|label| text.starts_with(*label))
            .unwrap_or_else(|| panic!("unexpected progress line {text:?} in:\n{stderr}"));
        if seen.last() != Some(label) {
            seen.push(*label);
        }
    }
    assert_eq!(seen, BOOT_PHASES, "phases in boot order:\n{stderr}");
    assert!(
        phase_lines
            .iter()
            .any(|(_, text)| text.starts_with("waiting for SSH (essential requirement 1 of")),
        "the host agent's requirement is the detail:\n{stderr}"
    );

    let header = lines
        .iter()
        .position(|line| {
            line.contains("`k3sh-phases` booted in") && line.ends_with("time per phase:")
        })
        .unwrap_or_else(|| panic!("no summary header in:\n{stderr}"));
    let last_phase_line = phase_lines.last().map(|(index, _)| *index).unwrap();
    assert!(
        header > last_phase_line,
        "the summary comes last:\n{stderr}"
    );
    let entries: Vec<(f64, &str)> = lines[header + 1..]
        .iter()
        .map_while(|line| summary_entry(line))
        .collect();
    let labels: Vec<&str> = entries.iter().map(|(_, label)| *label).collect();
    assert_eq!(labels, BOOT_PHASES, "one summary line per phase:\n{stderr}");
    assert!(
        entries
            .iter()
            .all(|(seconds, _)| *seconds >= 0.0 && *seconds < 120.0),
        "{entries:?}"
    );

    down(&lima, "k3sh-phases");
}

#[test]
fn failed_up_marks_failed_phase_in_summary() {
    let lima = SimulatedLima::new();

    let up = harness_command(&lima, &["up", "--name", "k3sh-degraded"])
        .env("FAKE_LIMACTL_START_FAIL", "degraded")
        .output()
        .expect("k3s-harness runs");

    let stderr = stderr_of(&up);
    assert_eq!(up.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the boot of `k3sh-degraded` failed after"),
        "{stderr}"
    );
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|line| line.ends_with("  (failed)"))
        .collect();
    assert_eq!(failed.len(), 1, "one phase is marked:\n{stderr}");
    assert!(
        failed[0].contains("copying the kubeconfig out of the guest"),
        "Lima fails after copying the files of a degraded boot:\n{stderr}"
    );
    assert_eq!(
        lima.instance_names(),
        Vec::<String>::new(),
        "the VM is gone"
    );
}

#[test]
fn list_and_status_report_running_cluster() {
    let lima = SimulatedLima::new();
    let (name, kubeconfig) = up(&lima, &[]);

    let listed = harness(&lima, &["list", "--json"]);
    assert!(listed.status.success(), "{}", stderr_of(&listed));
    let instances: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("list --json prints JSON");
    let instances = instances.as_array().expect("a JSON array");
    assert_eq!(instances.len(), 1, "{instances:?}");
    let listed = &instances[0];
    assert_eq!(listed["name"], name.as_str());
    assert_eq!(listed["lima_status"], "Running");
    assert_eq!(listed["lima_error"], serde_json::Value::Null);
    assert_eq!(listed["kubeconfig"], kubeconfig.as_str());
    assert_eq!(listed["ready"], true);
    assert_eq!(listed["kept"], true, "up keeps its cluster");
    assert_eq!(listed["reuse"], false);
    assert_eq!(listed["destroy_policy"], "always");
    assert_eq!(listed["test_failed"], false);
    assert_eq!(listed["owner_running"], false, "the up process has exited");
    assert_eq!(listed["run_key"], serde_json::Value::Null);
    assert_eq!(listed["platform"], "linux/amd64");
    assert_eq!(listed["lima_home"], lima.home().display().to_string());
    let server_port = std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("server: https://127.0.0.1:")
                .map(str::to_owned)
        })
        .expect("the kubeconfig names its server");
    assert_eq!(listed["api_port"].to_string(), server_port);

    let status = harness(&lima, &["status", &name, "--json"]);
    assert!(status.status.success(), "{}", stderr_of(&status));
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status --json prints JSON");
    assert_eq!(&status, listed, "status and list report the same fields");

    let table = stdout_of(&harness(&lima, &["list"]));
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "LIMA",
        "API",
        "STATE",
        "POLICY",
        "OWNER",
        "RUN",
        "KUBECONFIG",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row = table
        .lines()
        .find(|line| line.starts_with(&name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
    assert!(
        row.contains("Running") && row.contains("ready,kept"),
        "{row}"
    );
    assert!(row.ends_with(&kubeconfig), "{row}");
    let status_table = stdout_of(&harness(&lima, &["status", &name]));
    assert!(
        status_table
            .lines()
            .any(|line| line.starts_with("lima status:") && line.ends_with("Running")),
        "{status_table}"
    );

    let elsewhere = tempfile::tempdir().unwrap();
    let flagged = harness(
        &lima,
        &[
            "list",
            "--json",
            "--state-dir",
            &elsewhere.path().display().to_string(),
        ],
    );
    assert_eq!(
        stdout_of(&flagged).trim(),
        "[]",
        "--state-dir wins over the variable"
    );

    down(&lima, &name);
    let after = harness(&lima, &["list", "--json"]);
    assert_eq!(stdout_of(&after).trim(), "[]");
}

#[test]
fn status_of_stopped_vm_reports_lima_status() {
    let lima = SimulatedLima::new();
    let (name, _) = up(&lima, &[]);
    let stop = lima
        .command()
        .args(["stop", "--tty=false", &name])
        .output()
        .expect("limactl stop runs");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );

    let status = harness(&lima, &["status", &name, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["lima_status"], "Stopped");

    let shell = harness(&lima, &["import", &name, "--image", "op:1.0"]);
    assert_eq!(shell.status.code(), Some(1));
    assert!(
        stderr_of(&shell).contains("is Stopped, not Running"),
        "{}",
        stderr_of(&shell)
    );

    let deleted = lima
        .command()
        .args(["delete", "--tty=false", "-f", &name])
        .output()
        .expect("limactl delete runs");
    assert!(deleted.status.success());
    let status = harness(&lima, &["status", &name, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["lima_status"], "NotFound");
    down(&lima, &name);
}

#[test]
fn kubeconfig_export_is_shell_quoted() {
    let lima = SimulatedLima::new();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("it's a $state");
    let state_arg = state.display().to_string();
    let (name, kubeconfig) = up(&lima, &["--state-dir", &state_arg]);
    assert!(kubeconfig.starts_with(&state_arg), "{kubeconfig}");

    let plain = harness(&lima, &["kubeconfig", &name, "--state-dir", &state_arg]);
    assert!(plain.status.success(), "{}", stderr_of(&plain));
    assert_eq!(stdout_of(&plain), format!("{kubeconfig}\n"));

    let export = harness(
        &lima,
        &["kubeconfig", "--export", &name, "--state-dir", &state_arg],
    );
    assert!(export.status.success(), "{}", stderr_of(&export));
    let line = stdout_of(&export);
    assert!(line.starts_with("export KUBECONFIG='"), "{line}");
    let evaluated = Command::new("sh")
        .arg("-c")
        .arg(format!("{line}printf '%s' \"$KUBECONFIG\""))
        .stdin(Stdio::null())
        .output()
        .expect("sh runs");
    assert!(evaluated.status.success(), "{}", stderr_of(&evaluated));
    assert_eq!(
        stdout_of(&evaluated),
        kubeconfig,
        "the shell reads the path back"
    );

    let down = harness(&lima, &["down", &name, "--state-dir", &state_arg]);
    assert!(down.status.success(), "{}", stderr_of(&down));
}

#[test]
fn shell_streams_stdio_and_passes_exit_status() {
    let lima = SimulatedLima::new();
    let (name, _) = up(&lima, &[]);

    let mut child = harness_command(
        &lima,
        &[
            "shell",
            &name,
            "--",
            "sh",
            "-c",
            "cat; echo to-stderr >&2; exit 7",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("k3s-harness runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();

    assert_eq!(output.status.code(), Some(7), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "from stdin\n");
    assert!(
        stderr_of(&output).contains("to-stderr"),
        "{}",
        stderr_of(&output)
    );
    let argv = lima
        .invocations()
        .into_iter()
        .find(|argv| argv.first().map(String::as_str) == Some("shell"))
        .expect("limactl shell ran");
    assert!(
        argv.ends_with(&[
            name.clone(),
            "--".to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
            "cat; echo to-stderr >&2; exit 7".to_owned()
        ]),
        "each argument reaches limactl unchanged: {argv:?}"
    );

    let ok = harness(&lima, &["shell", &name, "--workdir", "/", "--", "pwd"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr_of(&ok));

    down(&lima, &name);
}

#[test]
fn import_prints_archive_references() {
    if !components_present(
        "import_prints_archive_references",
        &[Component::Containerd, Component::Sudo],
    ) {
        return;
    }
    let lima = SimulatedLima::new();
    let (name, _) = up(&lima, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("cli.tar");
    write_docker_archive(&archive, &[TestImage::new("cli:1.0")]).unwrap();

    let import = harness(&lima, &["import", &name, &archive.display().to_string()]);

    assert!(
        import.status.success(),
        "import failed: {}",
        stderr_of(&import)
    );
    assert_eq!(stdout_of(&import), "docker.io/library/cli:1.0\n");
    down(&lima, &name);
}

#[test]
fn cached_latest_archive_still_rejected() {
    if !components_present(
        "cached_latest_archive_still_rejected",
        &[Component::Containerd, Component::Sudo],
    ) {
        return;
    }
    let lima = SimulatedLima::new();
    let (name, _) = up(&lima, &[]);
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("latest.tar");
    write_docker_archive(&archive, &[TestImage::new("op:latest")]).unwrap();
    let path = archive.display().to_string();

    let allowed = harness(&lima, &["import", "--allow-latest-images", &name, &path]);
    let again = harness(&lima, &["import", &name, &path]);

    assert!(allowed.status.success(), "{}", stderr_of(&allowed));
    assert!(
        !again.status.success(),
        "the skip must not bypass the check"
    );
    let stderr = stderr_of(&again);
    assert!(stderr.contains("docker.io/library/op:latest"), "{stderr}");
    down(&lima, &name);
}

#[test]
fn import_of_missing_archive_exits_2() {
    let lima = SimulatedLima::new();

    let import = harness(&lima, &["import", "k3sh-any", "/nonexistent/operator.tar"]);

    assert_eq!(import.status.code(), Some(2));
    let stderr = stderr_of(&import);
    assert!(stderr.contains("/nonexistent/operator.tar"), "{stderr}");
    assert!(stderr.contains("docker save"), "the fix is named: {stderr}");
    assert_eq!(
        lima.invocations(),
        Vec::<Vec<String>>::new(),
        "limactl never ran"
    );
}

fn fixture_playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/playbooks/node-prep.yml")
}

#[test]
fn converge_prints_change_counts() {
    if !components_present(
        "converge_prints_change_counts",
        &[Component::Jetp, Component::Sshd],
    ) {
        return;
    }
    let lima = SimulatedLima::new();
    let (name, _) = up(&lima, &[]);
    let target = tempfile::tempdir().unwrap();
    let target_var = format!("target_dir={}", target.path().display());
    let playbook = fixture_playbook().display().to_string();

    let first = harness(&lima, &["converge", &name, &playbook, "-e", &target_var]);
    assert!(
        first.status.success(),
        "converge failed: {}",
        stderr_of(&first)
    );
    assert_eq!(stdout_of(&first), "changed=2\nunchanged=0\n");
    assert!(target.path().join("node-prepared").is_file());

    let again = harness(
        &lima,
        &[
            "converge",
            &name,
            &playbook,
            "-e",
            &target_var,
            "--check-idempotent",
        ],
    );
    assert!(
        again.status.success(),
        "converge failed: {}",
        stderr_of(&again)
    );
    assert_eq!(stdout_of(&again), "changed=0\nunchanged=2\n");
    down(&lima, &name);
}

#[test]
fn nextest_setup_exports_flags_and_reports_phases() {
    let lima = SimulatedLima::new();
    let scratch = tempfile::tempdir().unwrap();
    let env_file = scratch.path().join("nextest.env");
    let state = scratch.path().join("state");
    let state_arg = state.display().to_string();

    let setup = harness_command(
        &lima,
        &[
            "nextest-setup",
            "--cpus",
            "2",
            "--allow-latest-images",
            "--state-dir",
            &state_arg,
        ],
    )
    .env("NEXTEST_ENV", &env_file)
    // A run of its own, whose owner (nextest, or this test process under `cargo test`) outlives
    // the setup script as a real run's does.
    .env("NEXTEST_RUN_ID", format!("cli-test-{}", std::process::id()))
    .output()
    .expect("k3s-harness runs");

    let stderr = stderr_of(&setup);
    assert!(setup.status.success(), "nextest-setup failed: {stderr}");
    let exported = std::fs::read_to_string(&env_file).unwrap();
    let value = |key: &str| {
        exported
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {exported}"))
            .to_owned()
    };
    assert_eq!(value("K3S_HARNESS_CPUS"), "2");
    assert_eq!(value("K3S_HARNESS_ALLOW_LATEST"), "1");
    assert_eq!(value("K3S_HARNESS_STATE_DIR"), state_arg);
    let name = value("K3S_HARNESS_INSTANCE");
    assert!(
        value("K3S_HARNESS_KUBECONFIG").starts_with(&state_arg),
        "{exported}"
    );
    assert!(
        stderr
            .lines()
            .any(|line| progress_text(line) == Some("waiting for the default service account")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("`{name}` booted in")), "{stderr}");
    let start = lima
        .invocations()
        .into_iter()
        .find(|argv| argv.first().map(String::as_str) == Some("start"))
        .expect("limactl start ran");
    assert!(start.contains(&"--cpus=2".to_owned()), "{start:?}");

    let down = harness(&lima, &["down", &name, "--state-dir", &state_arg]);
    assert!(down.status.success(), "{}", stderr_of(&down));
}

#[test]
fn unknown_instance_exits_1_for_every_command() {
    let lima = SimulatedLima::new();

    for args in [
        vec!["status", "k3sh-not-mine"],
        vec!["kubeconfig", "k3sh-not-mine"],
        vec!["kubeconfig", "--export", "k3sh-not-mine"],
        vec!["shell", "k3sh-not-mine", "--", "true"],
        vec!["import", "k3sh-not-mine", "--image", "op:1.0"],
    ] {
        let output = harness(&lima, &args);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            stderr_of(&output)
        );
        assert!(
            stderr_of(&output).contains("not started by k3s-harness"),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
    assert_eq!(
        lima.invocations(),
        Vec::<Vec<String>>::new(),
        "limactl never ran"
    );
}

#[test]
fn invalid_arguments_of_each_command_exit_2() {
    let lima = SimulatedLima::new();
    let missing_playbook = "/nonexistent/playbook.yml";

    for args in [
        vec!["status"],
        vec!["shell", "k3sh-any"],
        vec!["shell", "k3sh-any", "--timeout", "soon", "--", "true"],
        vec!["import", "k3sh-any"],
        vec!["converge", "k3sh-any", missing_playbook],
        vec!["converge", "k3sh-any", missing_playbook, "-e", "no-equals"],
        vec!["nextest-setup", "--destroy", "sometimes"],
        vec!["up", "--allow-latest-images"],
        vec!["list", "--bogus"],
    ] {
        let output = harness(&lima, &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
    assert_eq!(
        lima.invocations(),
        Vec::<Vec<String>>::new(),
        "limactl never ran"
    );
}

#[test]
fn interrupted_list_exits_130() {
    let lima = SimulatedLima::new();
    let (name, _) = up(&lima, &[]);
    let lists_before = lima.count("list");
    let pids_before = lima.logged_pids().len();
    let scratch = tempfile::tempdir().unwrap();
    let stderr_path = scratch.path().join("list.stderr");
    let mut list = harness_command(&lima, &["list"])
        .env("FAKE_LIMACTL_HANG", "list")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("k3s-harness runs");

    let hanging = wait_until(Duration::from_secs(30), || {
        lima.count("list") > lists_before
    })
    .is_some();
    assert!(hanging, "limactl list never ran");
    let pid = Pid::from_raw(i32::try_from(list.id()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGINT).expect("k3s-harness can be signalled");
    let status = list.wait().unwrap();

    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // The hanging `limactl list` runs in a process group of its own, which SIGINT did not
    // reach. Only a pid that still runs the fake is killed, never a reused one.
    let fake = lima.limactl().display().to_string();
    for pid in lima.logged_pids().into_iter().skip(pids_before) {
        let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&command_line).starts_with(&fake) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    down(&lima, &name);
}
