//! Options and results of `limactl shell`.

use std::borrow::Cow;
use std::process::ExitStatus;
use std::time::Duration;

use crate::error::{CommandFailure, Result};

/// Deadline of a `limactl shell` call when the caller does not choose one.
pub const DEFAULT_SHELL_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How to run one command in the guest.
#[derive(Clone, Debug)]
pub struct ShellOptions {
    /// The guest working directory (`--workdir`). Without it the command starts in the guest
    /// user's home, because Lima's k3s template mounts no host directories.
    pub workdir: Option<String>,
    /// The deadline, after which limactl and its process group are killed.
    pub timeout: Duration,
    /// Bytes written to the command's stdin; stdin is null when `None`.
    pub stdin: Option<Vec<u8>>,
}

impl ShellOptions {
    /// Options with the given deadline, no working directory and null stdin.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            workdir: None,
            timeout,
            stdin: None,
        }
    }
}

impl Default for ShellOptions {
    fn default() -> Self {
        Self::with_timeout(DEFAULT_SHELL_TIMEOUT)
    }
}

/// Exit status and captured output of a `limactl shell` call.
///
/// A non-zero exit is not an error here; [`ShellOutput::check`] turns it into one. limactl
/// passes the remote exit code through, uses 255 for SSH failures, and exits 1 with a
/// `level=fatal` line for its own errors (instance missing or stopped).
#[derive(Debug)]
pub struct ShellOutput {
    /// The exit status of limactl.
    pub status: ExitStatus,
    /// Everything the command printed on stdout.
    pub stdout: Vec<u8>,
    /// Everything the command and limactl printed on stderr.
    pub stderr: Vec<u8>,
    pub(crate) command: String,
}

impl ShellOutput {
    /// Returns the `limactl shell` command line, shell-quoted.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Checks whether the command exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout as text, with invalid UTF-8 replaced.
    pub fn stdout_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Returns `self` when the command exited 0.
    ///
    /// # Errors
    ///
    /// [`Error::CommandFailed`](crate::Error::CommandFailed) with the command, exit status
    /// and output tails, or [`Error::RunningAsRoot`](crate::Error::RunningAsRoot) when limactl
    /// rejected the root user.
    pub fn check(self) -> Result<Self> {
        if self.status.success() {
            return Ok(self);
        }
        Err(crate::limactl::failure_error(CommandFailure::new(
            self.command,
            self.status,
            &self.stdout,
            &self.stderr,
        )))
    }
}
