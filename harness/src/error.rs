//! The harness's error type.

use std::path::PathBuf;
use std::time::Duration;

use crate::image::ImageError;

/// A failure of the test fixture.
///
/// `Display` gives complete sentences that name the value at fault and what to do about it.
/// `Debug` prints the same text, so a test that `.expect()`s a fixture call or returns
/// `Result<(), Error>` still shows an actionable message instead of a struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A limactl operation failed; the provisioner's message carries the command and its stderr.
    #[error(transparent)]
    Lima(#[from] lima_provisioner::Error),

    /// A `K3S_HARNESS_*` variable or a builder value could not be used.
    #[error("invalid configuration: {name}={value:?}: {reason}")]
    InvalidConfig {
        /// The variable or builder method.
        name: String,
        /// The rejected value.
        value: String,
        /// The reason for the rejection and the accepted forms.
        reason: String,
    },

    /// `limactl start` failed; the instance was deleted afterwards.
    #[error(
        "failed to start Lima instance `{instance}`, and the harness has already deleted the \
         half-started VM.\n{}{log_tail}\n{diagnostics}",
        .source.to_string_after_cleanup()
    )]
    StartFailed {
        /// The instance that failed to start.
        instance: String,
        /// The limactl failure.
        #[source]
        source: Box<lima_provisioner::Error>,
        /// The last lines of the instance's serial logs, already formatted.
        log_tail: String,
        /// One sentence naming the diagnostics directory collected before the deletion, or
        /// saying why there is none.
        diagnostics: String,
    },

    /// `limactl start` succeeded, but the cluster did not become ready or could not be
    /// recorded; the instance was deleted afterwards.
    #[error(
        "failed to set up k3s in Lima instance `{instance}` after it started, and the harness \
         has already deleted the VM: {source}\n{diagnostics}"
    )]
    SetupFailed {
        /// The instance.
        instance: String,
        /// The failure: a readiness timeout, an unusable kubeconfig, an API error.
        #[source]
        source: Box<Error>,
        /// One sentence naming the diagnostics directory collected before the deletion, or
        /// saying why there is none.
        diagnostics: String,
    },

    /// A bounded wait ran out.
    #[error(
        "timed out after {waited:?} waiting for {what} on instance `{instance}`; last seen: {last}"
    )]
    Timeout {
        /// The instance being waited on.
        instance: String,
        /// The awaited condition, in words.
        what: String,
        /// How long it waited.
        waited: Duration,
        /// The last observation or error before the deadline.
        last: String,
    },

    /// The kubeconfig Lima copied from the guest could not be used.
    #[error("invalid kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The problem found in the file.
        reason: String,
    },

    /// A Kubernetes API call failed.
    #[error("Kubernetes API request failed while {action}: {source}")]
    Kube {
        /// The harness's action when the error occurred.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// An image archive could not be imported.
    #[error(transparent)]
    Image(#[from] ImageError),

    /// A command run in the guest exited non-zero.
    #[error("`{command}` exited with {status} in instance `{instance}`: {stderr}")]
    GuestCommand {
        /// The instance.
        instance: String,
        /// The shell-quoted command line, as limactl ran it.
        command: String,
        /// The exit status in words.
        status: String,
        /// The trimmed stderr tail.
        stderr: String,
    },

    /// A local file operation failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// The harness's action when the error occurred.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// No state was found for the named instance.
    #[error(
        "no k3s-harness state for instance `{instance}` under {state_dir}; \
         it was not started by k3s-harness with this K3S_HARNESS_STATE_DIR"
    )]
    UnknownInstance {
        /// The instance name that was looked up.
        instance: String,
        /// The state directory searched.
        state_dir: PathBuf,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, formatter)
    }
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }
}
