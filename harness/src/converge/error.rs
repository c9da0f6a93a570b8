//! Errors of a Jetpack converge.

use std::path::PathBuf;
use std::time::Duration;

/// How to install a Jetpack binary, for the errors about a missing one.
const INSTALL_HINT: &str = "install jetporch with `cargo install jetp --locked`, or build the \
     Jetpack fork (github.com/riffcc/jetpack, binary `jetpack`), or set JETP to the binary's path";

/// A failure of [`Cluster::converge`](crate::Cluster::converge) or
/// [`Cluster::check_idempotent`](crate::Cluster::check_idempotent).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvergeError {
    /// `JETP` names a path that is not an executable file.
    #[error("JETP={} is not an executable file; {INSTALL_HINT}", path.display())]
    JetpNotExecutable {
        /// The value of `JETP`.
        path: PathBuf,
    },

    /// `JETP` is unset and neither `jetpack` nor `jetp` is on `PATH`.
    #[error(
        "no Jetpack binary found: JETP is not set and neither `jetpack` nor `jetp` is on \
         PATH ({path:?}); {INSTALL_HINT}"
    )]
    JetpNotFound {
        /// The searched `PATH`.
        path: String,
    },

    /// The playbook file does not exist or cannot be read.
    #[error("playbook {} not found: {source}", path.display())]
    PlaybookNotFound {
        /// The playbook path as given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The instance's SSH address would make jetp run tasks on the control machine.
    #[error(
        "cannot converge instance `{host}` at address `{address}`: jetp runs the tasks of a \
         host at `localhost` on this machine instead of over SSH; the address must be 127.0.0.1"
    )]
    InvalidHost {
        /// The instance name.
        host: String,
        /// The `jet_ssh_hostname` value.
        address: String,
    },

    /// Two nodes of the cluster are reached at one address other than 127.0.0.1, which jetp
    /// cannot tell apart, because it names a host after its address.
    #[error(
        "cannot converge instance `{host}`: another node of the cluster is also reached at \
         `{address}`, and jetp tells hosts apart by their address; nodes behind one address \
         must use 127.0.0.1, which has a distinct spelling for each of up to 9 nodes"
    )]
    SharedAddress {
        /// The instance name.
        host: String,
        /// The shared `jet_ssh_hostname` value.
        address: String,
    },

    /// A [`ConvergeOptions`](super::ConvergeOptions) value cannot be passed to jetp.
    #[error("invalid converge option {name}={value:?}: {reason}")]
    InvalidOption {
        /// The option's field name.
        name: &'static str,
        /// The rejected value.
        value: String,
        /// The reason jetp cannot take it.
        reason: &'static str,
    },

    /// The instance's SSH connection details could not be read from limactl.
    #[error(transparent)]
    Lima(#[from] lima_provisioner::Error),

    /// A scratch file or directory could not be written.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// The harness's action when the error occurred.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A helper program (jetp, `ssh-agent`, `ssh-add`) could not be started.
    #[error("failed to run `{command}`: {source}")]
    Spawn {
        /// The shell-quoted command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The SSH agent that provides Lima's key for jetp could not be prepared.
    #[error("failed to prepare an SSH agent for jetp: `{command}` {status}: {output}")]
    Agent {
        /// The shell-quoted command line.
        command: String,
        /// The exit status in words.
        status: String,
        /// The command's trimmed output.
        output: String,
    },

    /// jetp exited non-zero or printed a failure marker.
    #[error(
        "Jetpack converge of instance `{instance}` failed: `{command}` {status}.\n\
         Last {tail_lines} lines of its output:\n{tail}"
    )]
    Failed {
        /// The instance.
        instance: String,
        /// The shell-quoted command line.
        command: String,
        /// The exit status in words, and the failure marker when the status was 0.
        status: String,
        /// The maximum number of lines in `tail`.
        tail_lines: usize,
        /// The last lines of the output, ANSI codes removed.
        tail: String,
    },

    /// jetp ran past the converge timeout and was killed.
    #[error(
        "Jetpack converge of instance `{instance}` timed out after {after:?}: `{command}` was \
         killed; raise ConvergeOptions::timeout if the playbook needs longer.\n\
         Last {tail_lines} lines of its output:\n{tail}"
    )]
    TimedOut {
        /// The instance.
        instance: String,
        /// The shell-quoted command line.
        command: String,
        /// The timeout.
        after: Duration,
        /// The maximum number of lines in `tail`.
        tail_lines: usize,
        /// The last lines of the output, ANSI codes removed.
        tail: String,
    },

    /// A second converge changed the host, so the playbook is not idempotent.
    #[error(
        "playbook {} is not idempotent: converging instance `{instance}` again changed \
         {changed} task result(s), in these tasks: {}",
        playbook.display(),
        changed_tasks.join(", ")
    )]
    NotIdempotent {
        /// The instance.
        instance: String,
        /// The playbook.
        playbook: PathBuf,
        /// How many task results changed the host in the second run.
        changed: usize,
        /// The names of the tasks that changed it.
        changed_tasks: Vec<String>,
    },
}
