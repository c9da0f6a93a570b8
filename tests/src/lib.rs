//! Support for the end-to-end suites: the simulated Lima host and checks for real components.
//!
//! The simulated tier runs the harness against the fake `limactl` from `fixtures/fake-limactl`,
//! which Cargo builds into the same target directory as these tests when the workspace is
//! tested (`cargo nextest run` or `cargo test` at the workspace root).

pub mod archives;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k3s_harness::ClusterSpec;

/// `expect` for results whose error is best read through `Display`: the harness's errors are
/// sentences with the command, its stderr and the fix, which `Debug` would print as a struct.
pub trait ExpectOk<T> {
    /// Returns the value, or panics with `what` and the error's `Display` text.
    fn expect_ok(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> ExpectOk<T> for Result<T, E> {
    #[track_caller]
    fn expect_ok(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(error) => panic!("{what}: {error}"),
        }
    }
}

/// Environment switch that turns a missing component (containerd, sudo, kubectl) from a skip
/// into a failure. CI sets it, so a machine that should run a test can never pass by skipping.
pub const REQUIRE_TOOLS_ENV: &str = "K3S_HARNESS_REQUIRE_TOOLS";

/// Environment switch that turns a missing real `limactl` into a failure for the real tier.
pub const REQUIRE_LIMA_ENV: &str = "K3S_HARNESS_REQUIRE_LIMA";

/// The directory holding this build's binaries (`target/debug` or `target/release`).
pub fn target_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let deps = exe
        .parent()
        .expect("test binaries live in target/<profile>/deps");
    deps.parent().expect("deps has a parent").to_owned()
}

/// Path of a workspace binary built next to the tests, with a clear panic when it is missing.
///
/// Benchmarks run from `target/release`, where Cargo builds the fixture binaries only on request,
/// so a binary missing there is taken from `target/debug` when that build has it.
pub fn workspace_binary(name: &str) -> PathBuf {
    let dir = target_bin_dir();
    let path = dir.join(name);
    if path.is_file() {
        return path;
    }
    let debug = dir.with_file_name("debug").join(name);
    assert!(
        debug.is_file(),
        "{} is missing; build the workspace's binaries first with `cargo build --workspace --bins` \
         (add --release for benchmarks) or run the tests from the workspace root with \
         `cargo nextest run`",
        path.display()
    );
    debug
}

/// Path of a workspace example built next to the tests (`target/<profile>/examples/<name>`),
/// with a clear panic when it is missing.
///
/// `cargo nextest run` and `cargo test` build the examples of every selected package, so a
/// workspace run has them; a run of this package alone does not.
pub fn workspace_example(name: &str) -> PathBuf {
    let path = target_bin_dir().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing; build the examples first with `cargo build --workspace --examples` or \
         run the tests from the workspace root with `cargo nextest run --workspace`",
        path.display()
    );
    path
}

/// Whether `name` is an executable on `PATH`.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(name);
            candidate.is_file()
                && std::fs::metadata(&candidate).is_ok_and(|metadata| {
                    std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o111 != 0
                })
        })
    })
}

/// Whether passwordless `sudo` works for this user.
pub fn passwordless_sudo() -> bool {
    on_path("sudo")
        && Command::new("sudo")
            .args(["-n", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// Returns whether the components a test needs are present.
///
/// When one is missing the test should return early: this prints why, unless
/// `K3S_HARNESS_REQUIRE_TOOLS=1`, in which case it panics so the absence fails the run.
#[track_caller]
pub fn components_present(test: &str, components: &[Component]) -> bool {
    let missing: Vec<&str> = components
        .iter()
        .filter(|component| !component.present())
        .map(|component| component.describe())
        .collect();
    if missing.is_empty() {
        return true;
    }

    let message = format!("{test}: skipped, missing {}", missing.join(", "));
    if std::env::var(REQUIRE_TOOLS_ENV).is_ok_and(|value| value == "1") {
        panic!("{message} ({REQUIRE_TOOLS_ENV}=1 makes this a failure)");
    }
    eprintln!("{message}; set {REQUIRE_TOOLS_ENV}=1 to fail instead");
    false
}

/// Whether a process with this id exists (a zombie counts as gone only once reaped).
pub fn process_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// A real component that some simulated-tier tests use.
#[derive(Clone, Copy, Debug)]
pub enum Component {
    /// `containerd` and `ctr`, for image imports.
    Containerd,
    /// Passwordless `sudo`, which the fake guest uses for `sudo k3s ...` like a Lima guest.
    Sudo,
    /// `kubectl`, an independent client for the fake API server.
    Kubectl,
    /// A Jetpack binary (`JETP`, `jetpack` or `jetp` on `PATH`), for converge runs.
    Jetp,
    /// OpenSSH's `sshd`, which the fake `limactl` starts for each simulated guest.
    Sshd,
}

impl Component {
    fn present(self) -> bool {
        match self {
            Component::Containerd => on_path("containerd") && on_path("ctr"),
            Component::Sudo => passwordless_sudo(),
            Component::Kubectl => on_path("kubectl"),
            Component::Jetp => {
                std::env::var_os("JETP").is_some_and(|path| Path::new(&path).is_file())
                    || on_path("jetpack")
                    || on_path("jetp")
            }
            Component::Sshd => ["/usr/sbin/sshd", "/usr/bin/sshd"]
                .iter()
                .any(|path| Path::new(path).is_file()),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Component::Containerd => "containerd and ctr (Debian: apt-get install containerd)",
            Component::Sudo => "passwordless sudo",
            Component::Kubectl => "kubectl",
            Component::Jetp => "jetp (cargo install jetp --locked) or JETP",
            Component::Sshd => "OpenSSH sshd (Debian: apt-get install openssh-server)",
        }
    }
}

/// A simulated Lima host: the fake `limactl`, a private `LIMA_HOME`, a private harness state
/// directory, and the fake's invocation log.
///
/// `LIMA_HOME` and `FAKE_LIMACTL_LOG` are taken from the environment when the caller sets them,
/// so a developer can inspect a run afterwards; otherwise they live in temporary directories
/// removed on drop. Instances that appeared in this `LIMA_HOME` after `new` are force-deleted on
/// drop, so a failing test leaks no fake VM; instances that were there before are left alone.
pub struct SimulatedLima {
    limactl: PathBuf,
    home: PathBuf,
    log: PathBuf,
    state: PathBuf,
    preexisting: Vec<String>,
    _temporary: tempfile::TempDir,
}

impl SimulatedLima {
    /// Sets up a simulated host.
    pub fn new() -> Self {
        let limactl = workspace_binary("limactl");
        // A short base keeps Lima's socket paths inside the 108-byte budget.
        let temporary = tempfile::Builder::new()
            .prefix("kh")
            .tempdir_in("/tmp")
            .expect("a temporary directory can be created in /tmp");

        let home = std::env::var_os("LIMA_HOME")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| temporary.path().join("lima"));
        let log = std::env::var_os("FAKE_LIMACTL_LOG")
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| temporary.path().join("limactl.log"));
        let state = temporary.path().join("state");
        let preexisting = instance_dirs(&home);

        SimulatedLima {
            limactl,
            home,
            log,
            state,
            preexisting,
            _temporary: temporary,
        }
    }

    /// A default spec pointed at this host, with bounds short enough for the fake.
    pub fn spec(&self) -> ClusterSpec {
        ClusterSpec::default()
            .limactl(&self.limactl)
            .lima_home(&self.home)
            .state_dir(&self.state)
            .limactl_env("FAKE_LIMACTL_LOG", &self.log)
            .start_timeout(std::time::Duration::from_secs(120))
            .ready_timeout(std::time::Duration::from_secs(60))
    }

    /// The fake `limactl` binary.
    pub fn limactl(&self) -> &Path {
        &self.limactl
    }

    /// The Lima home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The harness state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The fake's invocation log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A `limactl` command for this host, with stdin null and the invocation log enabled.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.limactl);
        command
            .env("LIMA_HOME", &self.home)
            .env("FAKE_LIMACTL_LOG", &self.log)
            .stdin(Stdio::null());
        command
    }

    /// Every recorded invocation's argv, program name excluded, in order.
    pub fn invocations(&self) -> Vec<Vec<String>> {
        let Ok(text) = std::fs::read_to_string(&self.log) else {
            return Vec::new();
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("invalid log line {line:?}: {error}"));
                entry["argv"]
                    .as_array()
                    .unwrap_or_else(|| panic!("log line without argv: {line}"))
                    .iter()
                    .skip(1)
                    .map(|arg| arg.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .collect()
    }

    /// Process ids of every recorded invocation.
    pub fn logged_pids(&self) -> Vec<i32> {
        let Ok(text) = std::fs::read_to_string(&self.log) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|entry| entry["pid"].as_i64())
            .filter_map(|pid| i32::try_from(pid).ok())
            .collect()
    }

    /// How many recorded `limactl` invocations ran `subcommand` (global flags skipped).
    pub fn count(&self, subcommand: &str) -> usize {
        self.invocations()
            .iter()
            .filter(|argv| {
                argv.iter()
                    .find(|arg| !arg.starts_with('-'))
                    .map(String::as_str)
                    == Some(subcommand)
            })
            .count()
    }

    /// Names of the instances `limactl list` reports.
    pub fn instance_names(&self) -> Vec<String> {
        let output = self
            .command()
            .args(["list", "--quiet"])
            .output()
            .expect("the fake limactl runs");
        assert!(
            output.status.success(),
            "limactl list --quiet failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Default for SimulatedLima {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `done` every 20 ms until it returns true or `timeout` passes. Returns the time it
/// took, or `None` on timeout. Tests wait with this instead of sleeping a fixed time.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if done() {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl SimulatedLima {
    /// Lists the live processes whose command line names a file in this Lima home, as pid and
    /// command line: the fake's host agents, simulated VMs and sshds. Empty once every
    /// instance is gone.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let home = self.home.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
                let raw = std::fs::read(entry.path().join("cmdline")).ok()?;
                let command_line = raw
                    .split(|byte| *byte == 0)
                    .map(String::from_utf8_lossy)
                    .collect::<Vec<_>>()
                    .join(" ");
                command_line
                    .contains(&home)
                    .then(|| (pid, command_line.trim().to_owned()))
            })
            .collect()
    }
}

impl Drop for SimulatedLima {
    fn drop(&mut self) {
        let created = instance_dirs(&self.home)
            .into_iter()
            .filter(|name| !self.preexisting.contains(name));
        for name in created {
            let _ = self
                .command()
                .args(["delete", "--tty=false", "-f", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Names of the instance directories in a Lima home (Lima's own `_config` and the like excluded).
fn instance_dirs(home: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(home) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('_'))
        .collect()
}
