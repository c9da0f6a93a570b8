//! Boot progress: the phases of a cluster boot, reported as `tracing` events.
//!
//! Each phase is reported when it starts, as an INFO event with target [`TARGET`], the phase's
//! label as its message, and the fields `instance`, `phase` (the stable id from [`Phase::id`])
//! and `detail` (empty, or the requirement the host agent waits for, such as
//! `essential requirement 1 of 3: "ssh"`). A phase ends when the next one starts or the boot
//! returns. The `k3s-harness` command draws these events as a spinner or timestamped lines;
//! in tests they are ordinary log lines.
//!
//! While `limactl start` runs, the phases come from the Lima host agent's log,
//! `<instance dir>/ha.stderr.log`, which holds one logrus JSON object per line and which
//! [`HostAgentLogWatch`] follows. The host agent waits for its essential requirements (SSH),
//! then the optional ones (the template's probes, such as k3s writing its kubeconfig), then the
//! guest agent, then the final requirement (the boot scripts), and then copies the `copyToHost`
//! files (the kubeconfig); see `startHostAgentRoutines` in
//! <https://github.com/lima-vm/lima/blob/master/pkg/hostagent/hostagent.go>.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Target of the progress events.
pub(crate) const TARGET: &str = "k3s_harness::progress";

/// Pause between two reads of the host agent's log.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One phase of a cluster boot, in boot order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `limactl start` creates the instance: it downloads the image (unless cached), creates the
    /// disk and spawns the host agent.
    Create,
    /// The host agent runs and boots the VM.
    Boot,
    /// The host agent waits for its essential requirements: SSH, the user session and the SSH
    /// ControlMaster.
    Ssh,
    /// The host agent waits for its optional requirements: containerd's, and the template's
    /// probes, which for k3s wait for the installer to write the kubeconfig.
    Provision,
    /// The host agent waits for Lima's guest agent.
    GuestAgent,
    /// The host agent waits for the boot scripts to finish.
    BootScripts,
    /// The host agent copies the kubeconfig out of the guest.
    CopyKubeconfig,
    /// The harness waits for the copied kubeconfig and rewrites it.
    Kubeconfig,
    /// The harness waits for the API server's `/readyz`.
    ApiServer,
    /// The harness waits for every node to be `Ready`.
    Nodes,
    /// The harness waits for a CoreDNS pod to run.
    CoreDns,
    /// The harness waits for the `default` service account.
    ServiceAccount,
}

impl Phase {
    /// Returns the stable id carried in the `phase` field.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::Boot => "boot",
            Phase::Ssh => "ssh",
            Phase::Provision => "provision",
            Phase::GuestAgent => "guest-agent",
            Phase::BootScripts => "boot-scripts",
            Phase::CopyKubeconfig => "copy-kubeconfig",
            Phase::Kubeconfig => "kubeconfig",
            Phase::ApiServer => "api-server",
            Phase::Nodes => "nodes",
            Phase::CoreDns => "coredns",
            Phase::ServiceAccount => "service-account",
        }
    }

    /// Returns the phase in words, the event's message.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Phase::Create => "creating the Lima instance",
            Phase::Boot => "booting the VM",
            Phase::Ssh => "waiting for SSH",
            Phase::Provision => "waiting for provisioning",
            Phase::GuestAgent => "waiting for the guest agent",
            Phase::BootScripts => "waiting for the boot scripts",
            Phase::CopyKubeconfig => "copying the kubeconfig out of the guest",
            Phase::Kubeconfig => "rewriting the kubeconfig",
            Phase::ApiServer => "waiting for the API server",
            Phase::Nodes => "waiting for every node to be Ready",
            Phase::CoreDns => "waiting for CoreDNS",
            Phase::ServiceAccount => "waiting for the default service account",
        }
    }
}

/// Reports that `phase` of instance `instance`'s boot starts.
pub(crate) fn enter(instance: &str, phase: Phase, detail: Option<&str>) {
    tracing::info!(
        target: TARGET,
        instance,
        phase = phase.id(),
        detail = detail.unwrap_or_default(),
        "{}",
        phase.label()
    );
}

/// Maps one message of the host agent's log to the phase it starts, with the requirement it
/// names as the detail.
///
/// Lima logs `Waiting for the <kind> requirement <i> of <n>: "<description>"` when it starts
/// to check a requirement and again every 10 retries
/// (<https://github.com/lima-vm/lima/blob/master/pkg/hostagent/requirements.go>). Messages
/// that start no phase map to `None`.
pub(crate) fn host_agent_phase(message: &str) -> Option<(Phase, Option<String>)> {
    let requirement = |rest: &str| Some(rest.to_owned());
    if let Some(rest) = message.strip_prefix("Waiting for the ") {
        if rest.starts_with("essential requirement") {
            return Some((Phase::Ssh, requirement(rest)));
        }
        if rest.starts_with("optional requirement") {
            return Some((Phase::Provision, requirement(rest)));
        }
        if rest.starts_with("guest agent") {
            return Some((Phase::GuestAgent, None));
        }
        if rest.starts_with("final requirement") {
            return Some((Phase::BootScripts, requirement(rest)));
        }
        return None;
    }
    if message.starts_with("Copying config from ") {
        return Some((Phase::CopyKubeconfig, None));
    }
    None
}

/// Follows the host agent's log on a thread of its own and reports the phases it shows, until
/// dropped.
///
/// The log's first line starts [`Phase::Boot`], because the host agent writes it once it runs.
/// Dropping the watch reads the log one last time, so the phases logged just before
/// `limactl start` returned are reported too.
pub(crate) struct HostAgentLogWatch {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HostAgentLogWatch {
    /// Starts following `log` for instance `instance`.
    ///
    /// The thread reports through the caller's `tracing` dispatcher. A thread that cannot be
    /// started costs only the progress report, so that failure is logged and not returned.
    pub(crate) fn start(instance: &str, log: PathBuf) -> Self {
        let (stop, stopped) = mpsc::channel();
        let instance = instance.to_owned();
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let spawned = std::thread::Builder::new()
            .name("k3sh-ha-log".to_owned())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    follow(&instance, &log, &stopped);
                });
            });
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(error) => {
                tracing::warn!(%error, "failed to start a thread that follows the host agent's log; boot progress will skip Lima's phases");
                None
            }
        };
        HostAgentLogWatch {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for HostAgentLogWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads new lines of `log` every [`POLL_INTERVAL`] until `stopped` disconnects, then once more.
fn follow(instance: &str, log: &Path, stopped: &mpsc::Receiver<()>) {
    let mut reader = LineReader::default();
    let mut last: Option<(Phase, Option<String>)> = None;
    loop {
        let finished = !matches!(
            stopped.recv_timeout(POLL_INTERVAL),
            Err(RecvTimeoutError::Timeout)
        );

        for line in reader.read_new_lines(log) {
            let found = if last.is_none() {
                Some((Phase::Boot, None))
            } else {
                None
            };
            let from_message = message_of(&line).and_then(|message| host_agent_phase(&message));
            for phase in found.into_iter().chain(from_message) {
                if last.as_ref() != Some(&phase) {
                    enter(instance, phase.0, phase.1.as_deref());
                    last = Some(phase);
                }
            }
        }

        if finished {
            return;
        }
    }
}

/// Returns the `msg` of one logrus JSON line.
fn message_of(line: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct LogLine {
        msg: String,
    }
    serde_json::from_str::<LogLine>(line)
        .ok()
        .map(|line| line.msg)
}

/// Reads a growing file line by line across calls.
#[derive(Default)]
struct LineReader {
    offset: u64,
    partial: Vec<u8>,
}

impl LineReader {
    /// Returns the complete lines appended to `path` since the last call; a missing file has
    /// none yet, and a file that shrank is read again from its start.
    fn read_new_lines(&mut self, path: &Path) -> Vec<String> {
        let Ok(mut file) = File::open(path) else {
            return Vec::new();
        };
        let Ok(metadata) = file.metadata() else {
            return Vec::new();
        };
        if metadata.len() < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let Ok(read) = file.read_to_end(&mut bytes) else {
            return Vec::new();
        };
        self.offset += read as u64;
        self.partial.extend_from_slice(&bytes);

        let Some(end) = self.partial.iter().rposition(|byte| *byte == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&complete)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn requirement_messages_map_to_phases() {
        let cases = [
            (
                r#"Waiting for the essential requirement 1 of 3: "ssh""#,
                Some((
                    Phase::Ssh,
                    Some(r#"essential requirement 1 of 3: "ssh""#.to_owned()),
                )),
            ),
            (
                r#"Waiting for the optional requirement 1 of 1: "k3s to be running""#,
                Some((
                    Phase::Provision,
                    Some(r#"optional requirement 1 of 1: "k3s to be running""#.to_owned()),
                )),
            ),
            (
                "Waiting for the guest agent to be running",
                Some((Phase::GuestAgent, None)),
            ),
            (
                r#"Waiting for the final requirement 1 of 1: "boot scripts must have finished""#,
                Some((
                    Phase::BootScripts,
                    Some(
                        r#"final requirement 1 of 1: "boot scripts must have finished""#.to_owned(),
                    ),
                )),
            ),
            (
                "Copying config from /etc/rancher/k3s/k3s.yaml to /lima/k/copied-from-guest/kubeconfig.yaml",
                Some((Phase::CopyKubeconfig, None)),
            ),
            ("The essential requirement 1 of 3 is satisfied", None),
            (
                "Forwarding TCP from 127.0.0.1:6443 to 127.0.0.1:16443",
                None,
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(host_agent_phase(message), expected, "{message}");
        }
    }

    #[test]
    fn line_reader_returns_only_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha.stderr.log");
        let mut reader = LineReader::default();

        assert!(reader.read_new_lines(&path).is_empty(), "no file yet");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"first\nsec").unwrap();
        assert_eq!(reader.read_new_lines(&path), ["first"]);
        file.write_all(b"ond\n").unwrap();
        assert_eq!(reader.read_new_lines(&path), ["second"]);
        assert!(reader.read_new_lines(&path).is_empty());

        std::fs::write(&path, b"new\n").unwrap();
        assert_eq!(
            reader.read_new_lines(&path),
            ["new"],
            "a truncated file is reread"
        );
    }

    /// Collects the `phase` fields of progress events.
    struct PhaseRecorder(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PhaseRecorder {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _context: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Visitor<'a>(&'a mut Vec<String>);
            impl tracing::field::Visit for Visitor<'_> {
                fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                    if field.name() == "phase" {
                        self.0.push(value.to_owned());
                    }
                }
                fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
            }
            if event.metadata().target() == TARGET {
                event.record(&mut Visitor(&mut self.0.lock().unwrap()));
            }
        }
    }

    #[test]
    fn watch_reports_each_phase_once_in_order() {
        use tracing_subscriber::layer::SubscriberExt;

        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ha.stderr.log");
        let phases = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(PhaseRecorder(phases.clone()));
        let lines = [
            "hostagent socket created at /lima/k/ha.sock",
            r#"Waiting for the essential requirement 1 of 2: "ssh""#,
            r#"Waiting for the essential requirement 1 of 2: "ssh""#,
            r#"Waiting for the essential requirement 2 of 2: "Explicitly start ssh ControlMaster""#,
            r#"Waiting for the optional requirement 1 of 1: "k3s to be running""#,
            "Waiting for the guest agent to be running",
            r#"Waiting for the final requirement 1 of 1: "boot scripts must have finished""#,
            "Copying config from /etc/rancher/k3s/k3s.yaml to /lima/k/kubeconfig.yaml",
        ];
        let text: String = lines
            .iter()
            .map(|msg| format!("{}\n", serde_json::json!({"level": "info", "msg": msg})))
            .collect();

        tracing::subscriber::with_default(subscriber, || {
            let watch = HostAgentLogWatch::start("k", log.clone());
            std::fs::write(&log, text).unwrap();
            drop(watch);
        });

        assert_eq!(
            *phases.lock().unwrap(),
            [
                "boot",
                "ssh",
                "ssh",
                "provision",
                "guest-agent",
                "boot-scripts",
                "copy-kubeconfig"
            ]
        );
    }
}
