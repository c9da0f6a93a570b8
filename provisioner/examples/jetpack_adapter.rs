//! A Jetpack `lima` provisioner on top of lima-provisioner, run as a command-line program.
//!
//! Jetpack's `Provisioner` trait (`src/provisioners/mod.rs` in
//! <https://github.com/riffcc/jetpack>) has five methods that each take the host's provision
//! config, its inventory name and the inventory, and return `Result<_, String>`. This example
//! declares a local trait with the same shapes, implements it by delegating to
//! [`Provisioner`], and uses an inventory directory on disk in place of Jetpack's inventory.
//! A real adapter inside Jetpack converts Jetpack's `ProvisionConfig` field by field into
//! [`ProvisionConfig`] and updates the in-memory inventory instead of the file.
//!
//! ```text
//! cargo run -p lima-provisioner --example jetpack_adapter -- ACTION INVENTORY_DIR HOST
//! ```
//!
//! `ACTION` is `exists`, `ensure_exists`, `get_ip`, `stop`, `destroy`, or `apply`, which
//! dispatches on the config's `state` as Jetpack does before it calls a provisioner. The
//! config is the `provision:` mapping in `INVENTORY_DIR/host_vars/HOST`, where Jetpack keeps
//! it too. `ensure_exists` adds the connection variables (`jet_ssh_hostname`, `jet_ssh_port`,
//! `jet_ssh_user`, `jet_ssh_private_key_file`) to that file, and `destroy` removes them.
//! `LIMACTL` and `LIMA_HOME` choose limactl and the Lima directory; `RUST_LOG` sets the log
//! level. The result goes to stdout; an error goes to stderr with exit status 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use lima_provisioner::jetpack::{ProvisionConfig, ProvisionState};
use lima_provisioner::{
    EnsureOutcome, Error, HostVars, InstanceName, InstanceStatus, Limactl, Provisioner,
};
use serde_json::{Map, Value};

/// The key of the provision block in a `host_vars` file.
const PROVISION_KEY: &str = "provision";

/// The connection variables that `ensure_exists` writes and `destroy` removes.
const CONNECTION_VARS: [&str; 4] = [
    "jet_ssh_hostname",
    "jet_ssh_port",
    "jet_ssh_user",
    "jet_ssh_private_key_file",
];

/// The results of Jetpack's `ProvisionResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProvisionResult {
    /// The host already existed; nothing was created.
    AlreadyExists,
    /// The host was created.
    Created,
    /// The host was destroyed.
    Destroyed,
    /// The host was stopped.
    Stopped,
}

/// The shapes of Jetpack's `Provisioner` methods, with this crate's config type.
trait JetpackProvisioner {
    fn exists(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<bool, String>;

    fn ensure_exists(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<ProvisionResult, String>;

    fn get_ip(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<Option<String>, String>;

    fn destroy(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<(), String>;

    fn stop(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<ProvisionResult, String>;
}

/// The stand-in for Jetpack's inventory: a directory with `host_vars/<host>` YAML files.
///
/// The connection variables are edited as lines at the end of the file, so that the user's
/// comments and formatting of the rest, the `provision:` block included, stay as they are.
struct Inventory {
    dir: PathBuf,
}

impl Inventory {
    fn host_vars_path(&self, host: &str) -> Result<PathBuf, String> {
        if host.is_empty() || host == "." || host == ".." || host.contains('/') {
            return Err(format!(
                "The inventory host name {host:?} cannot be a file name in host_vars; use a name \
                 without `/`."
            ));
        }
        Ok(self.dir.join("host_vars").join(host))
    }

    /// Reads the text of the host's variables file; a missing file is empty.
    fn read_text(&self, path: &Path) -> Result<String, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(error) => Err(format!("Failed to read {}: {error}.", path.display())),
        }
    }

    /// Parses the text of a variables file as a YAML mapping; empty text is an empty mapping.
    fn parse(path: &Path, text: &str) -> Result<Map<String, Value>, String> {
        if text.trim().is_empty() {
            return Ok(Map::new());
        }
        serde_saphyr::from_str(text).map_err(|error| {
            format!(
                "{} is not a YAML mapping of variables: {error}",
                path.display()
            )
        })
    }

    /// Reads the `provision:` block of the host.
    fn provision_config(&self, host: &str) -> Result<ProvisionConfig, String> {
        let path = self.host_vars_path(host)?;
        let vars = Self::parse(&path, &self.read_text(&path)?)?;
        let block = vars.get(PROVISION_KEY).cloned().ok_or_else(|| {
            format!(
                "{} has no `{PROVISION_KEY}:` block; add one with `type: lima`.",
                path.display()
            )
        })?;
        serde_json::from_value(block).map_err(|error| {
            format!(
                "The `{PROVISION_KEY}:` block in {} is invalid: {error}.",
                path.display()
            )
        })
    }

    /// Sets the connection variables of the host, keeping the rest of its file.
    fn set_connection_vars(&mut self, host: &str, vars: &HostVars) -> Result<(), String> {
        let path = self.host_vars_path(host)?;
        let mut text = without_connection_vars(&self.read_text(&path)?);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        // Jetpack reads the port as an integer; the strings are quoted so that YAML never
        // reads them as numbers or booleans.
        text.push_str(&format!(
            "jet_ssh_hostname: {}\njet_ssh_port: {}\njet_ssh_user: {}\n\
             jet_ssh_private_key_file: {}\n",
            quote(&vars.ssh_hostname),
            vars.ssh_port,
            quote(&vars.ssh_user),
            quote(&vars.ssh_private_key_file.to_string_lossy()),
        ));

        let parsed = Self::parse(&path, &text)?;
        if parsed.get("jet_ssh_port") != Some(&Value::from(vars.ssh_port)) {
            return Err(format!(
                "Appending the connection variables to {} does not give a mapping that contains \
                 them; write the file as a block mapping of `key: value` lines.",
                path.display()
            ));
        }
        write_atomically(&path, &text)
    }

    /// Removes the connection variables of the host, keeping the rest of its file.
    fn remove_connection_vars(&mut self, host: &str) -> Result<(), String> {
        let path = self.host_vars_path(host)?;
        let text = self.read_text(&path)?;
        let kept = without_connection_vars(&text);
        if kept == text {
            return Ok(());
        }
        write_atomically(&path, &kept)
    }
}

/// Drops the top-level lines of the connection variables, which are single lines because
/// [`Inventory::set_connection_vars`] writes them so.
fn without_connection_vars(text: &str) -> String {
    text.lines()
        .filter(|line| {
            !CONNECTION_VARS.iter().any(|key| {
                line.strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(':'))
            })
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Renders `value` as a YAML double-quoted scalar; JSON string escapes are valid there.
fn quote(value: &str) -> String {
    Value::String(value.to_owned()).to_string()
}

/// Replaces `path` through a temporary file and a rename, so that a reader never sees half a
/// file.
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| format!("Failed to write {}: {error}.", path.display()))
}

/// The Lima provisioner: every method delegates to [`Provisioner`].
struct LimaProvisioner {
    provisioner: Provisioner,
}

impl LimaProvisioner {
    fn instance_name(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
    ) -> Result<InstanceName, String> {
        config
            .instance_name(inventory_name, self.provisioner.limactl().lima_home())
            .map_err(|error| error.to_string())
    }

    fn instance_status(&self, name: &InstanceName) -> Result<Option<InstanceStatus>, String> {
        let instance = self
            .provisioner
            .limactl()
            .instance(name)
            .map_err(|error| error.to_string())?;
        // Lima lists an instance without a status when it cannot read its `lima.yaml`.
        Ok(instance.map(|instance| {
            instance
                .status
                .unwrap_or_else(|| InstanceStatus::Unknown(String::new()))
        }))
    }
}

impl JetpackProvisioner for LimaProvisioner {
    fn exists(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        _inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<bool, String> {
        let name = self.instance_name(config, inventory_name)?;
        self.provisioner
            .exists(&name)
            .map_err(|error| error.to_string())
    }

    /// Creates or boots the instance, waits until `limactl shell NAME -- true` works, and
    /// writes the connection variables.
    fn ensure_exists(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<ProvisionResult, String> {
        let plan = config
            .plan(inventory_name, self.provisioner.limactl().lima_home())
            .map_err(|error| error.to_string())?;
        let name = plan.spec.name.clone();
        let existed = self
            .provisioner
            .exists(&name)
            .map_err(|error| error.to_string())?;

        let outcome = match self.provisioner.ensure_exists(&plan.spec) {
            Ok(outcome) => outcome,
            Err(error) if !existed && leaves_vm_behind(&error) => {
                let cleanup = match self.provisioner.destroy(&name) {
                    Ok(()) => "The adapter has deleted the instance.".to_owned(),
                    Err(delete_error) => {
                        format!("Deleting the instance failed too: {delete_error}")
                    }
                };
                return Err(format!("{error} {cleanup}"));
            }
            Err(error) => return Err(error.to_string()),
        };

        self.provisioner
            .wait_ready(&name, plan.ready_timeout)
            .map_err(|error| error.to_string())?;
        let vars = self
            .provisioner
            .host_vars(&name)
            .map_err(|error| error.to_string())?;
        inventory
            .write()
            .map_err(|_| "The inventory lock is poisoned.".to_owned())?
            .set_connection_vars(inventory_name, &vars)?;

        Ok(match outcome {
            EnsureOutcome::Created => ProvisionResult::Created,
            // Jetpack has no result for "booted a stopped host"; its Proxmox provisioners
            // report an existing host as `AlreadyExists` too.
            EnsureOutcome::Started | EnsureOutcome::AlreadyRunning => {
                ProvisionResult::AlreadyExists
            }
        })
    }

    /// Returns 127.0.0.1 for a running instance. Jetpack's generic SSH wait probes port 22
    /// there, which is not the instance's SSH port; see the `jetpack` module documentation.
    fn get_ip(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        _inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<Option<String>, String> {
        let name = self.instance_name(config, inventory_name)?;
        let endpoint = self
            .provisioner
            .get_ip(&name)
            .map_err(|error| error.to_string())?;
        Ok(endpoint.map(|endpoint| endpoint.address))
    }

    /// Deletes the instance and its connection variables. With `state: absent` a running
    /// instance is rejected, as Jetpack's `refuse_destroy_if_running` does; `destroyed`
    /// deletes it anyway.
    fn destroy(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<(), String> {
        let name = self.instance_name(config, inventory_name)?;
        let state = ProvisionState::parse(&config.state).map_err(|error| error.to_string())?;
        let status = self.instance_status(&name)?;
        if state == ProvisionState::Absent && status == Some(InstanceStatus::Running) {
            return Err(format!(
                "The Lima instance {:?} is running, and `state: absent` deletes only a stopped \
                 instance; set `state: stopped` first, or `state: destroyed` to delete it anyway.",
                name.as_str()
            ));
        }

        self.provisioner
            .destroy(&name)
            .map_err(|error| error.to_string())?;
        inventory
            .write()
            .map_err(|_| "The inventory lock is poisoned.".to_owned())?
            .remove_connection_vars(inventory_name)
    }

    /// Stops a running instance; an absent or stopped one is left alone, as in Jetpack.
    fn stop(
        &self,
        config: &ProvisionConfig,
        inventory_name: &str,
        _inventory: &Arc<RwLock<Inventory>>,
    ) -> Result<ProvisionResult, String> {
        let name = self.instance_name(config, inventory_name)?;
        match self.instance_status(&name)? {
            None | Some(InstanceStatus::Stopped) => Ok(ProvisionResult::AlreadyExists),
            Some(_) => {
                self.provisioner
                    .stop(&name)
                    .map_err(|error| error.to_string())?;
                Ok(ProvisionResult::Stopped)
            }
        }
    }
}

/// Whether a failed create may have left a VM that the caller should delete.
fn leaves_vm_behind(error: &Error) -> bool {
    match error {
        Error::StartFailed { kind, .. } => kind.leaves_vm_behind(),
        Error::TimedOut(_) => true,
        _ => false,
    }
}

/// Runs one action and renders its result for stdout.
fn run(
    action: &str,
    provisioner: &LimaProvisioner,
    inventory: &Arc<RwLock<Inventory>>,
    host: &str,
) -> Result<String, String> {
    let config = inventory
        .read()
        .map_err(|_| "The inventory lock is poisoned.".to_owned())?
        .provision_config(host)?;

    match action {
        "exists" => provisioner
            .exists(&config, host, inventory)
            .map(|exists| exists.to_string()),
        "ensure_exists" => provisioner
            .ensure_exists(&config, host, inventory)
            .map(|result| format!("{result:?}")),
        "get_ip" => provisioner
            .get_ip(&config, host, inventory)
            .map(|ip| ip.unwrap_or_else(|| "none".to_owned())),
        "stop" => provisioner
            .stop(&config, host, inventory)
            .map(|result| format!("{result:?}")),
        "destroy" => provisioner
            .destroy(&config, host, inventory)
            .map(|()| format!("{:?}", ProvisionResult::Destroyed)),
        "apply" => {
            let state = ProvisionState::parse(&config.state).map_err(|error| error.to_string())?;
            let result = match state {
                ProvisionState::Present => provisioner.ensure_exists(&config, host, inventory)?,
                ProvisionState::Stopped => {
                    provisioner.stop(&config, host, inventory)?;
                    ProvisionResult::Stopped
                }
                ProvisionState::Absent | ProvisionState::Destroyed => {
                    provisioner.destroy(&config, host, inventory)?;
                    ProvisionResult::Destroyed
                }
            };
            Ok(format!("{result:?}"))
        }
        other => Err(format!(
            "The action {other:?} is unknown; use exists, ensure_exists, get_ip, stop, destroy \
             or apply."
        )),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let [action, inventory_dir, host] = args.as_slice() else {
        eprintln!(
            "usage: jetpack_adapter exists|ensure_exists|get_ip|stop|destroy|apply \
             INVENTORY_DIR HOST"
        );
        return ExitCode::from(2);
    };

    let result = Limactl::from_env()
        .and_then(|limactl| limactl.version().map(|_| limactl))
        .map_err(|error| error.to_string())
        .and_then(|limactl| {
            let provisioner = LimaProvisioner {
                provisioner: Provisioner::new(limactl),
            };
            let inventory = Arc::new(RwLock::new(Inventory {
                dir: Path::new(inventory_dir).to_path_buf(),
            }));
            run(action, &provisioner, &inventory, host)
        });

    match result {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
