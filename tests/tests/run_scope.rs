//! One cluster per test run. These tests drive nested runs of the `shared-suite` fixture crate
//! (16 tests that call `Cluster::shared`) against the fake `limactl`. The runs go through
//! cargo-nextest, `cargo test` and a test binary run directly. Some kill the runner or a test,
//! one runs two suites at once, and others cover each destroy policy, reuse and
//! `k3s-harness gc`.
//!
//! Every test polls with a deadline instead of sleeping, and its guards stop the nested
//! processes and delete the fake instances it created, even when it fails.

#[path = "run_scope/nested.rs"]
mod nested;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k3s_harness_tests::{SimulatedLima, wait_until, workspace_binary};
use lima_provisioner::{PortForward, pick_free_port, port_forwards_set_expression};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use nested::{
    NestedProcess, RUN_TIMEOUT, SUITE_TESTS, build_suite, cargo, cargo_nextest, listed,
    nextest_args, one_cluster, processes_with_argument, read_results, reaper_log, suite_command,
};

/// Bound on the VM's deletion after a run ends normally.
const DELETE_AFTER_RUN: Duration = Duration::from_secs(5);

/// Bound on the VM's deletion after the runner was killed or interrupted.
const DELETE_AFTER_SIGNAL: Duration = Duration::from_secs(10);

/// Bound on the wait for a nested run's cluster to be up (the suite is already built).
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Bound on the reaper's decision to keep a VM and on its exit afterwards, which follows the
/// diagnostics it collects when a test failed.
const REAPER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long each test keeps using the cluster in the runs that are interrupted, so that the
/// signal lands while tests hold their leases.
const HOLD_MS: &str = "2000";

/// The simulated host, a scratch directory and the suite's test binaries.
///
/// Tests declare their [`NestedProcess`] guards after the fixture, so those drop first and stop
/// the nested processes before the host's guard deletes the instances.
struct Fixture {
    lima: SimulatedLima,
    scratch: tempfile::TempDir,
    binaries: HashMap<String, PathBuf>,
}

impl Fixture {
    fn new() -> Self {
        let lima = SimulatedLima::new();
        let scratch = tempfile::Builder::new()
            .prefix("run-scope")
            .tempdir()
            .expect("a scratch directory can be created");
        let binaries = build_suite(&lima, scratch.path(), &[]);
        Fixture {
            lima,
            scratch,
            binaries,
        }
    }

    fn results(&self, label: &str) -> PathBuf {
        self.scratch.path().join(format!("{label}.results.jsonl"))
    }

    /// Starts `cargo nextest run` over the suite, with `env` added.
    fn nextest(&self, label: &str, env: &[(&str, &str)]) -> NestedProcess {
        let mut command = suite_command(cargo(), &self.lima, &self.results(label));
        command.args(nextest_args()).envs(env.iter().copied());
        NestedProcess::spawn(label, command, self.scratch.path(), &self.lima)
    }

    /// Waits until some instance of this host has a ready record, that is, a run's cluster is
    /// up, and returns its name.
    #[track_caller]
    fn wait_for_ready_cluster(&self, run: &mut NestedProcess) -> String {
        let mut found = None;
        let waited = wait_until(BOOT_TIMEOUT, || {
            found = state_instances(&self.lima)
                .into_iter()
                .find(|name| record_is_ready(&self.lima, name));
            found.is_some() || run.try_finished().is_some()
        });
        match (found, waited) {
            (Some(name), _) => name,
            (None, Some(_)) => panic!(
                "the nested run ended before any cluster was ready:\n{}",
                run.output()
            ),
            (None, None) => panic!(
                "no cluster was ready within {BOOT_TIMEOUT:?}:\n{}",
                run.output()
            ),
        }
    }

    /// Waits until a process of `run` is inside `limactl start` and Lima lists the instance,
    /// and returns the instance and the booting process's pid.
    ///
    /// The booting process writes a record with `"ready": false` and a marker naming itself
    /// (`<state>/<instance>/booting`, JSON), then runs `limactl start` and adds its pid to the
    /// marker. The record becomes ready after the boot, so a listed instance with a record
    /// that is not ready is a VM in the middle of booting.
    #[track_caller]
    fn wait_for_boot(&self, run: &mut NestedProcess) -> (String, i32) {
        let lima = &self.lima;
        let mut booting = None;
        let waited = wait_until(BOOT_TIMEOUT, || {
            booting = state_instances(lima).into_iter().find_map(|name| {
                let record = read_record(lima, &name)?;
                if record["ready"] != false || !listed(lima, &name) {
                    return None;
                }
                let marker = std::fs::read(lima.state_dir().join(&name).join("booting")).ok()?;
                let marker: serde_json::Value = serde_json::from_slice(&marker).ok()?;
                marker["limactl_start"].as_object()?;
                let pid = i32::try_from(marker["booter"]["pid"].as_u64()?).ok()?;
                Some((name, pid))
            });
            booting.is_some() || run.try_finished().is_some()
        });
        let Some((instance, pid)) = booting else {
            panic!(
                "no process reached `limactl start` (waited {waited:?}):\n{}",
                run.output()
            );
        };
        assert!(
            run.owns(pid),
            "pid {pid} from the booting file is a process of this run"
        );
        (instance, pid)
    }

    /// Waits until `instance` is gone from `limactl list` and from the state directory.
    #[track_caller]
    fn assert_deleted_within(&self, instance: &str, timeout: Duration, since: Instant) {
        let remaining = timeout.saturating_sub(since.elapsed());
        let deleted = wait_until(remaining, || {
            !listed(&self.lima, instance) && !self.lima.state_dir().join(instance).exists()
        });
        assert!(
            deleted.is_some(),
            "instance {instance} still exists {timeout:?} after the run ended; limactl list: {:?}; \
             state files: {:?}; record: {}; reaper log:\n{}",
            self.lima.instance_names(),
            state_files(&self.lima, instance),
            read_record(&self.lima, instance)
                .map_or_else(|| "none".to_owned(), |record| record.to_string()),
            reaper_log(&self.lima, instance)
        );
    }

    /// Waits until `run` left no process behind: no process carries its marker (test
    /// processes, reapers) and no process names a file in this host's Lima home (the fake's host
    /// agents and VMs).
    #[track_caller]
    fn assert_no_processes_left(&self, run: &NestedProcess) {
        let home = self.lima.home().to_string_lossy().into_owned();
        let leftovers = || {
            let mut processes = run.processes();
            processes.extend(processes_with_argument(&home));
            processes
        };
        let exited = wait_until(REAPER_TIMEOUT, || leftovers().is_empty());
        assert!(
            exited.is_some(),
            "processes of the nested run are still running: {:#?}",
            leftovers()
                .iter()
                .map(|process| (process.pid, &process.command_line))
                .collect::<Vec<_>>()
        );
    }

    /// Waits until the reaper marked `instance` as kept and exited, then checks that the VM
    /// still runs.
    #[track_caller]
    fn assert_kept(&self, instance: &str, run: &NestedProcess) {
        let marked = wait_until(REAPER_TIMEOUT, || {
            read_record(&self.lima, instance).is_some_and(|record| record["kept"] == true)
        });
        assert!(
            marked.is_some(),
            "the reaper did not mark {instance} as kept within {REAPER_TIMEOUT:?}; record: {:?}; \
             reaper log:\n{}",
            read_record(&self.lima, instance),
            reaper_log(&self.lima, instance)
        );
        let reaper_exited = wait_until(REAPER_TIMEOUT, || {
            run.processes().iter().all(|process| !process.is_reaper())
        });
        assert!(
            reaper_exited.is_some(),
            "the reaper of {instance} is still running after marking it kept"
        );
        assert!(
            listed(&self.lima, instance),
            "the kept instance {instance} is still listed: {:?}",
            self.lima.instance_names()
        );
        assert_eq!(
            instance_status(&self.lima, instance).as_deref(),
            Some("Running"),
            "the kept instance {instance} still runs"
        );
    }
}

impl Drop for Fixture {
    /// Deletes every instance of this host, then kills the processes still naming a file in its
    /// Lima home: fake VMs whose instance directory a deletion removed while they started. The
    /// host's own guard runs afterwards and finds nothing left. Nothing here panics, because a
    /// panic while the test unwinds would abort the test binary.
    fn drop(&mut self) {
        let instances = std::fs::read_dir(self.lima.home())
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| !name.starts_with('_'));
        for name in instances {
            let mut delete = self.lima.command();
            delete.args(["delete", "--tty=false", "-f", &name]);
            run_quietly(delete, DELETE_TIMEOUT);
        }
        let home = self.lima.home().to_string_lossy().into_owned();
        for process in processes_with_argument(&home) {
            let _ = kill(Pid::from_raw(process.pid), Signal::SIGKILL);
        }
    }
}

/// Bound on one `limactl delete -f` of a fake instance during cleanup.
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `command` with its output discarded, and kills it after `timeout`. Failures are
/// ignored: this is cleanup after the checks.
fn run_quietly(mut command: Command, timeout: Duration) {
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let Ok(mut child) = command.spawn() else {
        return;
    };
    let exited = wait_until(timeout, || child.try_wait().ok().flatten().is_some());
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Returns the diagnostics directory named in `text` (the failure output, a reaper log): the
/// path after "are in ", up to the next `;`.
#[track_caller]
fn diagnostics_dir_named(text: &str) -> PathBuf {
    let marker = " are in ";
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("no diagnostics directory named in:\n{text}"))
        + marker.len();
    let rest = &text[start..];
    let end = rest.find(';').unwrap_or(rest.len());
    PathBuf::from(&rest[..end])
}

/// Lists the instance directories in the harness's state directory.
fn state_instances(lima: &SimulatedLima) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(lima.state_dir()) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect()
}

/// Lists the names of the files in `instance`'s state directory.
fn state_files(lima: &SimulatedLima, instance: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(lima.state_dir().join(instance)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Returns whether `instance` has a record that is ready for tests to attach to. A record
/// without the `ready` field counts as ready.
fn record_is_ready(lima: &SimulatedLima, instance: &str) -> bool {
    read_record(lima, instance).is_some_and(|record| record["ready"] != false)
}

fn record_path(lima: &SimulatedLima, instance: &str) -> PathBuf {
    lima.state_dir().join(instance).join("cluster.json")
}

fn read_record(lima: &SimulatedLima, instance: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(record_path(lima, instance)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Returns the `status` that `limactl list --json` reports for `instance`.
fn instance_status(lima: &SimulatedLima, instance: &str) -> Option<String> {
    let output = lima
        .command()
        .args(["list", "--json", instance])
        .output()
        .expect("the fake limactl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let first = stdout.lines().next()?;
    let value: serde_json::Value = serde_json::from_str(first).ok()?;
    value["status"].as_str().map(str::to_owned)
}

fn distinct_tests(lines: &[nested::ResultLine]) -> BTreeSet<&str> {
    lines.iter().map(|line| line.test.as_str()).collect()
}

fn distinct_pids(lines: &[nested::ResultLine]) -> BTreeSet<u32> {
    lines.iter().map(|line| line.pid).collect()
}

/// Returns the executable name of process `pid` (`/proc/<pid>/comm`).
fn process_name(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn nextest_run_shares_one_vm() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;

    let mut run = fixture.nextest("nextest", &[]);
    let finished = run.wait(RUN_TIMEOUT);

    assert!(
        finished.status.success(),
        "the nested run passes:\n{}",
        run.output()
    );
    let lines = read_results(&fixture.results("nextest"));
    assert_eq!(
        distinct_tests(&lines).len(),
        SUITE_TESTS,
        "every test recorded one result:\n{lines:#?}"
    );
    assert_eq!(lines.len(), SUITE_TESTS, "no test recorded twice");
    assert_eq!(
        distinct_pids(&lines).len(),
        SUITE_TESTS,
        "nextest ran every test in its own process"
    );
    let (instance, _) = one_cluster(&lines);
    assert_eq!(
        lima.count("start"),
        1,
        "one `limactl start` for the whole run: {:?}",
        lima.invocations()
    );
    fixture.assert_deleted_within(&instance, DELETE_AFTER_RUN, finished.at);
    assert!(
        !run.output().contains("LEAK"),
        "no test leaked a process holding its output (the reaper must not inherit the test's \
         stdout or stderr):\n{}",
        run.output()
    );
    fixture.assert_no_processes_left(&run);
}

#[test]
fn setup_script_boots_shared_vm() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;
    // The profile's setup script runs `k3s-harness nextest-setup` from the target directory.
    workspace_binary("k3s-harness");
    let results = fixture.results("setup-script");
    let mut command = suite_command(cargo(), lima, &results);
    command
        .args(nextest_args())
        .args(["--profile", "shared-vm"]);

    let mut run = NestedProcess::spawn("setup-script", command, fixture.scratch.path(), lima);
    let finished = run.wait(RUN_TIMEOUT);

    assert!(
        finished.status.success(),
        "the nested run passes:\n{}",
        run.output()
    );
    assert!(
        run.output().contains("k3s-cluster"),
        "nextest ran the `k3s-cluster` setup script:\n{}",
        run.output()
    );
    let lines = read_results(&results);
    assert_eq!(lines.len(), SUITE_TESTS, "{lines:#?}");
    let (instance, _) = one_cluster(&lines);
    assert_eq!(
        lima.count("start"),
        1,
        "the setup script booted the only VM: {:?}",
        lima.invocations()
    );
    fixture.assert_deleted_within(&instance, DELETE_AFTER_RUN, finished.at);
    fixture.assert_no_processes_left(&run);
}

#[test]
fn cargo_test_run_shares_one_vm() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;
    let mut command = suite_command(cargo(), lima, &fixture.results("cargo-test"));
    command.args([
        "test",
        "-p",
        nested::SUITE_PACKAGE,
        "--profile",
        &nested::cargo_profile(),
        "--",
        "--ignored",
    ]);

    let mut run = NestedProcess::spawn("cargo-test", command, fixture.scratch.path(), lima);
    let finished = run.wait(RUN_TIMEOUT);

    assert!(
        finished.status.success(),
        "the nested run passes:\n{}",
        run.output()
    );
    let lines = read_results(&fixture.results("cargo-test"));
    assert_eq!(
        distinct_tests(&lines).len(),
        SUITE_TESTS,
        "every test recorded one result:\n{lines:#?}"
    );
    assert_eq!(
        distinct_pids(&lines).len(),
        2,
        "cargo test ran the alpha and beta binaries as two processes"
    );
    let (instance, _) = one_cluster(&lines);
    assert_eq!(
        lima.count("start"),
        1,
        "both test binaries share one VM: {:?}",
        lima.invocations()
    );
    fixture.assert_deleted_within(&instance, DELETE_AFTER_RUN, finished.at);
    fixture.assert_no_processes_left(&run);
}

#[test]
fn standalone_binary_deletes_vm_at_exit() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;
    let results = fixture.results("standalone");
    let mut command = suite_command(&fixture.binaries["alpha"], lima, &results);
    command.args(["--ignored", "--test-threads", "8"]);

    let mut run = NestedProcess::spawn("standalone", command, fixture.scratch.path(), lima);
    let finished = run.wait(RUN_TIMEOUT);

    assert!(
        finished.status.success(),
        "the test binary passes:\n{}",
        run.output()
    );
    let lines = read_results(&results);
    assert_eq!(
        distinct_tests(&lines).len(),
        8,
        "every alpha test recorded one result:\n{lines:#?}"
    );
    let (instance, _) = one_cluster(&lines);
    assert_eq!(lima.count("start"), 1, "{:?}", lima.invocations());
    fixture.assert_deleted_within(&instance, DELETE_AFTER_RUN, finished.at);
    fixture.assert_no_processes_left(&run);
}

#[test]
fn runner_sigkill_deletes_vm() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;
    let results = fixture.results("killed-runner");
    let mut command = suite_command(cargo_nextest(), lima, &results);
    command
        .args(nextest_args())
        .env("SHARED_SUITE_HOLD_MS", HOLD_MS);
    let mut run = NestedProcess::spawn("killed-runner", command, fixture.scratch.path(), lima);

    let instance = fixture.wait_for_ready_cluster(&mut run);
    assert_eq!(
        process_name(run.pid()),
        "cargo-nextest",
        "the spawned process is the nextest runner"
    );
    let lines_before_kill = read_results(&results).len();
    kill(Pid::from_raw(run.pid()), Signal::SIGKILL).expect("the runner can be killed");
    let killed_at = Instant::now();
    run.wait(Duration::from_secs(10));

    fixture.assert_deleted_within(&instance, DELETE_AFTER_SIGNAL, killed_at);
    let lines = read_results(&results);
    assert!(
        lines.len() > lines_before_kill,
        "tests that held the cluster when the runner died finished with it \
         ({lines_before_kill} results before the kill, {} after)",
        lines.len()
    );
    let (recorded, _) = one_cluster(&lines);
    assert_eq!(recorded, instance);
    assert_eq!(lima.count("start"), 1, "{:?}", lima.invocations());
    fixture.assert_no_processes_left(&run);
}

#[test]
fn run_group_sigint_deletes_vm() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;
    let mut run = fixture.nextest("interrupted", &[("SHARED_SUITE_HOLD_MS", HOLD_MS)]);

    let instance = fixture.wait_for_ready_cluster(&mut run);
    killpg(Pid::from_raw(run.pid()), Signal::SIGINT).expect("the run's process group exists");
    let interrupted_at = Instant::now();
    let finished = run.wait(Duration::from_secs(30));

    assert!(
        !finished.status.success(),
        "an interrupted run fails:\n{}",
        run.output()
    );
    fixture.assert_deleted_within(&instance, DELETE_AFTER_SIGNAL, interrupted_at);
    let lines = read_results(&fixture.results("interrupted"));
    if !lines.is_empty() {
        let (recorded, _) = one_cluster(&lines);
        assert_eq!(recorded, instance);
    }
    assert_eq!(lima.count("start"), 1, "{:?}", lima.invocations());
    fixture.assert_no_processes_left(&run);
}

#[test]
fn sigint_during_boot_deletes_vm() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;
    let mut run = fixture.nextest(
        "interrupted-boot",
        &[("FAKE_LIMACTL_BOOT_DELAY_MS", "3000")],
    );

    let (instance, _) = fixture.wait_for_boot(&mut run);
    killpg(Pid::from_raw(run.pid()), Signal::SIGINT).expect("the run's process group exists");
    let interrupted_at = Instant::now();
    let finished = run.wait(Duration::from_secs(30));

    assert!(
        !finished.status.success(),
        "an interrupted run fails:\n{}",
        run.output()
    );
    assert!(
        read_results(&fixture.results("interrupted-boot")).is_empty(),
        "no test got a cluster"
    );
    fixture.assert_deleted_within(&instance, DELETE_AFTER_SIGNAL, interrupted_at);
    assert_eq!(
        lima.instance_names(),
        Vec::<String>::new(),
        "no instance is left"
    );
    fixture.assert_no_processes_left(&run);
}

#[test]
fn booting_test_sigkill_leaves_one_vm() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;
    let mut run = fixture.nextest("killed-boot", &[("FAKE_LIMACTL_BOOT_DELAY_MS", "3000")]);

    let (instance, booting_pid) = fixture.wait_for_boot(&mut run);
    kill(Pid::from_raw(booting_pid), Signal::SIGKILL).expect("the booting test can be killed");
    let finished = run.wait(RUN_TIMEOUT);

    assert!(
        !finished.status.success(),
        "the killed test fails the run:\n{}",
        run.output()
    );
    let lines = read_results(&fixture.results("killed-boot"));
    assert_eq!(
        lines.len(),
        SUITE_TESTS - 1,
        "every test but the killed one recorded a result:\n{lines:#?}\n{}",
        run.output()
    );
    assert!(
        !distinct_pids(&lines).contains(&u32::try_from(booting_pid).unwrap()),
        "the killed process recorded nothing"
    );
    let (recorded, _) = one_cluster(&lines);
    assert_eq!(recorded, instance, "the run keeps its instance name");
    assert_eq!(
        lima.count("start"),
        2,
        "the interrupted boot and one more: {:?}",
        lima.invocations()
    );
    fixture.assert_deleted_within(&instance, DELETE_AFTER_RUN, finished.at);
    assert_eq!(
        lima.instance_names(),
        Vec::<String>::new(),
        "no instance is left, the half-booted one included"
    );
    assert_eq!(
        state_instances(lima),
        Vec::<String>::new(),
        "no state directory is left"
    );
    fixture.assert_no_processes_left(&run);
}

#[test]
fn concurrent_runs_get_separate_vms() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;

    let mut first = fixture.nextest("first", &[]);
    let mut second = fixture.nextest("second", &[]);
    let first_finished = first.wait(RUN_TIMEOUT);
    let second_finished = second.wait(RUN_TIMEOUT);

    assert!(
        first_finished.status.success(),
        "the first run passes:\n{}",
        first.output()
    );
    assert!(
        second_finished.status.success(),
        "the second run passes:\n{}",
        second.output()
    );
    let first_lines = read_results(&fixture.results("first"));
    let second_lines = read_results(&fixture.results("second"));
    assert_eq!(first_lines.len(), SUITE_TESTS, "{first_lines:#?}");
    assert_eq!(second_lines.len(), SUITE_TESTS, "{second_lines:#?}");
    let (first_instance, first_port) = one_cluster(&first_lines);
    let (second_instance, second_port) = one_cluster(&second_lines);
    assert_ne!(first_instance, second_instance, "each run has its own VM");
    assert_ne!(first_port, second_port, "each VM has its own API port");
    assert_eq!(lima.count("start"), 2, "{:?}", lima.invocations());
    fixture.assert_deleted_within(&first_instance, DELETE_AFTER_RUN, first_finished.at);
    fixture.assert_deleted_within(&second_instance, DELETE_AFTER_RUN, second_finished.at);
    fixture.assert_no_processes_left(&first);
    fixture.assert_no_processes_left(&second);
}

#[test]
fn on_success_keeps_only_failed_runs() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;

    let mut failing = fixture.nextest(
        "failing",
        &[
            ("K3S_HARNESS_DESTROY", "on-success"),
            ("SHARED_SUITE_FAIL", "1"),
        ],
    );
    let failed = failing.wait(RUN_TIMEOUT);
    assert!(
        !failed.status.success(),
        "the run with a failing test fails:\n{}",
        failing.output()
    );
    let lines = read_results(&fixture.results("failing"));
    assert_eq!(lines.len(), SUITE_TESTS, "{lines:#?}");
    let (kept_instance, _) = one_cluster(&lines);
    fixture.assert_kept(&kept_instance, &failing);
    let output = failing.output();
    assert!(
        output.contains(&format!("limactl shell {kept_instance}")),
        "the failure output says how to open a shell in the kept VM:\n{output}"
    );
    let kubeconfig = lima
        .state_dir()
        .join(&kept_instance)
        .join("kubeconfig.yaml");
    assert!(
        output.contains(&format!("KUBECONFIG={}", kubeconfig.display())),
        "the failure output names the kept VM's kubeconfig:\n{output}"
    );
    let diagnostics = lima.state_dir().join(&kept_instance).join("diagnostics");
    let at_failure = diagnostics_dir_named(&output);
    assert_eq!(
        at_failure.parent(),
        Some(diagnostics.as_path()),
        "the failure output names the diagnostics collected when the test failed:\n{output}"
    );
    assert!(
        at_failure.to_string_lossy().contains("-test-failed-"),
        "{}",
        at_failure.display()
    );
    for file in ["collectors.txt", "host-agent.log", "nodes.txt"] {
        assert!(
            at_failure.join(file).is_file(),
            "{file} is collected in {}",
            at_failure.display()
        );
    }
    let log = reaper_log(lima, &kept_instance);
    let at_end = diagnostics_dir_named(&log);
    assert!(
        at_end.to_string_lossy().contains("-run-ended-") && at_end.join("collectors.txt").is_file(),
        "the reaper collects diagnostics when it keeps the VM and logs where:\n{log}"
    );

    let mut passing = fixture.nextest("passing", &[("K3S_HARNESS_DESTROY", "on-success")]);
    let passed = passing.wait(RUN_TIMEOUT);
    assert!(
        passed.status.success(),
        "the passing run passes:\n{}",
        passing.output()
    );
    let lines = read_results(&fixture.results("passing"));
    assert_eq!(lines.len(), SUITE_TESTS, "{lines:#?}");
    let (deleted, _) = one_cluster(&lines);
    assert_ne!(deleted, kept_instance, "a new run gets a new VM");
    fixture.assert_deleted_within(&deleted, DELETE_AFTER_RUN, passed.at);
    assert!(
        listed(lima, &kept_instance),
        "the passing run left the kept VM alone"
    );
}

#[test]
fn never_policy_keeps_vm() {
    let fixture = Fixture::new();

    let mut run = fixture.nextest("never", &[("K3S_HARNESS_DESTROY", "never")]);
    let finished = run.wait(RUN_TIMEOUT);

    assert!(
        finished.status.success(),
        "the nested run passes:\n{}",
        run.output()
    );
    let lines = read_results(&fixture.results("never"));
    assert_eq!(lines.len(), SUITE_TESTS, "{lines:#?}");
    let (instance, _) = one_cluster(&lines);
    fixture.assert_kept(&instance, &run);
    assert!(
        !fixture
            .lima
            .state_dir()
            .join(&instance)
            .join("diagnostics")
            .exists(),
        "a run without failures collects no diagnostics"
    );
}

#[test]
fn reuse_attaches_and_rejects_stale_spec() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;
    let reuse = [("K3S_HARNESS_REUSE", "1")];

    let mut first = fixture.nextest("reuse-first", &reuse);
    let first_finished = first.wait(RUN_TIMEOUT);
    assert!(
        first_finished.status.success(),
        "the first run passes:\n{}",
        first.output()
    );
    let (instance, port) = one_cluster(&read_results(&fixture.results("reuse-first")));
    assert!(
        listed(lima, &instance),
        "the reused VM outlives its first run"
    );
    assert_eq!(lima.count("start"), 1);

    let mut second = fixture.nextest("reuse-second", &reuse);
    let second_finished = second.wait(RUN_TIMEOUT);
    assert!(
        second_finished.status.success(),
        "the second run passes:\n{}",
        second.output()
    );
    let second_lines = read_results(&fixture.results("reuse-second"));
    assert_eq!(second_lines.len(), SUITE_TESTS, "{second_lines:#?}");
    assert_eq!(
        one_cluster(&second_lines),
        (instance.clone(), port),
        "the second run attached to the first run's VM"
    );
    assert_eq!(
        lima.count("start"),
        1,
        "the second run booted nothing: {:?}",
        lima.invocations()
    );

    let path = record_path(lima, &instance);
    let mut record = read_record(lima, &instance).expect("the reused VM has a record");
    record["fingerprint"] = serde_json::Value::from("0000000000000000");
    std::fs::write(&path, serde_json::to_vec_pretty(&record).unwrap())
        .expect("the record can be edited");

    let mut stale = fixture.nextest("reuse-stale", &reuse);
    let stale_finished = stale.wait(RUN_TIMEOUT);
    let output = stale.output();
    assert!(
        !stale_finished.status.success(),
        "a run whose spec does not match the kept VM fails:\n{output}"
    );
    assert!(
        read_results(&fixture.results("reuse-stale")).is_empty(),
        "no test attached to the stale VM"
    );
    assert!(
        output.contains(&instance) && output.contains("fingerprint"),
        "the error names the instance and the fingerprint mismatch:\n{output}"
    );
    assert_eq!(
        lima.count("start"),
        1,
        "the stale VM was not replaced behind the developer's back"
    );
    assert!(
        listed(lima, &instance),
        "the stale VM is left for the developer"
    );
}

/// Boots `name` with `limactl start` directly (not through the harness), with the API server on
/// a free host port so it does not collide with other fake clusters on 6443.
fn start_directly(lima: &SimulatedLima, scratch: &Path, name: &str) -> u16 {
    let port = pick_free_port().expect("a free port");
    let mut command = suite_command(
        lima.limactl(),
        lima,
        &scratch.join(format!("{name}.results.jsonl")),
    );
    command.args([
        "start".to_owned(),
        "--tty=false".to_owned(),
        format!("--name={name}"),
        format!(
            "--set={}",
            port_forwards_set_expression(&PortForward::pin_api_server(port))
        ),
        "template:k3s".to_owned(),
    ]);
    let mut start = NestedProcess::spawn(&format!("start-{name}"), command, scratch, lima);
    let finished = start.wait(BOOT_TIMEOUT);
    assert!(
        finished.status.success(),
        "limactl start {name} failed:\n{}",
        start.output()
    );
    port
}

/// Writes a harness record for an instance booted with [`start_directly`].
fn write_record(lima: &SimulatedLima, name: &str, port: u16, owner: (u32, u64), kept: bool) {
    let dir = lima.state_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let record = serde_json::json!({
        "instance": name,
        "limactl": lima.limactl(),
        "lima_home": lima.home(),
        "limactl_env": [["FAKE_LIMACTL_LOG", lima.log_path()]],
        "api_port": port,
        "kubeconfig": dir.join("kubeconfig.yaml"),
        "fingerprint": "0123456789abcdef",
        "platform": "linux/amd64",
        "owner": { "pid": owner.0, "start_time": owner.1 },
        "run_key": format!("test-{name}"),
        "destroy_policy": "always",
        "reuse": false,
        "kept": kept,
    });
    std::fs::write(
        dir.join("cluster.json"),
        serde_json::to_vec_pretty(&record).unwrap(),
    )
    .unwrap();
}

/// Returns the pid and start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`) of
/// this process.
fn current_process_identity() -> (u32, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs is mounted");
    let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let start_time = after_name
        .split_whitespace()
        .nth(19)
        .and_then(|field| field.parse().ok())
        .expect("stat field 22 is the start time");
    (std::process::id(), start_time)
}

/// Returns the pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("`true` runs");
    let pid = child.id();
    child.wait().expect("`true` exits");
    pid
}

#[test]
fn gc_deletes_only_orphans() {
    let fixture = Fixture::new();
    let lima = &fixture.lima;
    let scratch = &fixture.scratch;

    let orphan = "k3sh-gc-orphan";
    let live = "k3sh-gc-live";
    let kept_orphan = "k3sh-gc-kept";
    let other = "other";
    let port = start_directly(lima, scratch.path(), orphan);
    write_record(lima, orphan, port, (dead_pid(), 1), false);
    let port = start_directly(lima, scratch.path(), live);
    write_record(lima, live, port, current_process_identity(), false);
    let port = start_directly(lima, scratch.path(), kept_orphan);
    write_record(lima, kept_orphan, port, (dead_pid(), 1), true);
    start_directly(lima, scratch.path(), other);

    let mut command = suite_command(
        workspace_binary("k3s-harness"),
        lima,
        &scratch.path().join("gc.results.jsonl"),
    );
    command.arg("gc");
    let mut gc = NestedProcess::spawn("gc", command, scratch.path(), lima);
    let finished = gc.wait(Duration::from_secs(60));

    assert!(finished.status.success(), "gc succeeds:\n{}", gc.output());
    let names = lima.instance_names();
    assert!(
        !names.iter().any(|name| name == orphan),
        "the orphan is deleted: {names:?}\n{}",
        gc.output()
    );
    assert!(
        !lima.state_dir().join(orphan).exists(),
        "the orphan's state directory is removed"
    );
    assert!(
        names.iter().any(|name| name == live),
        "an instance whose owner runs is left alone: {names:?}\n{}",
        gc.output()
    );
    assert!(
        names.iter().any(|name| name == kept_orphan),
        "a kept instance is left alone: {names:?}\n{}",
        gc.output()
    );
    assert!(
        names.iter().any(|name| name == other),
        "an instance the harness did not start is left alone: {names:?}\n{}",
        gc.output()
    );
    let deletes: Vec<Vec<String>> = lima
        .invocations()
        .into_iter()
        .filter(|argv| {
            argv.iter()
                .find(|arg| !arg.starts_with('-'))
                .map(String::as_str)
                == Some("delete")
        })
        .collect();
    assert!(
        deletes
            .iter()
            .all(|argv| argv.iter().any(|arg| arg == orphan)),
        "gc deleted only the orphan: {deletes:?}"
    );
}
