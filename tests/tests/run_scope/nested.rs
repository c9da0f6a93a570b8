//! Nested runs of the `shared-suite` fixture crate against a [`SimulatedLima`]. This module
//! builds the suite, spawns `cargo nextest`, `cargo test` or a test binary with the fake's
//! environment, reads the suite's result lines, and finds the processes a nested run left behind.
//!
//! Shared by the run-scope tests and the attach benchmark (`benches/attach.rs`).
//!
//! NOTE: finding a run's processes reads `/proc/<pid>/environ`, so this works on Linux only,
//! like the fake `limactl` itself.

// The benchmark uses a subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k3s_harness_tests::{SimulatedLima, target_bin_dir};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Deserialize;

/// The fixture crate whose tests the nested runs execute.
pub const SUITE_PACKAGE: &str = "shared-suite";

/// Number of tests in the suite's `alpha` and `beta` binaries together.
pub const SUITE_TESTS: usize = 16;

/// Variable that names the file the suite's tests append their result lines to. Its value is
/// unique per nested run, so it also marks every process that run started.
pub const RESULTS_ENV: &str = "SHARED_SUITE_RESULTS";

/// Variable set in the environment of the harness's reaper processes, which the harness starts
/// by running the test binary again with this variable naming the instance's state directory.
pub const REAPER_ENV: &str = "K3S_HARNESS_REAPER";

/// Bound on building the suite: the first build compiles `k3s-harness` with the suite's
/// feature set, which the workspace build does not produce.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Bound on one nested run once the suite is built: 16 tests against the fake take seconds, so
/// this only stops a hang.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Pause between two checks while polling for a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Bound on a process group's exit after SIGTERM before it gets SIGKILL, when a guard stops a
/// nested run that is still running.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);

/// Prefixes of variables that must not leak from the outer test process into a nested run:
/// the outer nextest run's identity, the harness's, the fake's and the suite's settings, and the
/// package variables cargo sets for the outer test. Build scripts such as ring's declare
/// `rerun-if-env-changed` on `CARGO_PKG_*` and `CARGO_MANIFEST_DIR`, so leaking those would make
/// the nested cargo rebuild shared dependencies, and the next outer build rebuild them again.
const SCRUBBED_PREFIXES: &[&str] = &[
    "NEXTEST",
    "__NEXTEST",
    "K3S_HARNESS_",
    "FAKE_LIMACTL_",
    "SHARED_SUITE_",
    "CARGO_PKG_",
    "CARGO_CFG_",
    "CARGO_BIN_",
];

/// Single variables that must not leak into a nested run, for the same reasons.
const SCRUBBED_NAMES: &[&str] = &[
    "LIMACTL",
    "LIMA_HOME",
    "KUBECONFIG",
    "CARGO_TARGET_DIR",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// Returns the cargo binary: `CARGO`, which cargo and nextest set for the test processes they
/// run, else `cargo` on `PATH`.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// Returns the `cargo-nextest` binary: next to [`cargo`] when it is there, else on `PATH`.
pub fn cargo_nextest() -> PathBuf {
    let beside_cargo = cargo().parent().map(|dir| dir.join("cargo-nextest"));
    if let Some(path) = beside_cargo.filter(|path| path.is_file()) {
        return path;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("cargo-nextest"))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "cargo-nextest is not on PATH; install it with `cargo install cargo-nextest --locked`"
            )
        })
}

/// Returns the workspace root, where nested cargo commands run.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_owned()
}

/// Returns the target directory of the outer build, shared with the nested runs so they reuse
/// its artifacts.
pub fn target_dir() -> PathBuf {
    target_bin_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .to_owned()
}

/// Returns the cargo profile of the outer build (`target/debug` is the `dev` profile), so
/// nested runs build into the same profile directory.
pub fn cargo_profile() -> String {
    let directory = target_bin_dir();
    let name = directory
        .file_name()
        .and_then(OsStr::to_str)
        .expect("the profile directory has a UTF-8 name");
    match name {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    }
}

/// Builds a command that runs in the workspace root with the outer build's target directory,
/// stdin null, its own process group, and the environment of the outer process minus
/// everything in [`SCRUBBED_PREFIXES`] and [`SCRUBBED_NAMES`].
pub fn scrubbed_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else {
            continue;
        };
        let scrubbed = SCRUBBED_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
            || SCRUBBED_NAMES.contains(&name);
        if scrubbed {
            command.env_remove(name);
        }
    }
    command
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_TERM_COLOR", "never")
        .stdin(Stdio::null())
        .process_group(0);
    command
}

/// Builds a command for a nested run: a [`scrubbed_command`] with the simulated host's
/// `LIMACTL`, `LIMA_HOME`, `K3S_HARNESS_STATE_DIR` and `FAKE_LIMACTL_LOG`, bounds sized for the
/// fake, and `SHARED_SUITE_RESULTS=results`.
pub fn suite_command(program: impl AsRef<OsStr>, lima: &SimulatedLima, results: &Path) -> Command {
    let mut command = scrubbed_command(program);
    command
        .env("LIMACTL", lima.limactl())
        .env("LIMA_HOME", lima.home())
        .env("K3S_HARNESS_STATE_DIR", lima.state_dir())
        .env("FAKE_LIMACTL_LOG", lima.log_path())
        .env("K3S_HARNESS_START_TIMEOUT", "120s")
        .env("K3S_HARNESS_READY_TIMEOUT", "60s")
        .env(RESULTS_ENV, results);
    command
}

/// Arguments after `cargo` (or `cargo-nextest`) that run every ignored test of the suite with
/// eight test processes at a time.
pub fn nextest_args() -> Vec<String> {
    [
        "nextest",
        "run",
        "-p",
        SUITE_PACKAGE,
        "--run-ignored",
        "only",
        "--test-threads",
        "8",
        "--no-fail-fast",
        "--cargo-profile",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .chain([cargo_profile()])
    .collect()
}

/// Builds the suite's test binaries (with `features`) and returns their paths by target name.
///
/// Runs `cargo test -p shared-suite --no-run --message-format=json` in the nested runs'
/// environment, so a nested run afterwards finds everything up to date.
pub fn build_suite(
    lima: &SimulatedLima,
    scratch: &Path,
    features: &[&str],
) -> HashMap<String, PathBuf> {
    let mut command = suite_command(cargo(), lima, &scratch.join("build-results.jsonl"));
    command.args([
        "test",
        "-p",
        SUITE_PACKAGE,
        "--no-run",
        "--message-format=json",
        "--profile",
        &cargo_profile(),
    ]);
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }

    let mut build = NestedProcess::spawn("build", command, scratch, lima);
    let finished = build.wait(BUILD_TIMEOUT);
    assert!(
        finished.status.success(),
        "building the suite failed ({}):\n{}",
        finished.status,
        build.stderr()
    );

    let stdout = build.stdout();
    let mut binaries = HashMap::new();
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "test"));
        let executable = message["executable"].as_str();
        let name = message["target"]["name"].as_str();
        if let (true, Some(executable), Some(name)) = (is_test, executable, name) {
            binaries.insert(name.to_owned(), PathBuf::from(executable));
        }
    }
    assert!(
        binaries.contains_key("alpha") && binaries.contains_key("beta"),
        "the build reported no alpha and beta test binaries: {binaries:?}"
    );
    binaries
}

/// How a nested process ended.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// When the outer test saw it exit.
    pub at: Instant,
    /// Time from spawn to exit.
    pub elapsed: Duration,
}

/// A nested process with its own process group and its output in files.
///
/// Dropping it while the process still runs sends SIGTERM to its process group, then SIGKILL
/// after [`TERMINATE_GRACE`]. When the outer test is panicking, the drop also kills every
/// process left with this run's [`RESULTS_ENV`] marker, such as test processes whose runner
/// died and the harness's reapers. It spares the fake `limactl`'s own processes, because they
/// belong to instances, which the [`SimulatedLima`] guard deletes with `limactl delete -f`.
pub struct NestedProcess {
    label: String,
    child: Child,
    started: Instant,
    finished: Option<Finished>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    marker: String,
    limactl: PathBuf,
}

impl NestedProcess {
    /// Spawns `command` (built with [`suite_command`], or with `SHARED_SUITE_RESULTS` set to a
    /// unique path) with stdout and stderr redirected to `<scratch>/<label>.stdout` and
    /// `.stderr`.
    pub fn spawn(label: &str, command: Command, scratch: &Path, lima: &SimulatedLima) -> Self {
        Self::spawn_beside(label, command, scratch, lima.limactl())
    }

    /// Works like [`spawn`](Self::spawn) for a command that needs no simulated host. The drop
    /// leaves the processes of the fake `limactl` at `limactl` alone.
    pub fn spawn_beside(label: &str, mut command: Command, scratch: &Path, limactl: &Path) -> Self {
        let marker = command
            .get_envs()
            .find(|(name, _)| *name == RESULTS_ENV)
            .and_then(|(_, value)| value)
            .map(|value| value.to_string_lossy().into_owned())
            .expect("nested commands set SHARED_SUITE_RESULTS");
        let stdout_path = scratch.join(format!("{label}.stdout"));
        let stderr_path = scratch.join(format!("{label}.stderr"));
        let stdout = File::create(&stdout_path).expect("the nested run's stdout file is created");
        let stderr = File::create(&stderr_path).expect("the nested run's stderr file is created");
        command.stdout(stdout).stderr(stderr);

        let rendered = render_command(&command);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("failed to spawn {rendered}: {error}"));
        NestedProcess {
            label: label.to_owned(),
            child,
            started: Instant::now(),
            finished: None,
            stdout_path,
            stderr_path,
            marker: format!("{RESULTS_ENV}={marker}"),
            limactl: limactl.to_owned(),
        }
    }

    /// Returns the process id, which is also its process group id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pids fit in i32")
    }

    /// Returns how the process ended, if it has.
    pub fn try_finished(&mut self) -> Option<Finished> {
        if self.finished.is_none() {
            let status = self
                .child
                .try_wait()
                .unwrap_or_else(|error| panic!("waiting for {} failed: {error}", self.label));
            if let Some(status) = status {
                let at = Instant::now();
                self.finished = Some(Finished {
                    status,
                    at,
                    elapsed: at - self.started,
                });
            }
        }
        self.finished
    }

    /// Waits up to `timeout` from now for the process to exit. When it is still running then,
    /// stops its process group and panics with its output.
    pub fn wait(&mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(finished) = self.try_finished() {
                return finished;
            }
            if Instant::now() > deadline {
                self.terminate();
                panic!(
                    "{} timed out after {timeout:?}; output:\n{}",
                    self.label,
                    self.output()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Returns its stdout and stderr so far, for failure messages.
    pub fn output(&self) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        format!(
            "--- {label} stdout ---\n{}\n--- {label} stderr ---\n{}",
            read(&self.stdout_path),
            read(&self.stderr_path),
            label = self.label
        )
    }

    /// Returns its stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Returns its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Lists every live process that carries this run's marker, this process included while it
    /// runs.
    pub fn processes(&self) -> Vec<RunProcess> {
        processes_with_env(&self.marker)
    }

    /// Returns whether `pid` is a live process of this run.
    pub fn owns(&self, pid: i32) -> bool {
        self.processes().iter().any(|process| process.pid == pid)
    }

    /// Sends SIGTERM to the process group, then SIGKILL after [`TERMINATE_GRACE`].
    fn terminate(&mut self) {
        let group = Pid::from_raw(self.pid());
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + TERMINATE_GRACE;
        while self.try_finished().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL_INTERVAL);
        }
        if self.try_finished().is_none() {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

impl Drop for NestedProcess {
    fn drop(&mut self) {
        if self.try_finished().is_none() {
            self.terminate();
        }
        if std::thread::panicking() {
            for process in self.processes() {
                if process.executable.as_deref() != Some(self.limactl.as_path()) {
                    let _ = kill(Pid::from_raw(process.pid), Signal::SIGKILL);
                }
            }
        }
    }
}

/// A live process found through its environment.
#[derive(Clone, Debug)]
pub struct RunProcess {
    /// Process id.
    pub pid: i32,
    /// Its executable, when readable.
    pub executable: Option<PathBuf>,
    /// Its command line, arguments joined by spaces.
    pub command_line: String,
    /// Its environment as `NAME=value` entries.
    pub environment: Vec<String>,
}

impl RunProcess {
    /// Returns whether this is one of the harness's reapers.
    pub fn is_reaper(&self) -> bool {
        let prefix = format!("{REAPER_ENV}=");
        self.environment
            .iter()
            .any(|entry| entry.starts_with(&prefix))
    }
}

/// Lists every live process of this user whose environment contains the entry `entry`.
/// Zombies have no readable environment, so they are skipped.
pub fn processes_with_env(entry: &str) -> Vec<RunProcess> {
    live_processes()
        .into_iter()
        .filter(|process| {
            process
                .environment
                .iter()
                .any(|candidate| candidate == entry)
        })
        .collect()
}

/// Lists every live process of this user whose command line contains `fragment`, such as the
/// fake `limactl`'s host agents and VMs, whose arguments name files in their Lima home.
pub fn processes_with_argument(fragment: &str) -> Vec<RunProcess> {
    live_processes()
        .into_iter()
        .filter(|process| process.command_line.contains(fragment))
        .collect()
}

/// Lists every process other than this one whose environment this user can read.
fn live_processes() -> Vec<RunProcess> {
    let Ok(proc_entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own_pid = std::process::id();
    let mut found = Vec::new();
    for proc_entry in proc_entries.filter_map(|proc_entry| proc_entry.ok()) {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        let Ok(environ) = std::fs::read(proc_entry.path().join("environ")) else {
            continue;
        };
        let environment: Vec<String> = environ
            .split(|byte| *byte == 0)
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect();
        let command_line = std::fs::read(proc_entry.path().join("cmdline"))
            .map(|raw| {
                raw.split(|byte| *byte == 0)
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        found.push(RunProcess {
            pid: i32::try_from(pid).expect("pids fit in i32"),
            executable: std::fs::read_link(proc_entry.path().join("exe")).ok(),
            command_line: command_line.trim().to_owned(),
            environment,
        });
    }
    found
}

/// One line that a suite test appended to its results file.
#[derive(Clone, Debug, Deserialize)]
pub struct ResultLine {
    /// `binary::test`.
    pub test: String,
    /// The test process.
    pub pid: u32,
    /// The Lima instance the test attached to.
    pub instance: String,
    /// The cluster's API server port on the host.
    pub api_port: u16,
    /// The one node the test listed.
    pub node: String,
    /// Wall time of `Cluster::shared` in the test process, in milliseconds.
    pub attach_ms: f64,
}

/// Reads a results file. A missing file has no lines.
pub fn read_results(path: &Path) -> Vec<ResultLine> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("invalid result line {line:?}: {error}"))
        })
        .collect()
}

/// Checks that every line names the same harness instance and API port, and that each test
/// listed that instance's node. Returns the instance and port.
#[track_caller]
pub fn one_cluster(lines: &[ResultLine]) -> (String, u16) {
    let first = lines.first().expect("at least one test recorded a result");
    for line in lines {
        assert_eq!(
            line.instance, first.instance,
            "every test attached to the same instance: {lines:#?}"
        );
        assert_eq!(
            line.api_port, first.api_port,
            "every test used the same API port: {lines:#?}"
        );
        assert_eq!(
            line.node,
            format!("lima-{}", line.instance),
            "the node is named after the instance: {line:?}"
        );
    }
    assert!(
        first.instance.starts_with(k3s_harness::INSTANCE_PREFIX),
        "harness instances are named {}…: {}",
        k3s_harness::INSTANCE_PREFIX,
        first.instance
    );
    (first.instance.clone(), first.api_port)
}

/// Returns whether `limactl list` shows `instance`.
pub fn listed(lima: &SimulatedLima, instance: &str) -> bool {
    lima.instance_names().iter().any(|name| name == instance)
}

/// Returns the reaper's log for `instance`, or a note that it is gone, for failure messages.
pub fn reaper_log(lima: &SimulatedLima, instance: &str) -> String {
    let path = lima.state_dir().join(instance).join("reaper.log");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| format!("(no reaper log at {}: {error})", path.display()))
}

/// Renders the command line of `command`, shell-quoted, for error messages.
pub fn render_command(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    shell_words::join(words)
}
