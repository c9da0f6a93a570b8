//! The crate's error type and the rendering of failed commands.
//!
//! Every `Display` is one or more complete sentences that carry the underlying cause, because
//! Jetpack's provisioner adapter reports errors with `to_string()` alone. For the same reason no
//! variant exposes a `source()`: the cause is already in the message, and an error-chain printer
//! would otherwise show it twice.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::list::ListParseError;
use crate::name::NameError;
use crate::stderr::{strip_ansi, tail_lines};

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maximum number of stderr or stdout lines that an error message quotes.
pub(crate) const TAIL_LINES: usize = 20;

/// Every failure of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The instance name breaks one of Lima's naming rules or the socket path budget.
    #[error("The Lima instance name {name:?} is invalid: {problem}")]
    InvalidInstanceName {
        /// The rejected name.
        name: String,
        /// The broken rule, with the fix.
        problem: NameError,
    },

    /// A `LimaSpec` field contains a value that limactl would reject or misread.
    #[error("The Lima spec field `{field}` has the invalid value {value:?}: {problem}")]
    InvalidSpec {
        /// The field name, for example `ssh_user`.
        field: &'static str,
        /// The rejected value.
        value: String,
        /// The reason for the rejection and the value to use instead.
        problem: String,
    },

    /// The process runs as root, which limactl rejects.
    #[error(
        "limactl must not run as the root user, and Lima rejects it; run the tests as an \
         unprivileged user (for example with `runuser -u USER -- cargo test`)."
    )]
    RunningAsRoot,

    /// Neither `LIMA_HOME` nor the home directory is known, so the Lima directory is unknown.
    #[error(
        "The Lima directory is unknown because neither LIMA_HOME nor HOME is set; set LIMA_HOME \
         to a short directory such as /tmp/lima."
    )]
    LimaHomeUnknown,

    /// `limactl --version` printed a version older than this crate supports.
    #[error(
        "Lima {found} is installed, but this crate requires Lima {required} or newer; upgrade \
         Lima (for example with `brew upgrade lima`) or point LIMACTL at a newer limactl."
    )]
    UnsupportedLimaVersion {
        /// The version string limactl printed.
        found: String,
        /// The minimum supported version.
        required: String,
    },

    /// `limactl --version` printed no version number.
    #[error("The command `{command}` printed no recognizable version: {output:?}.")]
    UnrecognizedVersion {
        /// The shell-quoted command.
        command: String,
        /// Its trimmed stdout.
        output: String,
    },

    /// The program could not be started at all (missing, not executable, ...).
    #[error("{}", spawn_message(command, program_hint, error))]
    Spawn {
        /// The shell-quoted command.
        command: String,
        /// Extra advice when the program was not found, for example to set `LIMACTL`.
        program_hint: Option<String>,
        /// The error from `spawn`.
        error: io::Error,
    },

    /// A command exited with a non-zero status.
    #[error("{0}")]
    CommandFailed(Box<CommandFailure>),

    /// A command ran past its deadline and was killed with its process group.
    #[error("{0}")]
    TimedOut(Box<CommandTimeout>),

    /// `limactl start` failed, and `kind` is the classified cause.
    #[error("{}", start_failed_message(name, kind, failure, host_agent_log))]
    StartFailed {
        /// The instance name.
        name: String,
        /// The classified cause.
        kind: StartFailure,
        /// The failed command with its stderr.
        failure: Box<CommandFailure>,
        /// The last lines of `<instance dir>/ha.stderr.log`, when that file could be read.
        host_agent_log: Option<String>,
    },

    /// `limactl list --json` printed output that is not a stream of instance objects.
    #[error("Parsing the output of `{command}` failed: {error}")]
    ListParse {
        /// The shell-quoted command.
        command: String,
        /// The location and cause of the parse failure.
        error: ListParseError,
    },

    /// `limactl list --json NAME` exited 0 but did not print exactly one entry for NAME.
    #[error(
        "The command `{command}` exited 0 but printed {count} entries named {name:?} instead \
         of exactly one."
    )]
    UnexpectedListOutput {
        /// The shell-quoted command.
        command: String,
        /// The requested instance name.
        name: String,
        /// How many entries carried that name.
        count: usize,
    },

    /// The operation needs an existing instance, and there is none with this name.
    #[error("The Lima instance {name:?} does not exist in LIMA_HOME {lima_home}.")]
    InstanceNotFound {
        /// The instance name.
        name: String,
        /// The Lima directory that was searched.
        lima_home: PathBuf,
    },

    /// The operation needs a running instance.
    #[error(
        "The Lima instance {name:?} has status `{status}`, but this operation needs it \
         `Running`; start it first (for example with `limactl start {name}`)."
    )]
    InstanceNotRunning {
        /// The instance name.
        name: String,
        /// The status `limactl list` reported.
        status: String,
    },

    /// The instance is in a state that cannot be started, such as `Broken`.
    #[error(
        "The Lima instance {name:?} has status `{status}` and cannot be started; delete it \
         with `limactl delete -f {name}` and create it again.{}",
        errors_suffix(errors)
    )]
    UnusableInstance {
        /// The instance name.
        name: String,
        /// The status `limactl list` reported (`""` when Lima could not read the instance).
        status: String,
        /// The `errors` array from `limactl list`, as compact JSON.
        errors: Vec<String>,
    },

    /// `limactl list` omitted a field that the operation needs.
    #[error(
        "`limactl list` printed no `{field}` for the Lima instance {name:?}, so {purpose} is \
         unknown."
    )]
    MissingInstanceField {
        /// The instance name.
        name: String,
        /// The JSON path of the missing field, for example `config.user.name`.
        field: &'static str,
        /// The purpose of the field, for the message.
        purpose: &'static str,
    },

    /// Lima's SSH private key can be read by group or others, so OpenSSH refuses it and boot
    /// stalls at the "ssh" requirement until the start timeout.
    #[error(
        "The Lima SSH private key {} has mode {mode:04o}, but OpenSSH refuses a private key \
         that group or others can access, so the VM would never become reachable; run \
         `chmod 600 {}` and try again.",
        path.display(),
        shell_words::quote(&path.to_string_lossy())
    )]
    InsecureSshKey {
        /// The key file, `<LIMA_HOME>/_config/user`.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A bounded wait ended before its condition held.
    #[error("{}", wait_timed_out_message(what, after, last_failure))]
    WaitTimedOut {
        /// A description of the awaited condition.
        what: String,
        /// How long the wait lasted.
        after: Duration,
        /// The last failure seen while waiting.
        last_failure: Option<String>,
    },

    /// A file system operation failed.
    #[error("Failed to {action} {}: {error}.", path.display())]
    Io {
        /// The failed action as a verb phrase, for example "create the working directory".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
}

/// The cause of a failed `limactl start`, classified from its stderr.
///
/// The classification matches substrings without their quote characters, because Lima 2.2.0
/// changed the quotes in these messages from `"…"` to `` `…` ``.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartFailure {
    /// The host agent did not report `running` before `--timeout`.
    Timeout,
    /// The VM runs, but a requirement, probe or copyToHost step failed.
    Degraded,
    /// The host agent process exited during boot.
    HostAgentExited,
    /// A host agent PID file from an earlier run is still present.
    StaleHostAgent,
    /// `start --name=N` found an existing instance N.
    AlreadyExists,
    /// Any other failure.
    Other,
}

impl StartFailure {
    /// Classifies a failed start from its fatal reason (if one was found) and its full stderr.
    ///
    /// The reason is checked first, because earlier stderr lines can mention other states. For
    /// example, a degraded start logs a `DEGRADED` warning before its fatal line.
    pub fn classify(reason: Option<&str>, stderr: &str) -> Self {
        if let Some(reason) = reason {
            let kind = Self::classify_text(reason);
            if kind != Self::Other {
                return kind;
            }
        }
        Self::classify_text(stderr)
    }

    fn classify_text(text: &str) -> Self {
        let text = text.to_lowercase();
        let timed_out = text.lines().any(|line| {
            line.contains("did not receive an event with the") && line.contains("running")
        });
        if text.contains("seems running (hint: remove") {
            Self::StaleHostAgent
        } else if text.contains("already exists") {
            Self::AlreadyExists
        } else if timed_out {
            Self::Timeout
        } else if text.contains("host agent process has exited") || text.contains("exiting, status")
        {
            Self::HostAgentExited
        } else if text.contains("degraded") {
            Self::Degraded
        } else {
            Self::Other
        }
    }

    /// Whether Lima leaves the VM running after this failure, so the caller should delete it.
    pub fn leaves_vm_behind(self) -> bool {
        !matches!(self, Self::AlreadyExists | Self::StaleHostAgent)
    }

    fn describe(self, name: &str) -> String {
        match self {
            Self::Timeout => "the host agent did not report the `running` status before the start \
                              timeout, which usually means that SSH never came up or that a \
                              provisioning script or readiness probe kept failing"
                .to_owned(),
            Self::Degraded => "the VM booted, but Lima reported it as degraded because a \
                               requirement, readiness probe or copyToHost step failed"
                .to_owned(),
            Self::HostAgentExited => {
                "the Lima host agent exited while the VM was booting".to_owned()
            }
            Self::StaleHostAgent => format!(
                "a host agent PID file from an earlier run is still present; run \
                 `limactl stop -f {name}` and try again"
            ),
            Self::AlreadyExists => "an instance with this name already exists".to_owned(),
            Self::Other => "limactl reported an error".to_owned(),
        }
    }
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self {
            Self::Timeout => "timeout",
            Self::Degraded => "degraded",
            Self::HostAgentExited => "host agent exited",
            Self::StaleHostAgent => "stale host agent",
            Self::AlreadyExists => "already exists",
            Self::Other => "other",
        };
        f.write_str(label)
    }
}

/// A command that exited with a non-zero status, with what it printed.
#[derive(Debug)]
pub struct CommandFailure {
    /// The full argv, shell-quoted, program path first.
    pub command: String,
    /// The exit status.
    pub status: ExitStatus,
    /// The message of limactl's last fatal log line, when stderr has one.
    pub reason: Option<String>,
    /// The last lines of stderr, ANSI colour codes removed, trimmed.
    pub stderr_tail: String,
    /// The last lines of stdout, trimmed; empty for most limactl subcommands.
    pub stdout_tail: String,
}

impl CommandFailure {
    /// Builds a failure from raw output, extracting the fatal reason and the output tails.
    pub(crate) fn new(command: String, status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> Self {
        let stderr_text = strip_ansi(&String::from_utf8_lossy(stderr));
        let stdout_text = strip_ansi(&String::from_utf8_lossy(stdout));
        Self {
            command,
            status,
            reason: crate::stderr::fatal_reason(&stderr_text),
            stderr_tail: tail_lines(&stderr_text, TAIL_LINES),
            stdout_tail: tail_lines(&stdout_text, TAIL_LINES),
        }
    }
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "The command `{}` failed with {}",
            self.command,
            describe_status(self.status)
        )?;
        match &self.reason {
            Some(reason) => write!(f, ": {}", sentence_end(reason))?,
            None => f.write_str(".")?,
        }
        write_tail(f, "stderr", &self.stderr_tail)?;
        write_tail(f, "stdout", &self.stdout_tail)?;
        if self.stderr_tail.is_empty() && self.stdout_tail.is_empty() {
            f.write_str(" It printed nothing.")?;
        }
        Ok(())
    }
}

/// A command killed at its deadline, with what it printed before.
#[derive(Debug)]
pub struct CommandTimeout {
    /// The full argv, shell-quoted, program path first.
    pub command: String,
    /// The deadline that passed.
    pub after: Duration,
    /// The last lines of stderr, ANSI colour codes removed, trimmed.
    pub stderr_tail: String,
}

impl fmt::Display for CommandTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "The command `{}` timed out after {} and was killed together with its process group.",
            self.command,
            format_duration(self.after)
        )?;
        write_tail(f, "stderr", &self.stderr_tail)?;
        if self.stderr_tail.is_empty() {
            f.write_str(" It printed nothing on stderr.")?;
        }
        Ok(())
    }
}

/// Renders an exit status in words: "exit code 1" or "signal 9 (SIGKILL)".
pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;

    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(number) => match nix::sys::signal::Signal::try_from(number) {
            Ok(signal) => format!("signal {number} ({})", signal.as_str()),
            Err(_) => format!("signal {number}"),
        },
        None => format!("status {status}"),
    }
}

/// Formats a duration for messages in Go's style (`1m30s`, `1.5s`), truncated to milliseconds.
pub(crate) fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        return format!("{}ms", duration.as_millis());
    }
    let whole = crate::spec::go_duration(Duration::from_secs(duration.as_secs()));
    let millis = duration.subsec_millis();
    if millis == 0 {
        return whole;
    }
    let fraction = format!("{millis:03}");
    format!(
        "{}.{}s",
        whole.trim_end_matches('s'),
        fraction.trim_end_matches('0')
    )
}

fn write_tail(f: &mut fmt::Formatter<'_>, stream: &str, tail: &str) -> fmt::Result {
    f.write_str(&render_tail(stream, tail))
}

/// Renders a non-empty output tail under a heading such as `stderr (last 2 lines):`, each line
/// indented; an empty tail renders as nothing.
fn render_tail(stream: &str, tail: &str) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let count = tail.lines().count();
    let noun = if count == 1 { "line" } else { "lines" };
    let mut text = format!("\n{stream} (last {count} {noun}):");
    for line in tail.lines() {
        text.push_str("\n  ");
        text.push_str(line);
    }
    text
}

/// Appends a full stop unless the text already ends a sentence.
fn sentence_end(text: &str) -> String {
    let text = text.trim_end();
    if text.ends_with(['.', '!', '?']) {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

fn spawn_message(command: &str, program_hint: &Option<String>, error: &io::Error) -> String {
    let mut message = format!("Failed to start the command `{command}`: {error}.");
    if let Some(hint) = program_hint {
        message.push(' ');
        message.push_str(hint);
    }
    message
}

impl Error {
    /// Renders the error for a caller that has already deleted the instance after a failed
    /// start: the same text, without the hint to delete it.
    pub fn to_string_after_cleanup(&self) -> String {
        match self {
            Error::StartFailed {
                name,
                kind,
                failure,
                host_agent_log,
            } => start_failed_text(name, kind, failure, host_agent_log, false),
            other => other.to_string(),
        }
    }
}

fn start_failed_message(
    name: &str,
    kind: &StartFailure,
    failure: &CommandFailure,
    host_agent_log: &Option<String>,
) -> String {
    start_failed_text(name, kind, failure, host_agent_log, true)
}

fn start_failed_text(
    name: &str,
    kind: &StartFailure,
    failure: &CommandFailure,
    host_agent_log: &Option<String>,
    with_cleanup_hint: bool,
) -> String {
    let mut message = format!(
        "Starting the Lima instance {name:?} failed because {}.",
        kind.describe(name)
    );
    if with_cleanup_hint && kind.leaves_vm_behind() {
        message.push_str(&format!(
            " Lima leaves the VM running after a failed start; delete it with \
             `limactl delete -f {name}`."
        ));
    }
    message.push(' ');
    message.push_str(&failure.to_string());
    if let Some(log) = host_agent_log {
        message.push_str(&render_tail("ha.stderr.log", log));
    }
    message
}

fn wait_timed_out_message(what: &str, after: &Duration, last_failure: &Option<String>) -> String {
    let mut message = format!(
        "Timed out after {} waiting for {what}.",
        format_duration(*after)
    );
    if let Some(failure) = last_failure {
        message.push_str(" The last attempt failed: ");
        message.push_str(failure);
    }
    message
}

fn errors_suffix(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" Lima reports these errors: {}.", errors.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn exit_code(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn status_exit_code_in_words() {
        assert_eq!(describe_status(exit_code(1)), "exit code 1");
    }

    #[test]
    fn status_signal_in_words() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn command_failure_quotes_command_and_stderr() {
        let argv = [
            "/opt/lima bin/limactl",
            "shell",
            "kt-a",
            "--",
            "echo",
            "it's",
        ];
        let command = shell_words::join(argv);
        let stderr = b"time=\"2026-01-01T00:00:00Z\" level=warning msg=\"No instance matching kt-a found.\"\n\
                       time=\"2026-01-01T00:00:00Z\" level=fatal msg=\"unmatched instances\"\n";
        let failure = CommandFailure::new(command, exit_code(1), b"", stderr);
        let text = failure.to_string();

        assert!(
            text.starts_with(
                "The command `'/opt/lima bin/limactl' shell kt-a -- echo 'it'\\''s'` failed with \
                 exit code 1: unmatched instances.\n"
            ),
            "{text}"
        );
        assert!(text.contains("\nstderr (last 2 lines):\n  time="), "{text}");
        assert!(
            text.ends_with("level=fatal msg=\"unmatched instances\""),
            "{text}"
        );
        assert!(!text.contains("stdout"), "{text}");
    }

    #[test]
    fn command_failure_keeps_last_twenty_lines() {
        let stderr: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let failure = CommandFailure::new("limactl".into(), exit_code(2), b"", stderr.as_bytes());

        assert_eq!(failure.stderr_tail.lines().count(), 20);
        assert!(failure.stderr_tail.starts_with("line 11\n"));
        assert!(failure.stderr_tail.ends_with("line 30"));
    }

    #[test]
    fn command_failure_strips_ansi_colours() {
        let stderr = b"\x1b[31mFATA\x1b[0m[0000] expected status \"Running\", got \"Stopped\"\n";
        let failure = CommandFailure::new("limactl stop k".into(), exit_code(1), b"", stderr);

        assert!(!failure.stderr_tail.contains('\x1b'));
        assert_eq!(
            failure.reason.as_deref(),
            Some("expected status \"Running\", got \"Stopped\"")
        );
    }

    #[test]
    fn command_failure_without_output() {
        let failure = CommandFailure::new("false".into(), exit_code(1), b"", b"  \n");
        assert_eq!(
            failure.to_string(),
            "The command `false` failed with exit code 1. It printed nothing."
        );
    }

    #[test]
    fn timeout_message_names_duration() {
        let timeout = CommandTimeout {
            command: "limactl list --tty=false --json".into(),
            after: Duration::from_secs(60),
            stderr_tail: "still waiting".into(),
        };
        assert_eq!(
            timeout.to_string(),
            "The command `limactl list --tty=false --json` timed out after 1m0s and was killed \
             together with its process group.\nstderr (last 1 line):\n  still waiting"
        );
    }

    /// The fatal lines of `limactl start` as Lima ≤ 2.1 (double quotes) and 2.2 (backticks)
    /// print them, in logrus's text format (piped) and TTY format.
    #[test]
    fn start_failure_timeout_both_quote_styles() {
        let lines = [
            r#"time="2026-01-01T00:00:00Z" level=fatal msg="did not receive an event with the \"running\" status""#,
            r#"time="2026-01-01T00:00:00Z" level=fatal msg="did not receive an event with the `running` status""#,
            r#"FATA[0604] did not receive an event with the "running" status"#,
        ];
        for line in lines {
            let reason = crate::stderr::fatal_reason(line);
            assert_eq!(
                StartFailure::classify(reason.as_deref(), line),
                StartFailure::Timeout,
                "{line}"
            );
        }
    }

    #[test]
    fn start_failure_exiting_event_is_not_timeout() {
        let line = r#"FATA[0180] did not receive an event with the "exiting" status"#;
        let reason = crate::stderr::fatal_reason(line);
        assert_eq!(
            StartFailure::classify(reason.as_deref(), line),
            StartFailure::Other
        );
    }

    #[test]
    fn start_failure_degraded() {
        let stderr = "time=\"t\" level=warning msg=\"DEGRADED. The VM seems running, but file \
                      sharing and port forwarding may not work. (hint: see \
                      `/LIMA_HOME/kt-0a1b2c3d/ha.stderr.log`)\"\n\
                      time=\"t\" level=fatal msg=\"degraded, status={Running:true Degraded:true \
                      Exiting:false}\"\n";
        let reason = crate::stderr::fatal_reason(stderr);
        assert_eq!(
            StartFailure::classify(reason.as_deref(), stderr),
            StartFailure::Degraded
        );
    }

    #[test]
    fn start_failure_other_kinds() {
        let cases = [
            (
                "time=\"t\" level=fatal msg=\"host agent process has exited: exit status 1\"",
                StartFailure::HostAgentExited,
            ),
            (
                "time=\"t\" level=fatal msg=\"exiting, status={Running:false Exiting:true} \
                 (hint: see \\\"/h/kt/ha.stderr.log\\\")\"",
                StartFailure::HostAgentExited,
            ),
            (
                "time=\"t\" level=fatal msg=\"instance \\\"kt\\\" seems running (hint: remove \
                 \\\"/h/kt/ha.pid\\\" if the instance is not actually running)\"",
                StartFailure::StaleHostAgent,
            ),
            (
                "time=\"t\" level=fatal msg=\"instance `kt` seems running (hint: remove \
                 `/h/kt/ha.pid` if the instance is not actually running)\"",
                StartFailure::StaleHostAgent,
            ),
            (
                "time=\"t\" level=fatal msg=\"instance \\\"kt\\\" already exists \
                 (\\\"/h/kt\\\")\"",
                StartFailure::AlreadyExists,
            ),
            (
                "time=\"t\" level=fatal msg=\"template does not define param `foo`\"",
                StartFailure::Other,
            ),
        ];
        for (stderr, expected) in cases {
            let reason = crate::stderr::fatal_reason(stderr);
            assert_eq!(
                StartFailure::classify(reason.as_deref(), stderr),
                expected,
                "{stderr}"
            );
        }
    }

    #[test]
    fn start_failed_message_has_hint_and_log() {
        let stderr =
            br#"time="t" level=fatal msg="did not receive an event with the `running` status""#;
        let failure = CommandFailure::new(
            "limactl start --tty=false --name=kt template:k3s".into(),
            exit_code(1),
            b"",
            stderr,
        );
        let error = Error::StartFailed {
            name: "kt".into(),
            kind: StartFailure::Timeout,
            failure: Box::new(failure),
            host_agent_log: Some(
                "info: Waiting for the essential requirement 1 of 2: \"ssh\"".into(),
            ),
        };
        let text = error.to_string();

        assert!(
            text.starts_with("Starting the Lima instance \"kt\" failed because the host agent"),
            "{text}"
        );
        assert!(
            text.contains("delete it with `limactl delete -f kt`."),
            "{text}"
        );
        assert!(
            text.contains(
                "failed with exit code 1: did not receive an event with the `running` status.\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("ha.stderr.log (last 1 line):\n  info: Waiting for the essential requirement 1 of 2: \"ssh\""), "{text}");
    }

    #[test]
    fn insecure_key_message_names_fix() {
        let error = Error::InsecureSshKey {
            path: PathBuf::from("/tmp/lima home/_config/user"),
            mode: 0o644,
        };
        assert_eq!(
            error.to_string(),
            "The Lima SSH private key /tmp/lima home/_config/user has mode 0644, but OpenSSH \
             refuses a private key that group or others can access, so the VM would never \
             become reachable; run `chmod 600 '/tmp/lima home/_config/user'` and try again."
        );
    }

    #[test]
    fn wait_timed_out_names_target_and_last_failure() {
        let error = Error::WaitTimedOut {
            what: "instance \"kt\" to accept `limactl shell`".into(),
            after: Duration::from_millis(1500),
            last_failure: Some("ssh: connect refused.".into()),
        };
        assert_eq!(
            error.to_string(),
            "Timed out after 1.5s waiting for instance \"kt\" to accept `limactl shell`. The last \
             attempt failed: ssh: connect refused."
        );
    }
}
