//! Collecting one instance's diagnostics into a new directory.
//!
//! Each collector writes one file and has its own bound: host logs are read from their end
//! with a size limit, and guest commands run through `limactl shell` with a deadline. A
//! collector that fails is listed in `collectors.txt` with the reason, and the others still
//! run. Every file passes through [`redact`] before it is written, and no collector reads a
//! kubeconfig, a Secret or the guest's k3s token.

use std::cell::Cell;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lima_provisioner::{InstanceName, Limactl, ShellOptions};

use super::redact::redact;
use super::tail::{read_tail, serial_logs};
use crate::error::{Error, Result};
use crate::namespace::INSTANCE_LABEL;

/// Name of the directory in an instance's state directory that contains its collections.
pub(crate) const DIAGNOSTICS_DIR: &str = "diagnostics";

/// Name of the summary that lists every collector's outcome.
pub(crate) const SUMMARY_FILE: &str = "collectors.txt";

/// Bound on `limactl shell NAME true`, which decides whether the guest collectors run at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Bound on each guest command.
const GUEST_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Guest commands that run at the same time. `limactl shell` sessions share one SSH connection
/// (Lima sets `ControlMaster=auto` in `SSHOpts`,
/// <https://github.com/lima-vm/lima/blob/master/pkg/sshutil/sshutil.go>), and OpenSSH's sshd
/// allows 10 sessions per connection by default (`MaxSessions` in sshd_config(5)).
const PARALLEL_GUEST_COMMANDS: usize = 4;

/// Lines kept from the end of each host log, the k3s journal and the cloud-init output.
const LOG_LINES: usize = 2000;

/// Bytes read from the end of each host log.
const LOG_BYTES: u64 = 1024 * 1024;

/// Lines kept from the end of each container's log.
const POD_LOG_LINES: usize = 500;

/// The guest file that Lima's boot scripts, and so the k3s installation, write their output to.
const CLOUD_INIT_OUTPUT: &str = "/var/log/cloud-init-output.log";

/// Prints the logs of every pod in namespace `$1`: current containers first, then the previous
/// instances of restarted ones. A pod whose log cannot be read (a container still waiting)
/// gets the error in place of its log, so one pod does not hide the others.
const POD_LOGS_SCRIPT: &str = r#"namespace=$1
tail=$2
pods=$(k3s kubectl get pods --namespace "$namespace" --output name) || exit 1
for pod in $pods; do
    echo "=== $pod"
    k3s kubectl logs --namespace "$namespace" "$pod" --all-containers=true --prefix=true \
        --timestamps=true --tail="$tail" 2>&1
    if previous=$(k3s kubectl logs --namespace "$namespace" "$pod" --all-containers=true \
        --prefix=true --timestamps=true --tail="$tail" --previous 2>/dev/null); then
        echo "=== $pod, previous containers"
        printf '%s\n' "$previous"
    fi
done
"#;

thread_local! {
    static COLLECTOR_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Returns whether the current thread runs a collection. A panic hook that collects
/// diagnostics checks this, so that a panic inside a collection does not start another one.
pub(crate) fn on_collector_thread() -> bool {
    COLLECTOR_THREAD.with(Cell::get)
}

/// Marks the current thread as a collector thread until dropped.
struct CollectorThreadGuard {
    previous: bool,
}

impl CollectorThreadGuard {
    fn enter() -> Self {
        CollectorThreadGuard {
            previous: COLLECTOR_THREAD.with(|flag| flag.replace(true)),
        }
    }
}

impl Drop for CollectorThreadGuard {
    fn drop(&mut self) {
        COLLECTOR_THREAD.with(|flag| flag.set(self.previous));
    }
}

/// The instance that diagnostics are collected from.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    /// The limactl client that reaches the instance.
    pub(crate) limactl: &'a Limactl,
    /// The Lima instance: the server of a multi-node cluster.
    pub(crate) instance: &'a InstanceName,
    /// The agents of a multi-node cluster, whose host agent logs are collected too.
    pub(crate) agents: &'a [InstanceName],
    /// The instance's harness state directory, `<state dir>/<instance>`.
    pub(crate) state_dir: &'a Path,
}

/// The reason for a collection, which also names its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// `limactl start` failed or the cluster did not become ready; the VM is deleted next.
    StartFailed,
    /// A test failed, and the destroy policy keeps the VM.
    TestFailed,
    /// The run ended after a failed test, and the VM is kept.
    RunEnded,
    /// `Cluster::dump_diagnostics` or `k3s-harness logs`.
    Requested,
}

impl Trigger {
    fn slug(self) -> &'static str {
        match self {
            Trigger::StartFailed => "start-failed",
            Trigger::TestFailed => "test-failed",
            Trigger::RunEnded => "run-ended",
            Trigger::Requested => "requested",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Trigger::StartFailed => {
                "because `limactl start` failed or the cluster did not become ready, before the \
                 VM was deleted"
            }
            Trigger::TestFailed => "because a test failed",
            Trigger::RunEnded => "at the end of a test run in which a test failed",
            Trigger::Requested => "on request",
        }
    }
}

/// The result of one collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Collected,
    Failed,
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Collected => "collected",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// The outcome of one collector.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The file the collector wrote, relative to the collection's directory.
    pub(crate) file: String,
    pub(crate) status: Status,
    /// A description of the file's content, or the reason the collector failed or was skipped.
    pub(crate) detail: String,
    pub(crate) elapsed: Duration,
}

/// A finished collection.
#[derive(Debug)]
pub(crate) struct Collection {
    /// The directory that contains the files and `collectors.txt`.
    pub(crate) dir: PathBuf,
    pub(crate) outcomes: Vec<Outcome>,
}

impl Collection {
    /// Returns how many collectors did not collect their file.
    pub(crate) fn incomplete(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|outcome| outcome.status != Status::Collected)
            .count()
    }

    /// Describes the collection in one sentence for an error message or a hint.
    pub(crate) fn describe(&self) -> String {
        let incomplete = self.incomplete();
        let caveat = match incomplete {
            0 => String::new(),
            _ => format!(
                "; {incomplete} of {} collectors failed or were skipped",
                self.outcomes.len()
            ),
        };
        format!(
            "Diagnostics (Lima and k3s logs, node conditions, events, pods) are in {}{caveat}; \
             {SUMMARY_FILE} there lists each file.",
            self.dir.display()
        )
    }
}

/// Collects the instance's diagnostics into a new directory
/// `<state dir>/<instance>/diagnostics/<UTC time>-<trigger>-<pid>/` and returns it.
///
/// The host collectors read the ends of `ha.stderr.log` and the `serial*.log` files in the
/// instance's Lima directory. When `limactl shell NAME true` succeeds, the guest collectors
/// run the k3s journal, the cloud-init output, node conditions, events, and the
/// pod descriptions and logs of `kube-system` and of every namespace labelled
/// `k3s-harness.io/instance=<instance>`, through `sudo k3s kubectl` in the guest.
///
/// # Errors
///
/// [`Error::Io`] when the directory or `collectors.txt` cannot be written. A collector that
/// fails is not an error, and its outcome gives the reason.
pub(crate) fn collect(source: &Source<'_>, trigger: Trigger) -> Result<Collection> {
    let started = time::OffsetDateTime::now_utc();
    let dir = create_collection_dir(source.state_dir, trigger, started)?;
    tracing::info!(instance = %source.instance, dir = %dir.display(), "collecting diagnostics");

    let mut outcomes = vec![
        timed(|| host_agent_log(&dir, source, source.instance, "host-agent.log")),
        timed(|| serial_console_logs(&dir, source)),
    ];
    for agent in source.agents {
        let file = format!("host-agent-{agent}.log");
        outcomes.push(timed(|| host_agent_log(&dir, source, agent, &file)));
    }

    match probe_guest(source) {
        Ok(()) => {
            let namespaces =
                timed(|| run_guest_collector(&dir, source, &namespaces_collector(source)));
            let listed = match namespaces.status {
                Status::Collected => read_namespace_names(&dir.join(&namespaces.file)),
                _ => Vec::new(),
            };
            outcomes.push(namespaces);

            let mut collectors = cluster_collectors();
            for namespace in std::iter::once("kube-system".to_owned()).chain(listed) {
                collectors.extend(namespace_collectors(&namespace));
            }
            outcomes.extend(run_in_parallel(&dir, source, collectors));
        }
        Err(reason) => {
            let mut skipped = vec![namespaces_collector(source)];
            skipped.extend(cluster_collectors());
            skipped.extend(namespace_collectors("kube-system"));
            for collector in skipped {
                let detail = format!("skipped because the guest is unreachable: {reason}");
                outcomes.push(write_outcome(
                    &dir,
                    &collector.file,
                    &format!("{detail}\n"),
                    Status::Skipped,
                    detail,
                    Duration::ZERO,
                ));
            }
        }
    }

    write_summary(&dir, source, trigger, started, &outcomes)?;
    let collection = Collection { dir, outcomes };
    tracing::info!(
        instance = %source.instance,
        dir = %collection.dir.display(),
        incomplete = collection.incomplete(),
        "collected diagnostics"
    );
    Ok(collection)
}

/// Runs [`collect`] on a thread of its own and describes the outcome in one sentence.
///
/// A panic inside the collection becomes part of the sentence instead of reaching the caller,
/// so a panic hook or a destructor can call this.
pub(crate) fn collect_and_describe(source: &Source<'_>, trigger: Trigger) -> String {
    let outcome = std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("k3s-harness-diagnostics".to_owned())
            .spawn_scoped(scope, || {
                let _guard = CollectorThreadGuard::enter();
                collect(source, trigger)
            });
        match worker {
            Ok(worker) => worker
                .join()
                .unwrap_or_else(|_| Err(collection_panicked(source))),
            Err(error) => Err(Error::io(
                "start a thread to collect diagnostics for",
                source.state_dir,
                error,
            )),
        }
    });
    match outcome {
        Ok(collection) => collection.describe(),
        Err(error) => format!("No diagnostics were saved: {error}."),
    }
}

fn collection_panicked(source: &Source<'_>) -> Error {
    Error::io(
        "collect diagnostics (the collection panicked) into",
        source.state_dir.join(DIAGNOSTICS_DIR),
        std::io::Error::other("panic"),
    )
}

/// Creates `<state dir>/<instance>/diagnostics/<time>-<trigger>-<pid>[-<n>]` with mode 0700.
fn create_collection_dir(
    state_dir: &Path,
    trigger: Trigger,
    now: time::OffsetDateTime,
) -> Result<PathBuf> {
    let parent = state_dir.join(DIAGNOSTICS_DIR);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)
        .map_err(|error| Error::io("create the diagnostics directory", &parent, error))?;

    let base = format!(
        "{}-{}-{}",
        compact_utc(now),
        trigger.slug(),
        std::process::id()
    );
    for attempt in 1..=100 {
        let name = match attempt {
            1 => base.clone(),
            n => format!("{base}-{n}"),
        };
        let dir = parent.join(name);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(Error::io("create the diagnostics directory", dir, error));
            }
        }
    }
    Err(Error::io(
        "create a new diagnostics directory (100 names taken) in",
        parent,
        std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    ))
}

/// `20261204T234138Z`: sortable and free of characters that need quoting in a shell.
fn compact_utc(time: time::OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

/// `2026-12-04T23:41:38Z`, for the summary and the boot progress lines.
pub(crate) fn rfc3339_utc(time: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second()
    )
}

/// Runs a collector and records how long it took.
fn timed(collector: impl FnOnce() -> Outcome) -> Outcome {
    let started = Instant::now();
    let mut outcome = collector();
    outcome.elapsed = started.elapsed();
    outcome
}

/// Redacts `text`, writes it to `dir/file` with mode 0600, and returns the outcome; a failed
/// write turns the outcome into a failure.
fn write_outcome(
    dir: &Path,
    file: &str,
    text: &str,
    status: Status,
    detail: String,
    elapsed: Duration,
) -> Outcome {
    let path = dir.join(file);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut handle| handle.write_all(redact(text).as_bytes()));
    match written {
        Ok(()) => Outcome {
            file: file.to_owned(),
            status,
            detail,
            elapsed,
        },
        Err(error) => Outcome {
            file: file.to_owned(),
            status: Status::Failed,
            detail: format!("failed to write {}: {error} ({detail})", path.display()),
            elapsed,
        },
    }
}

/// Copies the end of the host agent's log of `instance`, `<LIMA_HOME>/<instance>/ha.stderr.log`,
/// to `file`.
fn host_agent_log(dir: &Path, source: &Source<'_>, instance: &InstanceName, file: &str) -> Outcome {
    let path = source
        .limactl
        .lima_home()
        .join(instance.as_str())
        .join("ha.stderr.log");
    match read_tail(&path, LOG_LINES, LOG_BYTES) {
        Ok(tail) => write_outcome(
            dir,
            file,
            &tail,
            Status::Collected,
            format!("last {LOG_LINES} lines of {}", path.display()),
            Duration::ZERO,
        ),
        Err(error) => {
            let detail = format!("failed to read {}: {error}", path.display());
            write_outcome(
                dir,
                file,
                &format!("{detail}\n"),
                Status::Failed,
                detail,
                Duration::ZERO,
            )
        }
    }
}

/// Copies the ends of the VM's serial console logs, one section per `serial*.log` file.
fn serial_console_logs(dir: &Path, source: &Source<'_>) -> Outcome {
    let instance_dir = lima_instance_dir(source);
    let file = "serial-console.log";
    let logs = serial_logs(&instance_dir);
    if logs.is_empty() {
        let detail = format!(
            "no serial*.log files in {}; the VM may not have started",
            instance_dir.display()
        );
        return write_outcome(
            dir,
            file,
            &format!("{detail}\n"),
            Status::Failed,
            detail,
            Duration::ZERO,
        );
    }

    let mut text = String::new();
    let mut read = Vec::new();
    let mut failed = Vec::new();
    for log in &logs {
        let _ = writeln!(text, "=== {}", log.display());
        match read_tail(log, LOG_LINES, LOG_BYTES) {
            Ok(tail) => {
                text.push_str(&tail);
                read.push(log.display().to_string());
            }
            Err(error) => {
                let _ = writeln!(text, "failed to read: {error}");
                failed.push(format!("{}: {error}", log.display()));
            }
        }
    }
    if read.is_empty() {
        let detail = format!("failed to read {}", failed.join("; "));
        return write_outcome(dir, file, &text, Status::Failed, detail, Duration::ZERO);
    }
    let mut detail = format!("last {LOG_LINES} lines of {}", read.join(", "));
    if !failed.is_empty() {
        let _ = write!(detail, "; failed to read {}", failed.join("; "));
    }
    write_outcome(dir, file, &text, Status::Collected, detail, Duration::ZERO)
}

fn lima_instance_dir(source: &Source<'_>) -> PathBuf {
    source.limactl.lima_home().join(source.instance.as_str())
}

/// Checks that the guest runs commands at all, so that an unreachable guest costs one short
/// deadline instead of one long deadline per collector.
fn probe_guest(source: &Source<'_>) -> std::result::Result<(), String> {
    let options = ShellOptions {
        workdir: Some("/".to_owned()),
        timeout: PROBE_TIMEOUT,
        stdin: None,
    };
    source
        .limactl
        .shell(source.instance, &["true"], &options)
        .and_then(|output| output.check())
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// A command run in the guest whose output becomes one file.
struct GuestCollector {
    file: String,
    /// A description of the file's content, for the summary.
    what: String,
    argv: Vec<String>,
}

impl GuestCollector {
    fn new(file: impl Into<String>, what: impl Into<String>, argv: &[&str]) -> Self {
        GuestCollector {
            file: file.into(),
            what: what.into(),
            argv: argv.iter().map(|arg| (*arg).to_owned()).collect(),
        }
    }
}

/// Lists the namespaces that the harness created on this instance, as `namespace/NAME` lines.
fn namespaces_collector(source: &Source<'_>) -> GuestCollector {
    let selector = format!("{INSTANCE_LABEL}={}", source.instance);
    GuestCollector::new(
        "namespaces.txt",
        format!("the namespaces labelled {selector}"),
        &[
            "sudo",
            "k3s",
            "kubectl",
            "get",
            "namespaces",
            "--selector",
            &selector,
            "--output",
            "name",
        ],
    )
}

/// Returns the collectors that do not depend on a namespace.
fn cluster_collectors() -> Vec<GuestCollector> {
    let lines = LOG_LINES.to_string();
    let node_conditions = concat!(
        "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}",
        "{range .status.conditions[*]}{\"  \"}{.type}={.status}  reason={.reason}  ",
        "since={.lastTransitionTime}  {.message}{\"\\n\"}{end}",
        "{range .spec.taints[*]}{\"  taint \"}{.key}={.value}:{.effect}{\"\\n\"}{end}{end}"
    );
    vec![
        GuestCollector::new(
            "k3s-journal.log",
            format!("the last {LOG_LINES} lines of `journalctl --unit k3s` in the guest"),
            &[
                "sudo",
                "journalctl",
                "--unit",
                "k3s",
                "--no-pager",
                "--lines",
                &lines,
                "--output",
                "short-iso",
            ],
        ),
        GuestCollector::new(
            "cloud-init-output.log",
            format!("the last {LOG_LINES} lines of the guest's {CLOUD_INIT_OUTPUT}"),
            &["sudo", "tail", "-n", &lines, CLOUD_INIT_OUTPUT],
        ),
        GuestCollector::new(
            "nodes.txt",
            "the conditions and taints of every node",
            &[
                "sudo",
                "k3s",
                "kubectl",
                "get",
                "nodes",
                "--output",
                node_conditions,
            ],
        ),
        GuestCollector::new(
            "events.txt",
            "the events of all namespaces, oldest first",
            &[
                "sudo",
                "k3s",
                "kubectl",
                "get",
                "events",
                "--all-namespaces",
                "--output",
                "wide",
                "--sort-by",
                ".metadata.creationTimestamp",
            ],
        ),
    ]
}

/// Returns the collectors of one namespace's pod descriptions and pod logs.
fn namespace_collectors(namespace: &str) -> [GuestCollector; 2] {
    let tail = POD_LOG_LINES.to_string();
    [
        GuestCollector::new(
            format!("pods-{namespace}.txt"),
            format!("`kubectl describe pods` of namespace {namespace}"),
            &[
                "sudo",
                "k3s",
                "kubectl",
                "describe",
                "pods",
                "--namespace",
                namespace,
            ],
        ),
        GuestCollector::new(
            format!("logs-{namespace}.txt"),
            format!(
                "the last {POD_LOG_LINES} log lines of every container in namespace {namespace}, \
                 and of its previous instance after a restart"
            ),
            &["sudo", "sh", "-c", POD_LOGS_SCRIPT, "sh", namespace, &tail],
        ),
    ]
}

/// Reads the namespace names from `namespace/NAME` lines, keeping only valid DNS labels, because
/// the names become parts of file names.
fn read_namespace_names(path: &Path) -> Vec<String> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("namespace/"))
        .filter(|name| is_dns_label(name) && *name != "kube-system")
        .map(str::to_owned)
        .collect()
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Runs one guest command and writes its stdout, followed by its stderr when there is any.
fn run_guest_collector(dir: &Path, source: &Source<'_>, collector: &GuestCollector) -> Outcome {
    let argv: Vec<&str> = collector.argv.iter().map(String::as_str).collect();
    let options = ShellOptions {
        workdir: Some("/".to_owned()),
        timeout: GUEST_COMMAND_TIMEOUT,
        stdin: None,
    };
    let output = match source.limactl.shell(source.instance, &argv, &options) {
        Ok(output) => output,
        Err(error) => {
            let detail = error.to_string();
            return write_outcome(
                dir,
                &collector.file,
                &format!("{detail}\n"),
                Status::Failed,
                detail,
                Duration::ZERO,
            );
        }
    };

    let mut text = output.stdout_lossy().into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = write!(text, "--- stderr:\n{stderr}");
    }
    let (status, detail) = match output.check() {
        Ok(_) => (Status::Collected, collector.what.clone()),
        Err(error) => (Status::Failed, error.to_string()),
    };
    write_outcome(dir, &collector.file, &text, status, detail, Duration::ZERO)
}

/// Runs the guest collectors on up to [`PARALLEL_GUEST_COMMANDS`] threads and returns their
/// outcomes in the order given. A collector that panics is recorded as failed.
fn run_in_parallel(
    dir: &Path,
    source: &Source<'_>,
    collectors: Vec<GuestCollector>,
) -> Vec<Outcome> {
    let count = collectors.len();
    let queue = Mutex::new(collectors.into_iter().enumerate());
    let results = Mutex::new(Vec::with_capacity(count));

    let work = || {
        let _guard = CollectorThreadGuard::enter();
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some((index, collector)) = next else {
                break;
            };
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                timed(|| run_guest_collector(dir, source, &collector))
            }))
            .unwrap_or_else(|_| Outcome {
                file: collector.file.clone(),
                status: Status::Failed,
                detail: "the collector panicked".to_owned(),
                elapsed: Duration::ZERO,
            });
            results
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((index, outcome));
        }
    };

    std::thread::scope(|scope| {
        let mut spawned = 0;
        for worker in 0..PARALLEL_GUEST_COMMANDS.min(count) {
            let started = std::thread::Builder::new()
                .name(format!("k3s-harness-diagnostics-{worker}"))
                .spawn_scoped(scope, work);
            if started.is_ok() {
                spawned += 1;
            }
        }
        if spawned == 0 {
            work();
        }
    });

    let mut results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, outcome)| outcome).collect()
}

/// Writes `collectors.txt`: what was collected from where, then one entry per collector.
fn write_summary(
    dir: &Path,
    source: &Source<'_>,
    trigger: Trigger,
    started: time::OffsetDateTime,
    outcomes: &[Outcome],
) -> Result<()> {
    let mut text = format!(
        "Diagnostics of Lima instance `{}`, collected at {} {}.\n\
         Host logs come from {}; guest commands ran through `limactl shell`.\n\
         Values that look like secrets are replaced by <redacted>.\n\n",
        source.instance,
        rfc3339_utc(started),
        trigger.describe(),
        lima_instance_dir(source).display(),
    );
    for outcome in outcomes {
        let _ = writeln!(
            text,
            "{:<9} {} ({:.1} s)",
            outcome.status.as_str(),
            outcome.file,
            outcome.elapsed.as_secs_f64()
        );
        for line in outcome.detail.lines() {
            let _ = writeln!(text, "    {line}");
        }
    }

    let path = dir.join(SUMMARY_FILE);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut handle| handle.write_all(redact(&text).as_bytes()))
        .map_err(|error| Error::io("write", path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_dns_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("namespaces.txt");
        fs::write(
            &path,
            "namespace/e2e-bcd2f\nnamespace/kube-system\nnamespace/../etc\nnot-a-namespace\n",
        )
        .unwrap();

        assert_eq!(read_namespace_names(&path), ["e2e-bcd2f"]);
    }

    #[test]
    fn collection_dirs_are_distinct_and_private() {
        let state = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::from_unix_timestamp(1_796_427_698).unwrap();

        let first = create_collection_dir(state.path(), Trigger::Requested, now).unwrap();
        let second = create_collection_dir(state.path(), Trigger::Requested, now).unwrap();

        let expected = format!("20261204T234138Z-requested-{}", std::process::id());
        assert_eq!(first.file_name().unwrap().to_str(), Some(expected.as_str()));
        assert_eq!(
            second.file_name().unwrap().to_str(),
            Some(format!("{expected}-2").as_str())
        );
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&first).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn collector_thread_flag_is_restored() {
        assert!(!on_collector_thread());
        {
            let _guard = CollectorThreadGuard::enter();
            assert!(on_collector_thread());
        }
        assert!(!on_collector_thread());
    }
}
