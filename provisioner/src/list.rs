//! The model of `limactl list --json` output and its parser.
//!
//! Lima 2.x prints one compact JSON object per instance per line when stdout is not a terminal,
//! pretty-printed multi-line objects when it is, and one release candidate printed a single
//! array (<https://github.com/lima-vm/lima/issues/1280>). The parser therefore reads a stream
//! of JSON values and accepts objects and arrays of objects. Only `name` is required, unknown
//! keys are ignored, and `null` or a value of an unexpected type counts as absent.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// The guest path of the kubeconfig that k3s writes and Lima's k3s template copies to the host.
pub const K3S_KUBECONFIG_GUEST_PATH: &str = "/etc/rancher/k3s/k3s.yaml";

/// One instance from `limactl list --json`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// The instance name.
    pub name: String,
    /// The guest hostname, `lima-<name>` with `.` and `_` turned into `-`.
    #[serde(default, deserialize_with = "tolerant")]
    pub hostname: Option<String>,
    /// The instance status.
    #[serde(default, deserialize_with = "tolerant")]
    pub status: Option<InstanceStatus>,
    /// The absolute instance directory.
    #[serde(default, deserialize_with = "tolerant")]
    pub dir: Option<PathBuf>,
    /// The VM driver: `vz`, `qemu`, `wsl2`, `krunkit`, ...
    #[serde(default, deserialize_with = "tolerant")]
    pub vm_type: Option<String>,
    /// The guest architecture, for example `aarch64` or `x86_64`.
    #[serde(default, deserialize_with = "tolerant")]
    pub arch: Option<String>,
    /// Number of virtual CPUs.
    #[serde(default, deserialize_with = "tolerant")]
    pub cpus: Option<u32>,
    /// Guest memory in bytes.
    #[serde(default, deserialize_with = "tolerant")]
    pub memory: Option<u64>,
    /// Disk size in bytes.
    #[serde(default, deserialize_with = "tolerant")]
    pub disk: Option<u64>,
    /// The template's rendered `message` (for k3s, the `export KUBECONFIG=…` hint).
    #[serde(default, deserialize_with = "tolerant")]
    pub message: Option<String>,
    /// The configured networks (`network` in the JSON); they carry no IP addresses.
    #[serde(default, rename = "network", deserialize_with = "tolerant")]
    pub networks: Vec<serde_json::Value>,
    /// The host port that forwards to the guest's SSH server. For a stopped instance this is
    /// the stale port of the last run, read from `ssh.config`.
    #[serde(default, deserialize_with = "tolerant")]
    pub ssh_local_port: Option<u16>,
    /// The address of the SSH port forward; always `127.0.0.1` in Lima 2.x.
    #[serde(default, deserialize_with = "tolerant")]
    pub ssh_address: Option<String>,
    /// `<dir>/ssh.config`, listed even before the file exists.
    #[serde(default, deserialize_with = "tolerant")]
    pub ssh_config_file: Option<PathBuf>,
    /// PID of the host agent; absent when stopped.
    #[serde(default, rename = "hostAgentPID", deserialize_with = "tolerant")]
    pub host_agent_pid: Option<u32>,
    /// PID of the VM process; absent when stopped.
    #[serde(default, rename = "driverPID", deserialize_with = "tolerant")]
    pub driver_pid: Option<u32>,
    /// Errors Lima found while loading the instance, as raw JSON: Lima encodes Go error
    /// structs here (for example `{"Op":"open","Path":…,"Err":2}`), not strings.
    #[serde(default, deserialize_with = "tolerant")]
    pub errors: Vec<serde_json::Value>,
    /// The instance's `lima.yaml` with defaults filled in.
    #[serde(default, deserialize_with = "tolerant")]
    pub config: Option<InstanceConfig>,
    /// Whether `limactl protect` was applied, which makes `limactl delete` fail.
    #[serde(default, deserialize_with = "tolerant")]
    pub protected: Option<bool>,
    /// The Lima version that created the instance, with or without a leading `v`.
    #[serde(default, deserialize_with = "tolerant")]
    pub lima_version: Option<String>,
    /// The template parameters.
    #[serde(default, deserialize_with = "tolerant")]
    pub param: BTreeMap<String, String>,
    /// The autostart identifier, set only when launchd or systemd started the instance.
    #[serde(default, deserialize_with = "tolerant")]
    pub auto_started_identifier: Option<String>,
    /// `LIMA_HOME` as limactl resolved it (a deprecated key, still printed by Lima 2.x).
    #[serde(default, rename = "LimaHome", deserialize_with = "tolerant")]
    pub lima_home: Option<PathBuf>,
    /// The SSH private key path (a deprecated key, still printed by Lima 2.x).
    #[serde(default, rename = "IdentityFile", deserialize_with = "tolerant")]
    pub identity_file: Option<PathBuf>,
}

impl Instance {
    /// Returns the host path of the k3s kubeconfig: the `copyToHost` rule for
    /// `/etc/rancher/k3s/k3s.yaml`, else `<dir>/copied-from-guest/kubeconfig.yaml`.
    ///
    /// Returns `None` when neither the rule nor `dir` is present. The file itself exists only
    /// while the instance runs, because Lima's k3s template sets `deleteOnStop`.
    pub fn kubeconfig_path(&self) -> Option<PathBuf> {
        let from_rule = self.config.as_ref().and_then(|config| {
            config
                .copy_to_host
                .iter()
                .find(|rule| rule.guest.as_deref() == Some(K3S_KUBECONFIG_GUEST_PATH))
                .and_then(|rule| rule.host.clone())
        });
        from_rule.or_else(|| {
            self.dir
                .as_ref()
                .map(|dir| dir.join("copied-from-guest").join("kubeconfig.yaml"))
        })
    }

    /// Checks whether the status is `Running`.
    pub fn is_running(&self) -> bool {
        self.status == Some(InstanceStatus::Running)
    }

    /// Returns the guest user name from the instance config.
    pub fn guest_user(&self) -> Option<&str> {
        self.config.as_ref()?.user.as_ref()?.name.as_deref()
    }
}

/// The `status` of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceStatus {
    /// The host agent and VM processes exist; provisioning may still be under way.
    Running,
    /// No host agent runs.
    Stopped,
    /// Lima could not load the instance (missing `lima.yaml`, unresponsive host agent).
    Broken,
    /// Any other value, including `""` (unreadable `lima.yaml`) and the WSL2-only
    /// `Uninitialized` and `Installing`.
    Unknown(String),
}

impl InstanceStatus {
    /// Returns the status as Lima spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Running => "Running",
            Self::Stopped => "Stopped",
            Self::Broken => "Broken",
            Self::Unknown(other) => other,
        }
    }
}

impl From<&str> for InstanceStatus {
    fn from(value: &str) -> Self {
        match value {
            "Running" => Self::Running,
            "Stopped" => Self::Stopped,
            "Broken" => Self::Broken,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InstanceStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Self::from(text.as_str()))
    }
}

/// The parts of an instance's `lima.yaml` (as `limactl list` prints it) that this crate uses.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceConfig {
    /// The guest user.
    #[serde(default, deserialize_with = "tolerant")]
    pub user: Option<GuestUser>,
    /// Files the host agent copies from the guest once the instance is ready.
    #[serde(default, deserialize_with = "tolerant")]
    pub copy_to_host: Vec<CopyToHost>,
    /// The port forwarding rules, as raw JSON.
    #[serde(default, deserialize_with = "tolerant")]
    pub port_forwards: Vec<serde_json::Value>,
    /// The configured networks, as raw JSON.
    #[serde(default, deserialize_with = "tolerant")]
    pub networks: Vec<serde_json::Value>,
    /// The host mounts, as raw JSON.
    #[serde(default, deserialize_with = "tolerant")]
    pub mounts: Vec<serde_json::Value>,
}

/// The guest user (`config.user`). Lima uses the host user's name (or `lima`), uid and
/// `/home/<user>.guest` (Lima ≥ 2.1) or `/home/<user>.linux` (older).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GuestUser {
    /// The user name.
    #[serde(default, deserialize_with = "tolerant")]
    pub name: Option<String>,
    /// The numeric user id.
    #[serde(default, deserialize_with = "tolerant")]
    pub uid: Option<u32>,
    /// The home directory in the guest.
    #[serde(default, deserialize_with = "tolerant")]
    pub home: Option<String>,
    /// The login shell.
    #[serde(default, deserialize_with = "tolerant")]
    pub shell: Option<String>,
}

/// One `copyToHost` rule.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyToHost {
    /// The guest file.
    #[serde(default, deserialize_with = "tolerant")]
    pub guest: Option<String>,
    /// The host file, rendered to an absolute path.
    #[serde(default, deserialize_with = "tolerant")]
    pub host: Option<PathBuf>,
    /// Whether a graceful stop deletes the host copy.
    #[serde(default, deserialize_with = "tolerant")]
    pub delete_on_stop: Option<bool>,
}

/// The location and cause of a `limactl list --json` parse failure.
#[derive(Debug, thiserror::Error)]
#[error("line {line}, column {column} ({snippet:?}) {problem}.")]
pub struct ListParseError {
    /// The 1-based line where the bad value starts or where the JSON syntax error is.
    pub line: usize,
    /// The 1-based column.
    pub column: usize,
    /// The start of that line.
    pub snippet: String,
    /// The problem, for example "is not valid JSON: expected value".
    pub problem: String,
}

/// Maximum number of characters of the offending line that a `ListParseError` quotes.
const SNIPPET_CHARS: usize = 120;

/// Parses `limactl list --json` stdout: a stream of JSON objects (one per line, or
/// pretty-printed over several lines), or arrays of such objects. Empty output is no instances.
///
/// ANSI colour codes (printed when stdout is a terminal) are removed first.
///
/// # Errors
///
/// [`ListParseError`] names the line of the first value that is not JSON, not an object, or
/// has no string `name`.
pub fn parse_list_output(stdout: &[u8]) -> Result<Vec<Instance>, ListParseError> {
    let text = crate::stderr::strip_ansi(&String::from_utf8_lossy(stdout));
    let mut instances = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
    let mut offset = 0;
    loop {
        let start = offset + leading_whitespace(&text[offset..]);
        let value = match stream.next() {
            None => break,
            Some(Ok(value)) => value,
            Some(Err(error)) => {
                let line = error.line().max(1);
                return Err(ListParseError {
                    line,
                    column: error.column().max(1),
                    snippet: snippet(&text, line),
                    problem: format!("is not valid JSON: {error}"),
                });
            }
        };
        offset = stream.byte_offset();

        let line = text[..start].matches('\n').count() + 1;
        let column = start - text[..start].rfind('\n').map_or(0, |newline| newline + 1) + 1;
        let located = |problem: String| ListParseError {
            line,
            column,
            snippet: snippet(&text, line),
            problem,
        };
        match value {
            serde_json::Value::Array(elements) => {
                for (index, element) in elements.into_iter().enumerate() {
                    let instance = instance_from_value(element).map_err(|problem| {
                        located(format!("has element {index} that {problem}"))
                    })?;
                    instances.push(instance);
                }
            }
            other => instances.push(
                instance_from_value(other).map_err(|p| located(format!("is a value that {p}")))?,
            ),
        }
    }
    Ok(instances)
}

fn instance_from_value(value: serde_json::Value) -> Result<Instance, String> {
    if !value.is_object() {
        return Err(format!("is not a JSON object but {}", kind_of(&value)));
    }
    serde_json::from_value(value).map_err(|error| format!("is not a Lima instance: {error}"))
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn leading_whitespace(text: &str) -> usize {
    text.len() - text.trim_start().len()
}

fn snippet(text: &str, line: usize) -> String {
    let line_text = text.lines().nth(line - 1).unwrap_or("").trim();
    match line_text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &line_text[..cut]),
        None => line_text.to_owned(),
    }
}

/// Deserializes an optional field, reading `null` (`"errors": null`) and a value of another
/// type than expected as the type's default. A field whose type changes in a later Lima
/// release then reads as absent instead of hiding the whole instance, which the harness must
/// still find to delete it.
fn tolerant<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    if value.is_null() {
        return Ok(T::default());
    }
    Ok(serde_json::from_value(value).unwrap_or_else(|error| {
        tracing::debug!(%error, "ignoring a `limactl list` field of an unexpected type");
        T::default()
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn sample(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    #[test]
    fn sample_2_2_0_ndjson() {
        let instances = parse_list_output(&sample("limactl-list-json-2.2.0.ndjson")).unwrap();

        assert_eq!(instances.len(), 2);
        let default = &instances[0];
        assert_eq!(default.name, "default");
        assert_eq!(default.status, Some(InstanceStatus::Running));
        assert_eq!(default.vm_type.as_deref(), Some("vz"));
        assert_eq!(default.cpus, Some(4));
        assert_eq!(default.memory, Some(4_294_967_296));
        assert_eq!(default.disk, Some(107_374_182_400));
        assert_eq!(default.ssh_local_port, None);

        let captain = &instances[1];
        assert_eq!(captain.status, Some(InstanceStatus::Stopped));
        assert_eq!(captain.ssh_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            captain.ssh_config_file.as_deref(),
            Some(Path::new("/private/tmp/clsample/captain/ssh.config"))
        );
        assert_eq!(
            captain
                .param
                .get("internal_netplanOptional")
                .map(String::as_str),
            Some("true")
        );
        assert_eq!(
            captain.lima_home.as_deref(),
            Some(Path::new("/private/tmp/clsample"))
        );
        assert_eq!(
            captain.identity_file.as_deref(),
            Some(Path::new("/private/tmp/clsample/_config/user"))
        );
        assert_eq!(
            captain.kubeconfig_path().as_deref(),
            Some(Path::new(
                "/private/tmp/clsample/captain/copied-from-guest/kubeconfig.yaml"
            ))
        );
    }

    #[test]
    fn sample_2_2_1_qemu_mounts() {
        let instances =
            parse_list_output(&sample("limactl-list-json-2.2.1-qemu-mounts.json")).unwrap();

        assert_eq!(instances.len(), 1);
        let probe = &instances[0];
        assert_eq!(probe.name, "probe");
        assert_eq!(probe.vm_type.as_deref(), Some("qemu"));
        assert_eq!(probe.arch.as_deref(), Some("x86_64"));
        let config = probe.config.as_ref().unwrap();
        assert_eq!(config.mounts.len(), 1);
        assert!(config.user.is_none());
        assert_eq!(probe.lima_version.as_deref(), Some("2.2.1"));
    }

    #[test]
    fn sample_table_output_rejected() {
        let error = parse_list_output(&sample("limactl-list-table.txt")).unwrap_err();

        assert_eq!(error.line, 1);
        assert!(error.snippet.starts_with("NAME"), "{error}");
        assert!(error.problem.starts_with("is not valid JSON"), "{error}");
    }

    /// Two instances as Lima 2.2 prints them through a pipe, with deprecated capitalised keys
    /// and a shortened `config`.
    const NDJSON_WITH_UNKNOWN_KEYS: &str = r#"{"name":"kt-a","hostname":"lima-kt-a","status":"Running","dir":"/LIMA_HOME/kt-a","vmType":"vz","arch":"aarch64","cpus":4,"memory":4294967296,"disk":107374182400,"message":"To run `kubectl` on the host …","sshLocalPort":51022,"hostAgentPID":101,"driverPID":102,"config":{"minimumLimaVersion":"2.0.0","mounts":[],"containerd":{"system":false,"user":false}},"sshAddress":"127.0.0.1","protected":false,"limaVersion":"2.2.0","HostOS":"darwin","HostArch":"aarch64","LimaHome":"/LIMA_HOME","IdentityFile":"/LIMA_HOME/_config/user"}
{"name":"kt-b","hostname":"lima-kt-b","status":"Stopped","dir":"/LIMA_HOME/kt-b","vmType":"vz","arch":"aarch64","protected":false,"limaVersion":"2.2.0","HostOS":"darwin","HostArch":"aarch64","LimaHome":"/LIMA_HOME","IdentityFile":"/LIMA_HOME/_config/user"}
"#;

    #[test]
    fn ndjson_with_unknown_keys() {
        let instances = parse_list_output(NDJSON_WITH_UNKNOWN_KEYS.as_bytes()).unwrap();

        assert_eq!(instances.len(), 2);
        let a = &instances[0];
        assert_eq!(a.name, "kt-a");
        assert_eq!(a.hostname.as_deref(), Some("lima-kt-a"));
        assert_eq!(a.ssh_local_port, Some(51022));
        assert_eq!(a.host_agent_pid, Some(101));
        assert_eq!(a.driver_pid, Some(102));
        assert_eq!(a.protected, Some(false));
        assert!(
            a.message
                .as_deref()
                .unwrap()
                .starts_with("To run `kubectl`")
        );
        assert!(a.is_running());
        assert_eq!(instances[1].name, "kt-b");
        assert_eq!(instances[1].status, Some(InstanceStatus::Stopped));
        assert_eq!(instances[1].host_agent_pid, None);
    }

    #[test]
    fn single_array() {
        let input = r#"[{"name":"kt-a","status":"Running","dir":"/LIMA_HOME/kt-a"},{"name":"kt-b","status":"Stopped","dir":"/LIMA_HOME/kt-b"}]"#;
        let instances = parse_list_output(input.as_bytes()).unwrap();

        let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["kt-a", "kt-b"]);
        assert_eq!(
            instances[1].dir.as_deref(),
            Some(Path::new("/LIMA_HOME/kt-b"))
        );
    }

    #[test]
    fn pretty_multi_line_with_colours() {
        let input = "{\n  \x1b[34;1m\"name\"\x1b[0m: \x1b[32m\"kt-a\"\x1b[0m,\n  \"status\": \"Running\",\n  \"config\": {\n    \"user\": {\"name\": \"dev\", \"uid\": 501, \"home\": \"/home/dev.guest\", \"shell\": \"/bin/bash\"}\n  }\n}\n{\n  \"name\": \"kt-b\"\n}\n";
        let instances = parse_list_output(input.as_bytes()).unwrap();

        assert_eq!(instances.len(), 2);
        assert_eq!(instances[0].guest_user(), Some("dev"));
        let user = instances[0].config.as_ref().unwrap().user.as_ref().unwrap();
        assert_eq!(user.uid, Some(501));
        assert_eq!(user.home.as_deref(), Some("/home/dev.guest"));
        assert_eq!(user.shell.as_deref(), Some("/bin/bash"));
        assert_eq!(instances[1].name, "kt-b");
        assert_eq!(instances[1].status, None);
    }

    #[test]
    fn empty_output_is_no_instances() {
        assert!(parse_list_output(b"").unwrap().is_empty());
        assert!(parse_list_output(b"\n  \n").unwrap().is_empty());
    }

    #[test]
    fn garbage_line_names_line() {
        let input = "{\"name\":\"kt-a\"}\n{\"name\":\"kt-b\"}\nlevel=fatal oops\n";
        let error = parse_list_output(input.as_bytes()).unwrap_err();

        assert_eq!(error.line, 3);
        assert_eq!(error.snippet, "level=fatal oops");
        assert!(
            error
                .to_string()
                .starts_with("line 3, column 1 (\"level=fatal oops\") is not valid JSON: "),
            "{error}"
        );
    }

    #[test]
    fn missing_name_names_line() {
        let input = "{\"name\":\"kt-a\"}\n{\"status\":\"Running\"}\n";
        let error = parse_list_output(input.as_bytes()).unwrap_err();

        assert_eq!(error.line, 2);
        assert_eq!(error.column, 1);
        assert!(error.problem.contains("missing field `name`"), "{error}");
    }

    #[test]
    fn non_object_value_rejected() {
        let error = parse_list_output(b"{\"name\":\"a\"}\n  42\n").unwrap_err();

        assert_eq!(error.line, 2);
        assert_eq!(error.column, 3);
        assert_eq!(
            error.problem,
            "is a value that is not a JSON object but a number"
        );
    }

    #[test]
    fn array_element_without_name_rejected() {
        let error = parse_list_output(br#"[{"name":"a"},{"dir":"/x"}]"#).unwrap_err();
        assert!(
            error
                .problem
                .starts_with("has element 1 that is not a Lima instance"),
            "{error}"
        );
    }

    #[test]
    fn status_values() {
        let cases = [
            ("Running", InstanceStatus::Running),
            ("Stopped", InstanceStatus::Stopped),
            ("Broken", InstanceStatus::Broken),
            ("", InstanceStatus::Unknown(String::new())),
            ("Installing", InstanceStatus::Unknown("Installing".into())),
            (
                "Uninitialized",
                InstanceStatus::Unknown("Uninitialized".into()),
            ),
        ];
        for (text, expected) in cases {
            let line = format!(r#"{{"name":"x","status":"{text}"}}"#);
            let instances = parse_list_output(line.as_bytes()).unwrap();
            assert_eq!(instances[0].status.as_ref(), Some(&expected), "{text:?}");
            assert_eq!(expected.as_str(), text);
        }
    }

    #[test]
    fn nulls_and_raw_errors() {
        let input = r#"{"name":"probe","status":"Broken","errors":[{"Op":"open","Path":"/h/probe/lima.yaml","Err":2}],"param":null,"config":null,"cpus":null}"#;
        let instances = parse_list_output(input.as_bytes()).unwrap();
        let probe = &instances[0];

        assert_eq!(probe.status, Some(InstanceStatus::Broken));
        assert_eq!(probe.errors.len(), 1);
        assert_eq!(probe.errors[0]["Op"], "open");
        assert!(probe.param.is_empty());
        assert!(probe.config.is_none());
        assert_eq!(probe.cpus, None);
    }

    #[test]
    fn field_of_unexpected_type_reads_as_absent() {
        let input = r#"{"name":"drift","status":"Running","cpus":"four","sshLocalPort":"60022","memory":4294967296,"config":{"user":{"name":7}}}"#;
        let instances = parse_list_output(input.as_bytes()).unwrap();
        let drift = &instances[0];

        assert_eq!(drift.name, "drift");
        assert_eq!(drift.status, Some(InstanceStatus::Running));
        assert_eq!(drift.cpus, None);
        assert_eq!(drift.ssh_local_port, None);
        assert_eq!(drift.memory, Some(4294967296));
        assert_eq!(drift.guest_user(), None);
    }

    #[test]
    fn kubeconfig_path_prefers_copy_to_host_rule() {
        let input = r#"{"name":"k","dir":"/h/k","config":{"copyToHost":[{"guest":"/etc/other","host":"/h/k/other"},{"guest":"/etc/rancher/k3s/k3s.yaml","host":"/h/k/custom/kubeconfig.yaml","deleteOnStop":true}]}}"#;
        let instance = &parse_list_output(input.as_bytes()).unwrap()[0];

        assert_eq!(
            instance.kubeconfig_path().as_deref(),
            Some(Path::new("/h/k/custom/kubeconfig.yaml"))
        );
        let rules = &instance.config.as_ref().unwrap().copy_to_host;
        assert_eq!(rules[1].delete_on_stop, Some(true));
        assert_eq!(rules[0].delete_on_stop, None);
    }

    #[test]
    fn kubeconfig_path_absent_without_dir() {
        let instance = &parse_list_output(br#"{"name":"k"}"#).unwrap()[0];
        assert_eq!(instance.kubeconfig_path(), None);
    }
}
