//! Running jetp with its output streamed into the log, and the private SSH agent it signs in
//! with.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};

use super::error::ConvergeError;
use super::output::{Tally, strip_ansi, tail};

/// How many output lines a failure message carries.
pub(crate) const TAIL_LINES: usize = 30;

/// How long the runner keeps reading output after jetp has exited, in case a process it
/// started still holds the pipes open.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Bound on `ssh-agent` creating its socket. It does so before it accepts any request, in
/// milliseconds on an idle machine.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on `ssh-add` loading one unencrypted key into a local agent.
const SSH_ADD_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit status and output of a finished jetp run.
pub(crate) struct Finished {
    pub status: ExitStatus,
    /// Every output line, stdout and stderr interleaved in arrival order, ANSI codes removed.
    pub lines: Vec<String>,
    pub tally: Tally,
}

/// Runs `command` until it exits or `timeout` passes, handing each output line (ANSI codes
/// removed) to `on_line` as it arrives.
///
/// stdin is null, and stdout and stderr are read concurrently line by line, so neither pipe can
/// fill up. The command runs in its own process group, which gets SIGKILL at the timeout.
pub(crate) async fn run_streaming(
    mut command: Command,
    rendered: &str,
    instance: &str,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Finished, ConvergeError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| ConvergeError::Spawn {
        command: rendered.to_owned(),
        source,
    })?;

    let (sender, mut receiver) = mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    tokio::spawn(forward_lines(stdout, sender.clone()));
    tokio::spawn(forward_lines(stderr, sender));

    let mut lines = Vec::new();
    let mut tally = Tally::default();
    let mut record = |raw: String| {
        let line = strip_ansi(&raw);
        on_line(&line);
        tally.record(&line);
        lines.push(line);
    };

    let deadline = Instant::now() + timeout;
    let mut wake = deadline;
    let mut status = None;
    let mut pipes_open = true;
    while pipes_open || status.is_none() {
        tokio::select! {
            line = receiver.recv(), if pipes_open => match line {
                Some(line) => record(line),
                None => pipes_open = false,
            },
            exit = child.wait(), if status.is_none() => {
                let exit = exit.map_err(|source| ConvergeError::Spawn {
                    command: rendered.to_owned(),
                    source,
                })?;
                status = Some(exit);
                wake = Instant::now() + DRAIN_GRACE;
            },
            () = sleep_until(wake) => {
                if status.is_some() {
                    tracing::warn!(
                        instance,
                        command = rendered,
                        "jetp exited, but a process it started still holds its output open; \
                         continuing with the output read so far"
                    );
                    break;
                }
                kill_group(&child);
                let _ = child.wait().await;
                while let Ok(line) = receiver.try_recv() {
                    record(line);
                }
                return Err(ConvergeError::TimedOut {
                    instance: instance.to_owned(),
                    command: rendered.to_owned(),
                    after: timeout,
                    tail_lines: TAIL_LINES,
                    tail: tail(&lines, TAIL_LINES),
                });
            },
        }
    }

    Ok(Finished {
        status: status.expect("the loop ends after the exit"),
        lines,
        tally,
    })
}

/// Sends each line of `reader` (without its line break) to `sender`, until end of file.
async fn forward_lines(reader: impl AsyncRead + Unpin, sender: mpsc::UnboundedSender<String>) {
    let mut reader = BufReader::new(reader);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                if sender.send(line).is_err() {
                    break;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "reading jetp's output failed");
                break;
            }
        }
    }
}

/// Sends SIGKILL to the child's process group. The child must not have been reaped yet.
fn kill_group(child: &Child) {
    let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return;
    };
    if let Err(error) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        // ESRCH: the group has no members left.
        tracing::debug!(%error, pgid = pid, "killing jetp's process group failed");
    }
}

/// Renders a status in words: `exited with status 1` or `was killed by signal 9`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// An `ssh-agent` that this process started, holding only Lima's key; it is killed on drop.
///
/// jetporch 0.1.1 (the `jetp` on crates.io) signs in only through an SSH agent and ignores
/// `jet_ssh_private_key_file` (its `src/connection/ssh.rs` calls `userauth_agent` alone), so the
/// key must be in an agent. A private agent keeps keys of the user's own agent out of the
/// attempt, because each offered key counts against the server's `MaxAuthTries`.
pub(crate) struct SshAgent {
    socket: PathBuf,
    _child: Child,
}

impl SshAgent {
    /// Starts `ssh-agent -D -a DIR/agent.sock` and adds `key` to it.
    ///
    /// Returns `Ok(None)` when `ssh-agent` or `ssh-add` is not installed, because the Jetpack
    /// fork reads the key file itself and needs no agent.
    pub(crate) async fn start(dir: &Path, key: &Path) -> Result<Option<SshAgent>, ConvergeError> {
        let socket = dir.join("agent.sock");
        let log = dir.join("ssh-agent.log");
        let log_file = std::fs::File::create(&log).map_err(|source| ConvergeError::Io {
            action: "create the ssh-agent log",
            path: log.clone(),
            source,
        })?;

        let mut command = Command::new("ssh-agent");
        command
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        let rendered = shell_words::join(["ssh-agent", "-D", "-a", &socket.to_string_lossy()]);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    "ssh-agent is not installed; jetp 0.1.x signs in only through an SSH agent \
                     and will fail to connect (the Jetpack fork reads the key file itself)"
                );
                return Ok(None);
            }
            Err(source) => {
                return Err(ConvergeError::Spawn {
                    command: rendered,
                    source,
                });
            }
        };

        let started = Instant::now();
        while !socket.exists() {
            let exited = child.try_wait().map_err(|source| ConvergeError::Spawn {
                command: rendered.clone(),
                source,
            })?;
            if exited.is_some() || started.elapsed() > AGENT_START_TIMEOUT {
                let status = match exited {
                    Some(status) => describe_status(status),
                    None => format!("created no socket within {AGENT_START_TIMEOUT:?}"),
                };
                return Err(ConvergeError::Agent {
                    command: rendered,
                    status,
                    output: std::fs::read_to_string(&log)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                });
            }
            sleep(Duration::from_millis(20)).await;
        }
        let agent = SshAgent {
            socket,
            _child: child,
        };

        let mut add = Command::new("ssh-add");
        add.arg(key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let rendered = shell_words::join(["ssh-add", &key.to_string_lossy()]);
        let output = match tokio::time::timeout(SSH_ADD_TIMEOUT, add.output()).await {
            Err(_) => {
                return Err(ConvergeError::Agent {
                    command: rendered,
                    status: format!("timed out after {SSH_ADD_TIMEOUT:?}"),
                    output: String::new(),
                });
            }
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    "ssh-add is not installed; jetp 0.1.x signs in only through an SSH agent \
                     and will fail to connect (the Jetpack fork reads the key file itself)"
                );
                return Ok(None);
            }
            Ok(Err(source)) => {
                return Err(ConvergeError::Spawn {
                    command: rendered,
                    source,
                });
            }
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return Err(ConvergeError::Agent {
                command: rendered,
                status: describe_status(output.status),
                output: text.trim().to_owned(),
            });
        }
        Ok(Some(agent))
    }

    /// Returns the agent's socket, the value for `SSH_AUTH_SOCK`.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-jetp");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn streams_both_outputs_and_strips_colours() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(
            dir.path(),
            "printf '\\033[34m✓ node => created\\033[0m\\n'; echo oops >&2; echo '✓ node => matched'",
        );

        let finished = run_streaming(
            Command::new(&path),
            "fake-jetp",
            "node",
            Duration::from_secs(10),
            |_| {},
        )
        .await
        .unwrap();

        assert!(finished.status.success());
        assert_eq!(finished.lines.len(), 3, "{:?}", finished.lines);
        assert!(finished.lines.contains(&"✓ node => created".to_owned()));
        assert!(finished.lines.contains(&"oops".to_owned()));
        assert_eq!(finished.tally.changed, 1);
        assert_eq!(finished.tally.unchanged, 1);
    }

    #[tokio::test]
    async fn stdin_is_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(
            dir.path(),
            "if read line; then echo \"got $line\"; else echo eof; fi",
        );

        let finished = run_streaming(
            Command::new(&path),
            "fake-jetp",
            "node",
            Duration::from_secs(10),
            |_| {},
        )
        .await
        .unwrap();

        assert_eq!(finished.lines, ["eof"]);
    }

    #[tokio::test]
    async fn timeout_kills_and_keeps_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "echo started\nsleep 300");
        let started = std::time::Instant::now();

        let error = run_streaming(
            Command::new(&path),
            "fake-jetp --slow",
            "node",
            Duration::from_millis(500),
            |_| {},
        )
        .await
        .err()
        .expect("the run times out");

        assert!(started.elapsed() < Duration::from_secs(10));
        let ConvergeError::TimedOut { command, tail, .. } = &error else {
            panic!("expected a timeout, got {error:?}");
        };
        assert_eq!(command, "fake-jetp --slow");
        assert_eq!(tail, "started");
    }

    #[tokio::test]
    async fn lines_are_handled_as_they_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("released");
        // The script waits until the test has seen its first line, which only works if lines
        // are handled while the process still runs.
        let path = script(
            dir.path(),
            &format!(
                "echo first\nwhile [ ! -e '{}' ]; do sleep 0.05; done\necho second",
                marker.display()
            ),
        );
        let (seen_sender, seen) = std::sync::mpsc::channel();
        let marker_for_thread = marker.clone();
        let waiter = std::thread::spawn(move || {
            let first = seen.recv_timeout(Duration::from_secs(10));
            fs::write(&marker_for_thread, "").unwrap();
            first
        });

        let finished = run_streaming(
            Command::new(&path),
            "fake-jetp",
            "node",
            Duration::from_secs(20),
            |line| {
                let _ = seen_sender.send(line.to_owned());
            },
        )
        .await
        .unwrap();

        assert_eq!(waiter.join().unwrap().as_deref(), Ok("first"));
        assert_eq!(finished.lines, ["first", "second"]);
    }

    #[test]
    fn status_words() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe_status(ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(9)),
            "was killed by signal 9"
        );
    }
}
