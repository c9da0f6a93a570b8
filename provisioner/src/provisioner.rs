//! The five operations of Jetpack's provisioner interface, plus the inventory host variables
//! and a readiness wait, on top of [`Limactl`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::limactl::Limactl;
use crate::list::InstanceStatus;
use crate::name::InstanceName;
use crate::shell::ShellOptions;
use crate::spec::LimaSpec;

/// The first pause between two readiness attempts; it doubles after each failure.
const READY_INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// Maximum pause between two readiness attempts.
const READY_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Deadline of one readiness attempt. A healthy `limactl shell NAME -- true` reuses the host
/// agent's SSH ControlMaster and returns within a second; a hung SSH handshake should not use
/// up the whole wait.
const READY_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest deadline of a readiness attempt, so that a nearly used-up wait still makes a
/// real attempt.
const READY_MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// The address Jetpack must connect to. It has to be an IP address: Jetpack runs tasks for a
/// host named `localhost` on the control machine instead of over SSH.
pub const SSH_HOSTNAME: &str = "127.0.0.1";

/// Lima VM lifecycle shaped like Jetpack's provisioner trait.
#[derive(Clone, Debug)]
pub struct Provisioner {
    limactl: Limactl,
}

/// The action [`Provisioner::ensure_exists`] took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The instance did not exist and was created and booted.
    Created,
    /// The instance was stopped and was booted.
    Started,
    /// The instance was already running; nothing was done.
    AlreadyRunning,
}

/// The host address and port of an instance's SSH server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshEndpoint {
    /// The address (`sshAddress`, always `127.0.0.1` in Lima 2.x).
    pub address: String,
    /// The forwarded port (`sshLocalPort`), random at each start.
    pub port: u16,
}

/// The connection variables for a Jetpack inventory's `host_vars` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostVars {
    /// Always `127.0.0.1`; see [`SSH_HOSTNAME`].
    pub ssh_hostname: String,
    /// The forwarded SSH port.
    pub ssh_port: u16,
    /// The guest user (`config.user.name`).
    pub ssh_user: String,
    /// Lima's SSH private key, `<LIMA_HOME>/_config/user`.
    pub ssh_private_key_file: PathBuf,
}

impl HostVars {
    /// Returns the variables under Jetpack's names: `jet_ssh_hostname`, `jet_ssh_port`,
    /// `jet_ssh_user`, `jet_ssh_private_key_file`.
    pub fn to_map(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("jet_ssh_hostname", self.ssh_hostname.clone()),
            ("jet_ssh_port", self.ssh_port.to_string()),
            ("jet_ssh_user", self.ssh_user.clone()),
            (
                "jet_ssh_private_key_file",
                self.ssh_private_key_file.to_string_lossy().into_owned(),
            ),
        ])
    }
}

impl Provisioner {
    /// Creates a provisioner that drives `limactl`.
    pub fn new(limactl: Limactl) -> Self {
        Self { limactl }
    }

    /// Returns the limactl client.
    pub fn limactl(&self) -> &Limactl {
        &self.limactl
    }

    /// Checks whether the instance exists, in any status.
    ///
    /// # Errors
    ///
    /// The errors of [`Limactl::instance`].
    pub fn exists(&self, name: &InstanceName) -> Result<bool> {
        Ok(self.limactl.instance(name)?.is_some())
    }

    /// Makes the instance exist and run: creates it from `spec` when absent, boots it when
    /// stopped, and does nothing when it runs.
    ///
    /// A stopped instance keeps its original configuration; `spec` is used only to create.
    /// `limactl start NAME` is never run for an unknown NAME, because Lima would then create
    /// a default Ubuntu instance.
    ///
    /// # Errors
    ///
    /// [`Error::UnusableInstance`] for a `Broken` instance or one whose status Lima cannot
    /// read, and the errors of [`Limactl::create_and_start`]. After [`Error::StartFailed`] the
    /// VM usually keeps running: call [`Provisioner::destroy`] unless it is kept for debugging.
    pub fn ensure_exists(&self, spec: &LimaSpec) -> Result<EnsureOutcome> {
        let Some(instance) = self.limactl.instance(&spec.name)? else {
            self.limactl.create_and_start(spec)?;
            return Ok(EnsureOutcome::Created);
        };
        match instance.status {
            Some(InstanceStatus::Running) => {
                debug!(instance = %spec.name, "instance already runs");
                Ok(EnsureOutcome::AlreadyRunning)
            }
            Some(InstanceStatus::Stopped) => {
                self.limactl.start_known(&spec.name, spec.start_timeout)?;
                Ok(EnsureOutcome::Started)
            }
            other => Err(Error::UnusableInstance {
                name: spec.name.to_string(),
                status: other.map(|status| status.to_string()).unwrap_or_default(),
                errors: instance
                    .errors
                    .iter()
                    .map(|error| error.to_string())
                    .collect(),
            }),
        }
    }

    /// Returns the host address and port of the instance's SSH server, or `None` when the instance
    /// does not exist, is not running, or has no SSH port yet.
    ///
    /// This is not a host-routable VM address: reaching the VM directly needs a `lima:shared`
    /// or `lima:user-v2` network and `limactl shell NAME ip -j addr`.
    ///
    /// # Errors
    ///
    /// The errors of [`Limactl::instance`].
    pub fn get_ip(&self, name: &InstanceName) -> Result<Option<SshEndpoint>> {
        let Some(instance) = self.limactl.instance(name)? else {
            return Ok(None);
        };
        if !instance.is_running() {
            return Ok(None);
        }
        let Some(port) = instance.ssh_local_port else {
            debug!(instance = %name, "running instance has no SSH port yet");
            return Ok(None);
        };
        let address = instance
            .ssh_address
            .unwrap_or_else(|| SSH_HOSTNAME.to_owned());
        Ok(Some(SshEndpoint { address, port }))
    }

    /// Stops the instance gracefully, and forcibly when that fails. An instance that is
    /// already stopped is left alone.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`], and the error of the forced stop when both fail.
    pub fn stop(&self, name: &InstanceName) -> Result<()> {
        let Some(instance) = self.limactl.instance(name)? else {
            return Err(Error::InstanceNotFound {
                name: name.to_string(),
                lima_home: self.limactl.lima_home().to_path_buf(),
            });
        };
        if instance.status == Some(InstanceStatus::Stopped) {
            debug!(instance = %name, "instance is already stopped");
            return Ok(());
        }

        match self.limactl.stop(name, false) {
            Ok(()) => Ok(()),
            Err(error @ Error::RunningAsRoot) => Err(error),
            Err(error) => {
                warn!(instance = %name, %error, "graceful stop failed; stopping forcibly");
                self.limactl.stop(name, true)
            }
        }
    }

    /// Deletes the instance, stopping it forcibly first; an absent instance is not an error.
    ///
    /// # Errors
    ///
    /// The errors of [`Limactl::delete`], for example for a protected instance.
    pub fn destroy(&self, name: &InstanceName) -> Result<()> {
        self.limactl.delete(name)
    }

    /// Returns the Jetpack inventory variables for the running instance.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`], [`Error::InstanceNotRunning`], and
    /// [`Error::MissingInstanceField`] when `limactl list` prints no SSH port or guest user.
    pub fn host_vars(&self, name: &InstanceName) -> Result<HostVars> {
        let Some(instance) = self.limactl.instance(name)? else {
            return Err(Error::InstanceNotFound {
                name: name.to_string(),
                lima_home: self.limactl.lima_home().to_path_buf(),
            });
        };
        if !instance.is_running() {
            return Err(Error::InstanceNotRunning {
                name: name.to_string(),
                status: instance
                    .status
                    .map(|status| status.to_string())
                    .unwrap_or_default(),
            });
        }
        let ssh_port = instance.ssh_local_port.ok_or(Error::MissingInstanceField {
            name: name.to_string(),
            field: "sshLocalPort",
            purpose: "the SSH port",
        })?;
        let ssh_user = instance.guest_user().ok_or(Error::MissingInstanceField {
            name: name.to_string(),
            field: "config.user.name",
            purpose: "the SSH user",
        })?;
        Ok(HostVars {
            ssh_hostname: SSH_HOSTNAME.to_owned(),
            ssh_port,
            ssh_user: ssh_user.to_owned(),
            ssh_private_key_file: self.limactl.ssh_key_path(),
        })
    }

    /// Waits until `limactl shell NAME -- true` succeeds, retrying with a backoff that starts
    /// at 250 ms and doubles up to 5 s.
    ///
    /// This is the readiness check instead of a TCP probe of port 22, because Lima forwards
    /// SSH to a random host port. At least one attempt is made, and the last one may end up to
    /// 1 s after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::WaitTimedOut`] with the last failure, [`Error::InstanceNotFound`] as soon as
    /// limactl reports that the instance does not exist, and errors that a retry cannot fix
    /// ([`Error::RunningAsRoot`], [`Error::Spawn`], [`Error::LimaHomeUnknown`], [`Error::Io`]).
    pub fn wait_ready(&self, name: &InstanceName, timeout: Duration) -> Result<()> {
        const PROBE: [&str; 1] = ["true"];
        let started = Instant::now();
        let mut backoff = READY_INITIAL_BACKOFF;
        let mut attempts = 0u32;
        let last_failure = loop {
            attempts += 1;
            let remaining = timeout.saturating_sub(started.elapsed());
            let options = ShellOptions::with_timeout(
                remaining.clamp(READY_MIN_ATTEMPT_TIMEOUT, READY_ATTEMPT_TIMEOUT),
            );

            let failure = match self.limactl.shell(name, &PROBE, &options) {
                Ok(output) if output.success() => {
                    info!(instance = %name, attempts, elapsed_ms = started.elapsed().as_millis() as u64, "instance accepts shell commands");
                    return Ok(());
                }
                Ok(output) => {
                    let error = output.check().expect_err("a failed command is an error");
                    if reports_missing_instance(&error) {
                        return Err(Error::InstanceNotFound {
                            name: name.to_string(),
                            lima_home: self.limactl.lima_home().to_path_buf(),
                        });
                    }
                    error
                }
                Err(
                    error @ (Error::RunningAsRoot
                    | Error::Spawn { .. }
                    | Error::LimaHomeUnknown
                    | Error::Io { .. }),
                ) => return Err(error),
                Err(error) => error,
            };
            debug!(instance = %name, attempts, error = %failure, "instance not ready yet");

            let remaining = timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break failure;
            }
            std::thread::sleep(backoff.min(remaining));
            backoff = (backoff * 2).min(READY_MAX_BACKOFF);
        };

        let command = self.limactl.render_shell_command(name, &PROBE, None);
        Err(Error::WaitTimedOut {
            what: format!(
                "the Lima instance {:?} to run `{command}` successfully ({attempts} attempts)",
                name.as_str()
            ),
            after: started.elapsed(),
            last_failure: Some(last_failure.to_string()),
        })
    }
}

/// Checks whether limactl's fatal message reports that the instance does not exist, for example
/// ``instance "kt" does not exist, run `limactl create kt` to create a new instance``.
fn reports_missing_instance(error: &Error) -> bool {
    match error {
        Error::CommandFailed(failure) => failure
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains("does not exist")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_vars_map_uses_jetpack_names() {
        let vars = HostVars {
            ssh_hostname: SSH_HOSTNAME.to_owned(),
            ssh_port: 51022,
            ssh_user: "dev".to_owned(),
            ssh_private_key_file: PathBuf::from("/tmp/lima/_config/user"),
        };
        let map = vars.to_map();

        assert_eq!(map.len(), 4);
        assert_eq!(map["jet_ssh_hostname"], "127.0.0.1");
        assert_eq!(map["jet_ssh_port"], "51022");
        assert_eq!(map["jet_ssh_user"], "dev");
        assert_eq!(map["jet_ssh_private_key_file"], "/tmp/lima/_config/user");
    }
}
