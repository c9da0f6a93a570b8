//! Running one external command with a deadline, captured output and no processes left behind.
//!
//! Each command runs in its own process group with stdout and stderr piped and drained on two
//! threads, so neither pipe can fill up and block the child. stdin is null unless the caller
//! feeds a buffer, which a third thread writes. When the deadline passes, the whole process
//! group gets SIGKILL and the child is reaped.
//!
//! A process that the command started and that outlives it (an OpenSSH ControlMaster started
//! by `limactl shell`, for example) can keep the output pipes open after the command exits.
//! The runner therefore waits for end-of-file only for [`DRAIN_GRACE`] after the exit and then
//! returns what it has read. Lima's host agent does not count here: limactl starts it in a
//! process group of its own with its output redirected to files.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tracing::{debug, warn};

use crate::error::{CommandTimeout, Error, Result, TAIL_LINES};
use crate::stderr::{strip_ansi, tail_lines};

/// How long the runner keeps reading stdout and stderr after the command has exited (or was
/// killed), in case a process it started keeps the pipes open.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Maximum pause between two checks of whether the command has exited.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Size of one read from a pipe.
const READ_CHUNK: usize = 64 * 1024;

/// Exit status and captured output of a finished command.
#[derive(Debug)]
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Renders the command's argv (program first) shell-quoted, for messages and logs.
pub(crate) fn render(command: &Command) -> String {
    let program = command.get_program().to_string_lossy();
    let args = command.get_args().map(|arg| arg.to_string_lossy());
    shell_words::join(std::iter::once(program).chain(args))
}

/// Replaces every occurrence of each of `secrets` in `text` with `<redacted>`, for command
/// lines and output that go into logs and errors.
pub(crate) fn redact(mut text: String, secrets: &[String]) -> String {
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        text = text.replace(secret.as_str(), "<redacted>");
    }
    text
}

/// What a command reads on stdin.
pub(crate) enum Stdin {
    /// `/dev/null`, so the command (and ssh under `limactl shell`) cannot swallow the caller's
    /// input.
    Null,
    /// A buffer written to a pipe, which is then closed.
    Bytes(Vec<u8>),
    /// A stream copied to a pipe chunk by chunk, so memory stays flat whatever its size.
    Reader(Box<dyn Read + Send>),
}

impl From<Option<Vec<u8>>> for Stdin {
    fn from(buffer: Option<Vec<u8>>) -> Self {
        buffer.map_or(Stdin::Null, Stdin::Bytes)
    }
}

/// Runs `command` to completion or until `deadline` has passed.
///
/// The command's own stdio settings and process group are overwritten. A failure to read a
/// [`Stdin::Reader`] source is an error even when the command exits 0, because the command then
/// saw truncated input. `on_spawn` gets the pid of the started command before the runner waits
/// for it. The command leads its own process group, so that pid is also the group's id.
///
/// # Errors
///
/// [`Error::Spawn`] when the program cannot be started, [`Error::TimedOut`] after the deadline
/// (the process group has been killed by then), and [`Error::Io`] when waiting fails. A
/// non-zero exit is not an error here.
pub(crate) fn run_observed(
    mut command: Command,
    deadline: Duration,
    stdin: Stdin,
    on_spawn: impl FnOnce(u32),
    secrets: &[String],
) -> Result<Output> {
    let rendered = redact(render(&command), secrets);
    command
        .stdin(if matches!(stdin, Stdin::Null) {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);

    debug!(command = %rendered, deadline_ms = deadline.as_millis() as u64, "running command");
    let started = Instant::now();
    let mut child = command.spawn().map_err(|error| Error::Spawn {
        command: rendered.clone(),
        program_hint: None,
        error,
    })?;
    on_spawn(child.id());

    let pipes = start_io_threads(&mut child, stdin);
    let (stdout_drain, stderr_drain, feeder) = match pipes {
        Ok(drains) => drains,
        Err(error) => {
            kill_group(&child);
            let _ = child.wait();
            return Err(Error::Io {
                action: "start an output reader thread for",
                path: command.get_program().into(),
                error,
            });
        }
    };

    let exit = wait_until(&mut child, started.checked_add(deadline));
    let status = match exit {
        Ok(Some(status)) => status,
        Ok(None) => {
            debug!(command = %rendered, "command timed out; killing its process group");
            kill_group(&child);
            let _ = child.wait();
            let drain_until = Instant::now() + DRAIN_GRACE;
            let _ = stdout_drain.finish(drain_until);
            let stderr = stderr_drain.finish(drain_until);
            let stderr_text = redact(strip_ansi(&String::from_utf8_lossy(&stderr.bytes)), secrets);
            return Err(Error::TimedOut(Box::new(CommandTimeout {
                command: rendered,
                after: deadline,
                stderr_tail: tail_lines(&stderr_text, TAIL_LINES),
            })));
        }
        Err(error) => {
            kill_group(&child);
            let _ = child.wait();
            return Err(Error::Io {
                action: "wait for the command",
                path: command.get_program().into(),
                error,
            });
        }
    };

    let drain_until = Instant::now() + DRAIN_GRACE;
    let stdout = stdout_drain.finish(drain_until);
    let stderr = stderr_drain.finish(drain_until);
    if let Some(feeder) = feeder
        && finishes_before(&feeder, Instant::now() + DRAIN_GRACE)
        && let Ok(Err(error)) = feeder.join()
    {
        return Err(Error::Io {
            action: "read the input streamed to",
            path: command.get_program().into(),
            error,
        });
    }
    for (stream, drained) in [("stdout", &stdout), ("stderr", &stderr)] {
        if !drained.complete {
            warn!(
                command = %rendered,
                stream,
                grace_ms = DRAIN_GRACE.as_millis() as u64,
                "the command exited, but a process it started still holds its {stream} open; \
                 continuing with the output read so far"
            );
        }
    }

    debug!(
        command = %rendered,
        status = %crate::error::describe_status(status),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "command finished"
    );
    Ok(Output {
        status,
        stdout: stdout.bytes,
        stderr: stderr.bytes,
    })
}

/// A stdin writer thread; it returns the error of reading a [`Stdin::Reader`] source, if any.
type Feeder = thread::JoinHandle<io::Result<()>>;

/// Starts the stdin writer (unless stdin is null) and the two output readers.
fn start_io_threads(child: &mut Child, stdin: Stdin) -> io::Result<(Drain, Drain, Option<Feeder>)> {
    let feeder = match (stdin, child.stdin.take()) {
        (Stdin::Bytes(buffer), Some(pipe)) => {
            Some(spawn_feeder(pipe, Box::new(io::Cursor::new(buffer)))?)
        }
        (Stdin::Reader(source), Some(pipe)) => Some(spawn_feeder(pipe, source)?),
        _ => None,
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    Ok((
        Drain::start(stdout, "stdout")?,
        Drain::start(stderr, "stderr")?,
        feeder,
    ))
}

/// Waits until `feeder` has finished or `until` passes, and returns whether it finished.
///
/// The command closing its stdin ends the copy at once (with EPIPE), so this only waits long
/// when something else still holds the pipe open.
fn finishes_before(feeder: &Feeder, until: Instant) -> bool {
    while !feeder.is_finished() {
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Copies `source` into the command's stdin and closes it.
///
/// The writer is detached: if the command never reads its input, the write fails with EPIPE once
/// it exits, or blocks until whatever keeps the pipe open goes away. Write errors are expected
/// then and only logged; a read error of `source` is returned, because it means the command got
/// truncated input.
fn spawn_feeder(
    mut pipe: std::process::ChildStdin,
    mut source: Box<dyn Read + Send>,
) -> io::Result<Feeder> {
    thread::Builder::new()
        .name("command-stdin".into())
        .spawn(move || {
            let mut buffer = vec![0; READ_CHUNK];
            loop {
                let read = match source.read(&mut buffer) {
                    Ok(0) => return Ok(()),
                    Ok(read) => read,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(error),
                };
                if let Err(error) = pipe.write_all(&buffer[..read]) {
                    if error.kind() != io::ErrorKind::BrokenPipe {
                        debug!(%error, "writing the command's stdin failed");
                    }
                    return Ok(());
                }
            }
        })
}

/// Polls the child until it exits or `deadline_at` passes (`None` means no deadline).
///
/// Polling keeps the child unreaped while it runs, so its PID, which is also its process group
/// ID, cannot be reused before `kill_group` signals it.
fn wait_until(child: &mut Child, deadline_at: Option<Instant>) -> io::Result<Option<ExitStatus>> {
    let mut interval = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        let pause = match deadline_at {
            Some(deadline_at) if now >= deadline_at => return Ok(None),
            Some(deadline_at) => interval.min(deadline_at - now),
            None => interval,
        };
        thread::sleep(pause);
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    }
}

/// Sends SIGKILL to the child's process group. The child must not have been reaped yet.
fn kill_group(child: &Child) {
    let Ok(raw_pid) = i32::try_from(child.id()) else {
        return;
    };
    if let Err(error) = killpg(Pid::from_raw(raw_pid), Signal::SIGKILL) {
        // ESRCH: the group has no members left.
        debug!(%error, pgid = raw_pid, "killing the process group failed");
    }
}

/// One output pipe being read to its end on a thread.
struct Drain {
    buffer: Arc<Mutex<Vec<u8>>>,
    finished: mpsc::Receiver<()>,
}

/// Bytes read by a drain, and whether the pipe reached end-of-file.
struct Drained {
    bytes: Vec<u8>,
    /// Whether the pipe reached end-of-file (or failed) before the grace period ended.
    complete: bool,
}

impl Drain {
    fn start(mut reader: impl Read + Send + 'static, stream: &str) -> io::Result<Self> {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&buffer);
        let (sender, finished) = mpsc::channel();
        thread::Builder::new()
            .name(format!("command-{stream}"))
            .spawn(move || {
                let mut chunk = vec![0; READ_CHUNK];
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(count) => shared
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .extend_from_slice(&chunk[..count]),
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => {
                            debug!(%error, "reading the command's output failed");
                            break;
                        }
                    }
                }
                // The receiver is gone when the runner stopped waiting; nothing to tell then.
                let _ = sender.send(());
            })?;
        Ok(Self { buffer, finished })
    }

    /// Waits until end-of-file or `until`, then takes what was read.
    fn finish(self, until: Instant) -> Drained {
        let timeout = until.saturating_duration_since(Instant::now());
        let complete = self.finished.recv_timeout(timeout).is_ok();
        let bytes =
            std::mem::take(&mut *self.buffer.lock().unwrap_or_else(PoisonError::into_inner));
        Drained { bytes, complete }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use super::*;

    fn run(command: Command, deadline: Duration, stdin: Stdin) -> Result<Output> {
        run_observed(command, deadline, stdin, |_| {}, &[])
    }

    /// Writes an executable `#!/bin/sh` script into `dir`.
    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Checks whether the process is gone or is a zombie. A zombie has exited, but its new
    /// parent has not reaped it yet, and PID 1 in a container may never do so.
    fn process_is_dead(pid: u32) -> bool {
        let pid = Pid::from_raw(i32::try_from(pid).unwrap());
        if nix::sys::signal::kill(pid, None).is_err() {
            return true;
        }
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => {
                let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                state.is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X'))
            }
        }
    }

    #[test]
    fn captures_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "s", "echo out; echo err >&2; exit 3");

        let output = run(Command::new(&path), Duration::from_secs(10), Stdin::Null).unwrap();

        assert_eq!(output.status.code(), Some(3));
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
    }

    #[test]
    fn deadline_kills_script_and_its_child() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let path = script(
            dir.path(),
            "hang",
            &format!(
                "sleep 300 &\necho $! > '{}'\necho waiting >&2\nsleep 300",
                pid_file.display()
            ),
        );

        let started = Instant::now();
        let error = run(Command::new(&path), Duration::from_millis(500), Stdin::Null).unwrap_err();
        let elapsed = started.elapsed();

        let Error::TimedOut(timeout) = &error else {
            panic!("expected a timeout, got {error:?}");
        };
        assert_eq!(timeout.after, Duration::from_millis(500));
        assert_eq!(timeout.stderr_tail, "waiting");
        assert!(
            error.to_string().contains("timed out after 500ms"),
            "{error}"
        );
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

        let child_pid: u32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone_by = Instant::now() + Duration::from_secs(5);
        while !process_is_dead(child_pid) && Instant::now() < gone_by {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            process_is_dead(child_pid),
            "child {child_pid} of the killed script still runs"
        );
    }

    #[test]
    fn large_output_on_both_streams_does_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        // stderr first: a runner that read stdout to the end before stderr would block here.
        let path = script(
            dir.path(),
            "big",
            "head -c 10485760 /dev/zero | tr '\\0' e >&2\nhead -c 10485760 /dev/zero | tr '\\0' o",
        );

        let output = run(Command::new(&path), Duration::from_secs(60), Stdin::Null).unwrap();

        assert!(output.status.success());
        assert_eq!(output.stdout.len(), 10 * 1024 * 1024);
        assert_eq!(output.stderr.len(), 10 * 1024 * 1024);
        assert!(output.stdout.iter().all(|&b| b == b'o'));
        assert!(output.stderr.iter().all(|&b| b == b'e'));
    }

    #[test]
    fn stdin_is_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(
            dir.path(),
            "read",
            "if read line; then echo \"got $line\"; else echo eof; fi",
        );

        let output = run(Command::new(&path), Duration::from_secs(10), Stdin::Null).unwrap();

        assert_eq!(String::from_utf8_lossy(&output.stdout), "eof\n");
    }

    #[test]
    fn stdin_buffer_is_fed_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "cat", "cat");
        let input: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();

        let output = run(
            Command::new(&path),
            Duration::from_secs(30),
            Stdin::Bytes(input.clone()),
        )
        .unwrap();

        assert!(output.status.success());
        assert_eq!(output.stdout, input);
    }

    #[test]
    fn unread_stdin_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "ignore", "exit 0");
        let input = vec![b'x'; 4 * 1024 * 1024];

        let output = run(
            Command::new(&path),
            Duration::from_secs(10),
            Stdin::Bytes(input),
        )
        .unwrap();

        assert!(output.status.success());
    }

    #[test]
    fn streamed_stdin_arrives_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "count", "wc -c");
        // Larger than a pipe buffer many times over, produced lazily.
        let input = io::repeat(b'z').take(20 * 1024 * 1024);

        let output = run(
            Command::new(&path),
            Duration::from_secs(30),
            Stdin::Reader(Box::new(input)),
        )
        .unwrap();

        assert!(output.status.success());
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "20971520");
    }

    #[test]
    fn failing_stream_source_is_an_error() {
        struct FailsAfterOneChunk(bool);
        impl Read for FailsAfterOneChunk {
            fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    Err(io::Error::other("disk went away"))
                } else {
                    buffer[..4].copy_from_slice(b"data");
                    Ok(4)
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "cat", "cat >/dev/null");

        let error = run(
            Command::new(&path),
            Duration::from_secs(10),
            Stdin::Reader(Box::new(FailsAfterOneChunk(false))),
        )
        .unwrap_err()
        .to_string();

        assert!(error.contains("disk went away"), "{error}");
    }

    #[test]
    fn lingering_grandchild_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        // The background sleep inherits stderr and outlives the script, like an ssh
        // ControlMaster started by `limactl shell`.
        let path = script(
            dir.path(),
            "linger",
            &format!("sleep 30 &\necho $! > '{}'\necho done", pid_file.display()),
        );

        let started = Instant::now();
        let output = run(Command::new(&path), Duration::from_secs(20), Stdin::Null).unwrap();
        let elapsed = started.elapsed();

        let grandchild: i32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(grandchild), Signal::SIGKILL);
        assert!(output.status.success());
        assert_eq!(output.stdout, b"done\n");
        assert!(
            elapsed >= DRAIN_GRACE,
            "returned after {elapsed:?}, before the grace period"
        );
        assert!(
            elapsed < DRAIN_GRACE + Duration::from_secs(5),
            "took {elapsed:?}"
        );
    }

    #[test]
    fn missing_program_is_spawn_error() {
        let mut command = Command::new("/nonexistent/limactl");
        command.arg("list");

        let error = run(command, Duration::from_secs(5), Stdin::Null).unwrap_err();

        let Error::Spawn {
            command,
            error: io_error,
            ..
        } = &error
        else {
            panic!("expected a spawn error, got {error:?}");
        };
        assert_eq!(command, "/nonexistent/limactl list");
        assert_eq!(io_error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn render_quotes_arguments() {
        let mut command = Command::new("/opt/my lima/limactl");
        command.args(["shell", "kt", "--", "sh", "-c", "echo \"it's\" && true"]);
        assert_eq!(
            render(&command),
            "'/opt/my lima/limactl' shell kt -- sh -c 'echo \"it'\\''s\" && true'"
        );
    }

    #[test]
    fn runs_in_own_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "pgid", "ps -o pgid= -p $$; echo $$");

        let output = run(Command::new(&path), Duration::from_secs(10), Stdin::Null).unwrap();

        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines().map(str::trim);
        let pgid = lines.next().unwrap();
        let pid = lines.next().unwrap();
        assert_eq!(
            pgid, pid,
            "the script is not the leader of its own process group"
        );
    }

    #[test]
    fn observer_gets_the_pid_of_the_running_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "pid", "echo $$");
        let mut observed = None;

        let output = run_observed(
            Command::new(&path),
            Duration::from_secs(10),
            Stdin::Null,
            |pid| observed = Some(pid),
            &[],
        )
        .unwrap();

        let printed: u32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        assert_eq!(observed, Some(printed));
    }
}
