//! [`ProvisionConfig`] with Jetpack's field names, and its mapping onto a [`LimaSpec`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tracing::warn;

use super::error::ConfigError;
use super::values::{
    Count, first_control_character, is_valid_param_name, parse_count, parse_duration,
    parse_networks, parse_port_forwards, parse_vm_type,
};
use crate::name::InstanceName;
use crate::spec::{
    GUEST_USER_RULE, LimaSpec, TEMPLATE_RULE, is_usable_template, is_valid_guest_user,
};

/// The `type` of a provision block for this provisioner.
pub const PROVISION_TYPE: &str = "lima";

/// The readiness deadline when `wait_timeout` is not set: 300 s, Jetpack's own default for
/// `wait_timeout`.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);

const MEMORY: Count = Count {
    meaning: "the memory in MiB (Jetpack calls it MB)",
    example: "4096",
};
const CORES: Count = Count {
    meaning: "the number of virtual CPUs",
    example: "2",
};
const DISK: Count = Count {
    meaning: "the disk size in GiB",
    example: "30",
};

/// The `provision:` block of a Jetpack host, with the field names and types of Jetpack's
/// `ProvisionConfig`. Jetpack keeps numbers as strings (`memory: "4096"`) except in the wait
/// settings.
///
/// See the [module documentation](super) for what each field means to Lima. `Debug` prints
/// the keys of `extra` but not their values, and leaves out `password` and
/// `authorized_keys`, because they can hold secrets.
#[derive(Clone, Deserialize)]
pub struct ProvisionConfig {
    /// The provisioner (`type`); must be [`PROVISION_TYPE`].
    #[serde(rename = "type")]
    pub provision_type: String,
    /// The desired state: `present` (the default), `stopped`, `absent` or `destroyed`.
    #[serde(default = "default_state")]
    pub state: String,
    /// The hypervisor host in Jetpack's inventory. Jetpack requires it; Lima ignores it.
    #[serde(default)]
    pub cluster: String,
    /// A Proxmox node. Rejected.
    pub node: Option<String>,
    /// The instance name; the inventory host name when unset.
    pub hostname: Option<String>,
    /// A static guest address. Rejected.
    pub ip: Option<String>,
    /// A Proxmox VM id. Rejected.
    pub vmid: Option<String>,
    /// Guest memory in MiB, as digits.
    pub memory: Option<String>,
    /// Number of virtual CPUs, as digits.
    pub cores: Option<String>,
    /// A Proxmox container template. Rejected in favour of the `template` key.
    pub ostemplate: Option<String>,
    /// Whether Proxmox downloads the template first. Rejected.
    pub fetch: Option<String>,
    /// A Proxmox storage. Rejected.
    pub storage: Option<String>,
    /// A Proxmox root disk size. Rejected in favour of the `disk` key.
    pub rootfs_size: Option<String>,
    /// A Proxmox network interface. Rejected in favour of the `network` key.
    pub net0: Option<String>,
    /// A Proxmox network interface. Rejected in favour of the `network` key.
    pub net1: Option<String>,
    /// A Proxmox network interface. Rejected in favour of the `network` key.
    pub net2: Option<String>,
    /// A Proxmox network interface. Rejected in favour of the `network` key.
    pub net3: Option<String>,
    /// A root password. Rejected.
    pub password: Option<String>,
    /// SSH public keys for the guest. Rejected.
    pub authorized_keys: Option<String>,
    /// The guest user name.
    pub ssh_user: Option<String>,
    /// Whether a Proxmox container is unprivileged. Rejected.
    pub unprivileged: Option<String>,
    /// Whether Proxmox starts the container after creating it. Rejected.
    pub start_on_create: Option<String>,
    /// Proxmox container features. Rejected.
    pub features: Option<String>,
    /// Whether a Proxmox container gets a TUN device. Rejected.
    pub tun: Option<String>,
    /// DNS servers for a Proxmox container. Rejected.
    pub nameserver: Option<String>,
    /// Whether Jetpack probes SSH after `ensure_exists`; should be `false` for Lima.
    pub wait_for_host: Option<bool>,
    /// Seconds for the readiness check; [`DEFAULT_WAIT_TIMEOUT`] when unset.
    pub wait_timeout: Option<u64>,
    /// First pause between Jetpack's SSH probes, in seconds. Only Jetpack's probe uses it.
    pub wait_delay: Option<u64>,
    /// `simple` or `backoff`, for Jetpack's SSH probe. Only Jetpack's probe uses it.
    pub wait_strategy: Option<String>,
    /// Maximum pause between Jetpack's SSH probes, in seconds. Only Jetpack's probe uses it.
    pub wait_max_delay: Option<u64>,
    /// Every other key of the block: Lima's own settings (see the module documentation).
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

fn default_state() -> String {
    ProvisionState::Present.as_str().to_owned()
}

impl Default for ProvisionConfig {
    /// Returns a config with `type: lima`, `state: present` and nothing else set.
    fn default() -> Self {
        Self {
            provision_type: PROVISION_TYPE.to_owned(),
            state: default_state(),
            cluster: String::new(),
            node: None,
            hostname: None,
            ip: None,
            vmid: None,
            memory: None,
            cores: None,
            ostemplate: None,
            fetch: None,
            storage: None,
            rootfs_size: None,
            net0: None,
            net1: None,
            net2: None,
            net3: None,
            password: None,
            authorized_keys: None,
            ssh_user: None,
            unprivileged: None,
            start_on_create: None,
            features: None,
            tun: None,
            nameserver: None,
            wait_for_host: None,
            wait_timeout: None,
            wait_delay: None,
            wait_strategy: None,
            wait_max_delay: None,
            extra: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for ProvisionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionConfig")
            .field("provision_type", &self.provision_type)
            .field("state", &self.state)
            .field("cluster", &self.cluster)
            .field("hostname", &self.hostname)
            .field("memory", &self.memory)
            .field("cores", &self.cores)
            .field("ssh_user", &self.ssh_user)
            .field("wait_for_host", &self.wait_for_host)
            .field("wait_timeout", &self.wait_timeout)
            .field("extra_keys", &self.extra.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The lifecycle state that Jetpack's `state` field requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisionState {
    /// The instance exists and runs.
    Present,
    /// The instance is stopped; an absent instance stays absent.
    Stopped,
    /// The instance is deleted, but only when it is not running.
    Absent,
    /// The instance is deleted, running or not (Jetpack also accepts `force-absent`).
    Destroyed,
}

impl ProvisionState {
    /// Parses a state the way Jetpack does: case-insensitive, with `force-absent` as an alias
    /// of `destroyed`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidState`] for any other value.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value.to_ascii_lowercase().as_str() {
            "present" => Ok(Self::Present),
            "stopped" => Ok(Self::Stopped),
            "absent" => Ok(Self::Absent),
            "destroyed" | "force-absent" => Ok(Self::Destroyed),
            _ => Err(ConfigError::InvalidState {
                value: value.to_owned(),
            }),
        }
    }

    /// Returns the state's name in a provision block.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Stopped => "stopped",
            Self::Absent => "absent",
            Self::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for ProvisionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of [`ProvisionConfig::plan`]: the instance to create, the desired state and the
/// readiness deadline.
#[derive(Clone, Debug)]
pub struct ProvisionPlan {
    /// The instance to create when it does not exist.
    pub spec: LimaSpec,
    /// The desired state.
    pub state: ProvisionState,
    /// The deadline for [`Provisioner::wait_ready`](crate::Provisioner::wait_ready), from
    /// `wait_timeout`.
    pub ready_timeout: Duration,
}

impl ProvisionConfig {
    /// Checks the whole config and maps it onto a [`LimaSpec`], for `ensure_exists`.
    ///
    /// `inventory_name` is the host's name in Jetpack's inventory, which becomes the instance
    /// name when `hostname` is not set. `lima_home` is the `LIMA_HOME` the instance will live
    /// in (see [`Limactl::lima_home`](crate::Limactl::lima_home)), against which the socket
    /// path budget of the name is checked. Logs a warning when `wait_for_host` is not `false`
    /// (see the module documentation).
    ///
    /// # Errors
    ///
    /// The first problem found, in this order: [`ConfigError::WrongType`],
    /// [`ConfigError::InvalidState`], [`ConfigError::UnsupportedField`],
    /// [`ConfigError::InvalidInstanceName`], then [`ConfigError::InvalidValue`],
    /// [`ConfigError::InvalidParamValue`] and [`ConfigError::UnknownKey`] for the remaining
    /// fields and the `extra` keys in alphabetical order.
    pub fn plan(
        &self,
        inventory_name: &str,
        lima_home: &Path,
    ) -> Result<ProvisionPlan, ConfigError> {
        let state = self.check_common()?;
        let name = self.instance_name(inventory_name, lima_home)?;
        let mut spec = LimaSpec::new(name);

        if let Some(memory) = &self.memory {
            spec.memory_mib = Some(parse_count("memory", memory, &MEMORY)?);
        }
        if let Some(cores) = &self.cores {
            spec.cpus = Some(parse_count("cores", cores, &CORES)?);
        }
        if let Some(user) = &self.ssh_user {
            if !is_valid_guest_user(user) {
                return Err(ConfigError::InvalidValue {
                    key: "ssh_user".to_owned(),
                    value: user.clone(),
                    problem: GUEST_USER_RULE.to_owned(),
                });
            }
            spec.ssh_user = Some(user.clone());
        }
        let ready_timeout = self.ready_timeout()?;

        for (key, value) in &self.extra {
            apply_extra(&mut spec, key, value)?;
        }

        if self.wait_for_host != Some(false) {
            warn!(
                instance = %spec.name,
                "wait_for_host is not false, so Jetpack will probe port 22 on 127.0.0.1, which \
                 is not the instance's SSH port; set `wait_for_host: false`"
            );
        }
        Ok(ProvisionPlan {
            spec,
            state,
            ready_timeout,
        })
    }

    /// Checks `type`, `state` and the fields without a Lima equivalent, and returns the
    /// instance name, for `exists`, `get_ip`, `stop` and `destroy`.
    ///
    /// Those operations need only the name, so a config whose other values have become
    /// invalid can still stop or delete its instance.
    ///
    /// # Errors
    ///
    /// [`ConfigError::WrongType`], [`ConfigError::InvalidState`],
    /// [`ConfigError::UnsupportedField`], and [`ConfigError::InvalidInstanceName`] when the
    /// name breaks Lima's rules or does not fit `lima_home`'s socket path budget.
    pub fn instance_name(
        &self,
        inventory_name: &str,
        lima_home: &Path,
    ) -> Result<InstanceName, ConfigError> {
        self.check_common()?;
        let (name, from_hostname) = match &self.hostname {
            Some(hostname) => (hostname.as_str(), true),
            None => (inventory_name, false),
        };
        InstanceName::check(name, lima_home).map_err(|problem| ConfigError::InvalidInstanceName {
            from_hostname,
            name: name.to_owned(),
            problem,
        })
    }

    /// Returns the desired state after checking `type`, `state` and the unsupported fields.
    fn check_common(&self) -> Result<ProvisionState, ConfigError> {
        if self.provision_type != PROVISION_TYPE {
            return Err(ConfigError::WrongType {
                found: self.provision_type.clone(),
            });
        }
        let state = ProvisionState::parse(&self.state)?;
        self.reject_unsupported_fields()?;
        Ok(state)
    }

    fn reject_unsupported_fields(&self) -> Result<(), ConfigError> {
        const NETWORK: &str = "attach Lima networks with the `network` key instead, for example \
                               `network: lima:user-v2`.";
        let fields: [(&'static str, &Option<String>, &'static str); 18] = [
            (
                "node",
                &self.node,
                "Lima runs instances on this machine only; remove it.",
            ),
            (
                "ip",
                &self.ip,
                "Lima assigns guest addresses itself and Jetpack connects through 127.0.0.1; \
                 remove it.",
            ),
            (
                "vmid",
                &self.vmid,
                "Lima identifies instances by name; set `hostname` instead.",
            ),
            (
                "ostemplate",
                &self.ostemplate,
                "set the Lima template with the `template` key instead, for example \
                 `template: template:k3s`.",
            ),
            (
                "fetch",
                &self.fetch,
                "Lima downloads the template's image on the first start; remove it.",
            ),
            (
                "storage",
                &self.storage,
                "Lima keeps the disk in the instance directory under LIMA_HOME; remove it.",
            ),
            (
                "rootfs_size",
                &self.rootfs_size,
                "set the disk size in GiB with the `disk` key instead, for example `disk: \"30\"`.",
            ),
            ("net0", &self.net0, NETWORK),
            ("net1", &self.net1, NETWORK),
            ("net2", &self.net2, NETWORK),
            ("net3", &self.net3, NETWORK),
            (
                "password",
                &self.password,
                "Lima disables password login and connects with its own SSH key; remove it.",
            ),
            (
                "authorized_keys",
                &self.authorized_keys,
                "Lima installs its own SSH key (`<LIMA_HOME>/_config/user`), which Jetpack \
                 uses through `jet_ssh_private_key_file`; remove it.",
            ),
            (
                "unprivileged",
                &self.unprivileged,
                "it applies to Proxmox containers only; remove it.",
            ),
            (
                "start_on_create",
                &self.start_on_create,
                "Lima always boots a new instance; remove it.",
            ),
            (
                "features",
                &self.features,
                "it applies to Proxmox containers only; remove it.",
            ),
            (
                "tun",
                &self.tun,
                "it applies to Proxmox containers only; remove it.",
            ),
            (
                "nameserver",
                &self.nameserver,
                "Lima's host resolver serves DNS to the guest; remove it, or change Lima's DNS \
                 settings with a `set` expression.",
            ),
        ];
        match fields.into_iter().find(|(_, value, _)| value.is_some()) {
            Some((field, _, fix)) => Err(ConfigError::UnsupportedField { field, fix }),
            None => Ok(()),
        }
    }

    fn ready_timeout(&self) -> Result<Duration, ConfigError> {
        if let Some(strategy) = &self.wait_strategy
            && !matches!(strategy.to_ascii_lowercase().as_str(), "simple" | "backoff")
        {
            return Err(ConfigError::InvalidValue {
                key: "wait_strategy".to_owned(),
                value: strategy.clone(),
                problem: "Jetpack knows the strategies `simple` and `backoff`, and reads any \
                          other value as `backoff`; use one of them."
                    .to_owned(),
            });
        }
        match self.wait_timeout {
            None => Ok(DEFAULT_WAIT_TIMEOUT),
            Some(0) => Err(ConfigError::InvalidValue {
                key: "wait_timeout".to_owned(),
                value: "0".to_owned(),
                problem: "it is the readiness deadline in seconds and must be above 0, such as \
                          `300`."
                    .to_owned(),
            }),
            Some(seconds) => Ok(Duration::from_secs(seconds)),
        }
    }
}

/// Applies one key of the flattened `extra` map to `spec`.
fn apply_extra(spec: &mut LimaSpec, key: &str, value: &str) -> Result<(), ConfigError> {
    let invalid = |problem: &str| ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        problem: problem.to_owned(),
    };

    if let Some(name) = key.strip_prefix("param.") {
        if !is_valid_param_name(name) {
            return Err(invalid(
                "the part after `param.` is the template parameter's name, which Lima requires \
                 to start with a letter followed by letters, digits or `_`; fix the key, for \
                 example `param.url`.",
            ));
        }
        if let Some(character) = first_control_character(value) {
            return Err(ConfigError::InvalidParamValue {
                key: key.to_owned(),
                character,
            });
        }
        spec.params.insert(name.to_owned(), value.to_owned());
        return Ok(());
    }

    match key {
        "template" => {
            if !is_usable_template(value) || value.trim() != value {
                return Err(invalid(TEMPLATE_RULE));
            }
            spec.template = value.to_owned();
        }
        "disk" => spec.disk_gib = Some(parse_count(key, value, &DISK)?),
        "vm_type" => spec.vm_type = Some(parse_vm_type(key, value)?),
        "network" => spec.networks = parse_networks(key, value)?,
        "set" => {
            if value.trim().is_empty() {
                return Err(invalid(
                    "it is empty; write a yq expression such as `.env.K3S_DEBUG = \"1\"`, or \
                     remove the key.",
                ));
            }
            spec.set.push(value.to_owned());
        }
        "port_forwards" => spec.port_forwards = parse_port_forwards(key, value)?,
        "start_timeout" => spec.start_timeout = parse_duration(key, value)?,
        _ => {
            return Err(ConfigError::UnknownKey {
                key: key.to_owned(),
                hint: unknown_key_hint(key),
            });
        }
    }
    Ok(())
}

/// Points at the key that an unknown key most likely meant; the text ends with a space.
fn unknown_key_hint(key: &str) -> &'static str {
    const KNOWN: [&str; 7] = [
        "template",
        "disk",
        "vm_type",
        "network",
        "set",
        "port_forwards",
        "start_timeout",
    ];
    let lower = key.to_ascii_lowercase();
    if KNOWN.contains(&lower.as_str()) {
        "keys are case-sensitive and lower case; "
    } else if lower.starts_with("param") {
        "template parameters are written `param.<name>`; "
    } else if lower == "timeout" {
        "the `limactl start` timeout is `start_timeout`; "
    } else {
        ""
    }
}
