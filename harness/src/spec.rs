//! What cluster to boot: [`ClusterSpec`], its `K3S_HARNESS_*` overrides and its fingerprint.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Lima's template that boots a single-node k3s.
pub const DEFAULT_TEMPLATE: &str = "template:k3s";

/// Default for `limactl start --timeout`. Lima's own default is 10 minutes; a cold k3s boot
/// (image download excluded, which Lima does not count) fits well inside it.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Default bound on the wait for the API server, nodes, CoreDNS and the default service account
/// after `limactl start` returns. Lima's own Kubernetes test waits 5 minutes for node readiness.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Default bound on one image import, transfer and verification included.
pub const DEFAULT_IMPORT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Largest node count a spec accepts. Every node is a full VM, and agent names add three
/// characters (`-a9`) to the server's within Lima's socket path budget.
pub(crate) const MAX_NODES: u32 = 9;

/// The cluster a test requests.
///
/// Build it with the setters, then pass it to [`Cluster::start`](crate::Cluster::start) or
/// [`Cluster::shared`](crate::Cluster::shared). Every field can be overridden by an environment
/// variable when the cluster starts (the variable wins over the builder), so CI can change sizes
/// or pin a k3s version without touching the tests:
///
/// | setter | variable | unit and default |
/// |---|---|---|
/// | [`template`](Self::template) | `K3S_HARNESS_TEMPLATE` | Lima template locator, `template:k3s` |
/// | [`cpus`](Self::cpus) | `K3S_HARNESS_CPUS` | virtual CPUs, Lima's default (4) |
/// | [`memory_mib`](Self::memory_mib) | `K3S_HARNESS_MEMORY_MIB` | MiB, Lima's default (4096) |
/// | [`disk_gib`](Self::disk_gib) | `K3S_HARNESS_DISK_GIB` | GiB, Lima's default (100) |
/// | [`k3s_version`](Self::k3s_version) | `K3S_HARNESS_K3S_VERSION` | e.g. `v1.33.4+k3s1`, the k3s installer's stable channel |
/// | [`nodes`](Self::nodes) | `K3S_HARNESS_NODES` | VMs in the cluster (one server, the rest agents), 1 |
/// | [`api_port`](Self::api_port) | `K3S_HARNESS_API_PORT` | host TCP port, a free port picked at start |
/// | [`instance_name`](Self::instance_name) | `K3S_HARNESS_INSTANCE` | Lima instance name, `k3sh-<fingerprint>-<random>` |
/// | [`start_timeout`](Self::start_timeout) | `K3S_HARNESS_START_TIMEOUT` | seconds or `90s`/`10m`, 10 minutes |
/// | [`ready_timeout`](Self::ready_timeout) | `K3S_HARNESS_READY_TIMEOUT` | seconds or `90s`/`10m`, 5 minutes |
/// | [`import_timeout`](Self::import_timeout) | `K3S_HARNESS_IMPORT_TIMEOUT` | seconds or `90s`/`10m`, 10 minutes |
/// | [`allow_latest_images`](Self::allow_latest_images) | `K3S_HARNESS_ALLOW_LATEST` | `1`/`0`, off |
/// | [`destroy_policy`](Self::destroy_policy) | `K3S_HARNESS_DESTROY` | `always`, `on-success` or `never`; `always` |
/// | [`reuse`](Self::reuse) | `K3S_HARNESS_REUSE` | `1`/`0`, off |
/// | [`container_engine`](Self::container_engine) | `K3S_HARNESS_IMAGE_TOOL` | program for `save`, docker, podman or nerdctl from `PATH` |
///
/// Where the harness runs is set apart from what it boots: [`limactl`](Self::limactl),
/// [`lima_home`](Self::lima_home) and [`state_dir`](Self::state_dir) default to `LIMACTL`,
/// `LIMA_HOME` and `K3S_HARNESS_STATE_DIR`, and a value set with the builder wins over those
/// variables, so a test that points the harness at a fake `limactl` stays pointed at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    pub(crate) template: String,
    pub(crate) cpus: Option<u32>,
    pub(crate) memory_mib: Option<u64>,
    pub(crate) disk_gib: Option<u64>,
    pub(crate) k3s_version: Option<String>,
    pub(crate) nodes: u32,
    pub(crate) api_port: Option<u16>,
    pub(crate) instance_name: Option<String>,
    pub(crate) start_timeout: Duration,
    pub(crate) ready_timeout: Duration,
    pub(crate) import_timeout: Duration,
    pub(crate) allow_latest_images: bool,
    pub(crate) destroy_policy: DestroyPolicy,
    pub(crate) reuse: bool,
    pub(crate) container_engine: Option<PathBuf>,
    pub(crate) limactl: Option<PathBuf>,
    pub(crate) lima_home: Option<PathBuf>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) limactl_env: Vec<(OsString, OsString)>,
    /// Set once the `K3S_HARNESS_*` overrides were applied, so applying them again (as
    /// `Cluster::start` does) cannot undo setters called afterwards.
    pub(crate) env_applied: bool,
}

/// Checks the form of a k3s release name, `v<major>.<minor>.<patch>[-<pre>]+k3s<n>`, such as
/// `v1.33.4+k3s1` or `v1.34.0-rc1+k3s1`. The installer takes any string and fails only in the
/// guest, minutes into the boot, so `latest` or `1.33` is rejected up front.
fn is_k3s_release(version: &str) -> bool {
    let Some(rest) = version.strip_prefix('v') else {
        return false;
    };
    let Some((release, build)) = rest.split_once("+k3s") else {
        return false;
    };
    let core = release.split_once('-').map_or(release, |(core, pre)| {
        if pre.is_empty() || !pre.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
            ""
        } else {
            core
        }
    });
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers
            .iter()
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
        && !build.is_empty()
        && build.chars().all(|c| c.is_ascii_digit())
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            template: DEFAULT_TEMPLATE.to_owned(),
            cpus: None,
            memory_mib: None,
            disk_gib: None,
            k3s_version: None,
            nodes: 1,
            api_port: None,
            instance_name: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            import_timeout: DEFAULT_IMPORT_TIMEOUT,
            allow_latest_images: false,
            destroy_policy: DestroyPolicy::Always,
            reuse: false,
            container_engine: None,
            limactl: None,
            lima_home: None,
            state_dir: None,
            limactl_env: Vec::new(),
            env_applied: false,
        }
    }
}

impl ClusterSpec {
    /// Sets the Lima template locator (`template:k3s`, a file path or a URL).
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }

    /// Sets the number of virtual CPUs.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = Some(cpus);
        self
    }

    /// Sets the VM's memory in MiB.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = Some(mib);
        self
    }

    /// Sets the VM's disk size in GiB. Lima can grow a disk but never shrink it.
    pub fn disk_gib(mut self, gib: u64) -> Self {
        self.disk_gib = Some(gib);
        self
    }

    /// Pins the k3s release the guest installs, e.g. `v1.33.4+k3s1`.
    ///
    /// It is passed to the k3s installer as `INSTALL_K3S_VERSION` through the instance's `.env`.
    pub fn k3s_version(mut self, version: impl Into<String>) -> Self {
        self.k3s_version = Some(version.into());
        self
    }

    /// Sets the number of nodes: one k3s server, and `nodes - 1` agents that join it over Lima's
    /// `user-v2` network.
    ///
    /// Every node is a VM of the spec's size, booted with `limactl start`; the agents boot in
    /// parallel once the server is up. Agents need Lima 2.1 or newer, whose k3s template takes
    /// the `url` and `token` parameters. See [`Cluster::nodes`](crate::Cluster::nodes).
    pub fn nodes(mut self, nodes: u32) -> Self {
        self.nodes = nodes;
        self
    }

    /// Pins the host port that forwards to the guest's API server (6443).
    ///
    /// Without it a free port is picked when the cluster starts. Every instance needs its own
    /// port: Lima forwards guest 6443 to host 6443 for every instance by default, and a second
    /// cluster would then reach the first one's API server.
    pub fn api_port(mut self, port: u16) -> Self {
        self.api_port = Some(port);
        self
    }

    /// Sets the Lima instance name instead of a generated one.
    pub fn instance_name(mut self, name: impl Into<String>) -> Self {
        self.instance_name = Some(name.into());
        self
    }

    /// Bounds `limactl start` (passed as its `--timeout`).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Bounds the readiness wait after `limactl start` returns.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Bounds each image import.
    pub fn import_timeout(mut self, timeout: Duration) -> Self {
        self.import_timeout = timeout;
        self
    }

    /// Allows importing images tagged `:latest` or untagged.
    ///
    /// Kubernetes defaults `imagePullPolicy` to `Always` for those, so a pod that uses one
    /// ignores the imported copy unless its spec sets `IfNotPresent` or `Never`.
    pub fn allow_latest_images(mut self, allow: bool) -> Self {
        self.allow_latest_images = allow;
        self
    }

    /// Sets what happens to a [`Cluster::shared`](crate::Cluster::shared) VM when its test run
    /// ends.
    pub fn destroy_policy(mut self, policy: DestroyPolicy) -> Self {
        self.destroy_policy = policy;
        self
    }

    /// Keeps the shared VM across test runs, keyed by the spec's fingerprint alone, for fast
    /// local iteration.
    ///
    /// A later run with the same fingerprint attaches without `limactl start`; a changed spec
    /// gets a different VM and never attaches to a stale one. Reused VMs are never destroyed by
    /// the harness: delete one with `k3s-harness down NAME`.
    pub fn reuse(mut self, reuse: bool) -> Self {
        self.reuse = reuse;
        self
    }

    /// Saves images for [`Cluster::import_docker_image`](crate::Cluster::import_docker_image)
    /// with this program (called as `PROGRAM save REFERENCE`) instead of docker, podman or
    /// nerdctl from `PATH`.
    pub fn container_engine(mut self, program: impl Into<PathBuf>) -> Self {
        self.container_engine = Some(program.into());
        self
    }

    /// Runs this `limactl` binary instead of `LIMACTL` or `limactl` on `PATH`.
    pub fn limactl(mut self, program: impl Into<PathBuf>) -> Self {
        self.limactl = Some(program.into());
        self
    }

    /// Uses this Lima home instead of `LIMA_HOME` or `~/.lima`.
    pub fn lima_home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lima_home = Some(dir.into());
        self
    }

    /// Keeps the harness's per-instance files here instead of `K3S_HARNESS_STATE_DIR` or the
    /// per-user default.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Adds a variable to the environment of every `limactl` call.
    pub fn limactl_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.limactl_env.push((key.into(), value.into()));
        self
    }

    /// Applies the `K3S_HARNESS_*` overrides from the process environment.
    ///
    /// [`Cluster::start`](crate::Cluster::start) and [`Cluster::shared`](crate::Cluster::shared)
    /// call this themselves. It applies the variables once: setters called on the result win
    /// over them, which is how the `k3s-harness` command lets its flags win.
    pub fn with_env_overrides(self) -> Result<Self> {
        if self.env_applied {
            return Ok(self);
        }
        self.with_overrides_from(|name| std::env::var(name).ok())
    }

    /// Applies overrides read through `lookup`, so tests need not mutate the process
    /// environment.
    pub(crate) fn with_overrides_from(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        if let Some(value) = get("K3S_HARNESS_TEMPLATE") {
            self.template = value;
        }
        if let Some(value) = get("K3S_HARNESS_CPUS") {
            self.cpus = Some(parse_number("K3S_HARNESS_CPUS", &value)?);
        }
        if let Some(value) = get("K3S_HARNESS_MEMORY_MIB") {
            self.memory_mib = Some(parse_number("K3S_HARNESS_MEMORY_MIB", &value)?);
        }
        if let Some(value) = get("K3S_HARNESS_DISK_GIB") {
            self.disk_gib = Some(parse_number("K3S_HARNESS_DISK_GIB", &value)?);
        }
        if let Some(value) = get("K3S_HARNESS_K3S_VERSION") {
            self.k3s_version = Some(value);
        }
        if let Some(value) = get("K3S_HARNESS_NODES") {
            self.nodes = parse_number("K3S_HARNESS_NODES", &value)?;
        }
        if let Some(value) = get("K3S_HARNESS_API_PORT") {
            self.api_port = Some(parse_number("K3S_HARNESS_API_PORT", &value)?);
        }
        if let Some(value) = get("K3S_HARNESS_INSTANCE") {
            self.instance_name = Some(value);
        }
        if let Some(value) = get("K3S_HARNESS_START_TIMEOUT") {
            self.start_timeout = parse_duration("K3S_HARNESS_START_TIMEOUT", &value)?;
        }
        if let Some(value) = get("K3S_HARNESS_READY_TIMEOUT") {
            self.ready_timeout = parse_duration("K3S_HARNESS_READY_TIMEOUT", &value)?;
        }
        if let Some(value) = get("K3S_HARNESS_IMPORT_TIMEOUT") {
            self.import_timeout = parse_duration("K3S_HARNESS_IMPORT_TIMEOUT", &value)?;
        }
        if let Some(value) = get("K3S_HARNESS_ALLOW_LATEST") {
            self.allow_latest_images = parse_bool("K3S_HARNESS_ALLOW_LATEST", &value)?;
        }
        if let Some(value) = get("K3S_HARNESS_DESTROY") {
            self.destroy_policy = value
                .parse()
                .map_err(|reason: String| invalid("K3S_HARNESS_DESTROY", &value, &reason))?;
        }
        if let Some(value) = get("K3S_HARNESS_IMAGE_TOOL") {
            self.container_engine = Some(PathBuf::from(value));
        }
        if let Some(value) = get("K3S_HARNESS_REUSE") {
            self.reuse = parse_bool("K3S_HARNESS_REUSE", &value)?;
        }

        self.validate()?;
        self.env_applied = true;
        Ok(self)
    }

    /// Rejects values that would only fail later inside limactl.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.cpus == Some(0) {
            return Err(invalid("cpus", "0", "a VM needs at least 1 CPU"));
        }
        if let Some(mib) = self.memory_mib
            && mib < 512
        {
            return Err(invalid(
                "memory_mib",
                &mib.to_string(),
                "k3s needs at least 512 MiB; use 2048 or more for a usable cluster",
            ));
        }
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return Err(invalid(
                "nodes",
                &self.nodes.to_string(),
                &format!("use 1 (a single server) up to {MAX_NODES} (a server and its agents)"),
            ));
        }
        if self.disk_gib == Some(0) {
            return Err(invalid("disk_gib", "0", "use at least 10 GiB"));
        }
        if self.api_port == Some(0) {
            return Err(invalid(
                "api_port",
                "0",
                "leave the port unset to pick a free one, or give a port from 1 to 65535",
            ));
        }
        if self.api_port == Some(22) {
            return Err(invalid(
                "api_port",
                "22",
                "Lima rejects port forwards that use port 22",
            ));
        }
        if self.template.trim().is_empty() {
            return Err(invalid(
                "template",
                "",
                "use template:k3s or a template file path",
            ));
        }
        if let Some(version) = &self.k3s_version
            && !is_k3s_release(version)
        {
            return Err(invalid(
                "k3s_version",
                version,
                "expected a k3s release such as v1.33.4+k3s1",
            ));
        }
        Ok(())
    }

    /// Hashes everything that changes what the VM is (not timeouts or the instance name).
    ///
    /// Two specs with the same fingerprint boot interchangeable clusters.
    pub fn fingerprint(&self) -> String {
        #[derive(Serialize)]
        struct Identity<'a> {
            template: &'a str,
            cpus: Option<u32>,
            memory_mib: Option<u64>,
            disk_gib: Option<u64>,
            k3s_version: Option<&'a str>,
            nodes: u32,
            set: BTreeMap<&'a str, String>,
        }

        let identity = Identity {
            template: &self.template,
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            k3s_version: self.k3s_version.as_deref(),
            nodes: self.nodes,
            set: self.set_expressions_by_key(),
        };
        let canonical = serde_json::to_vec(&identity).expect("a spec always serialises");
        let digest = Sha256::digest(&canonical);
        hex::encode(&digest[..4])
    }

    /// The `--set` expressions that the spec adds besides port forwarding, keyed for hashing.
    fn set_expressions_by_key(&self) -> BTreeMap<&'static str, String> {
        let mut map = BTreeMap::new();
        if let Some(expression) = self.k3s_version_expression() {
            map.insert("k3s_version", expression);
        }
        map
    }

    /// The `--set` expression that pins the k3s release, if one is requested.
    pub(crate) fn k3s_version_expression(&self) -> Option<String> {
        self.k3s_version.as_ref().map(|version| {
            let quoted = serde_json::to_string(version).expect("a string always serialises");
            format!(".env.INSTALL_K3S_VERSION = {quoted}")
        })
    }
}

/// What happens to a shared cluster's VM when its test run ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestroyPolicy {
    /// Delete the VM.
    #[default]
    Always,
    /// Delete the VM unless a test of the run failed; a kept VM can be inspected with
    /// `limactl shell NAME` and deleted with `k3s-harness down NAME`.
    OnSuccess,
    /// Keep the VM.
    Never,
}

impl std::str::FromStr for DestroyPolicy {
    type Err = String;

    fn from_str(value: &str) -> std::result::Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(DestroyPolicy::Always),
            "on-success" | "on_success" | "onsuccess" => Ok(DestroyPolicy::OnSuccess),
            "never" => Ok(DestroyPolicy::Never),
            _ => Err("expected always, on-success or never".to_owned()),
        }
    }
}

impl std::fmt::Display for DestroyPolicy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            DestroyPolicy::Always => "always",
            DestroyPolicy::OnSuccess => "on-success",
            DestroyPolicy::Never => "never",
        })
    }
}

fn invalid(name: &str, value: &str, reason: &str) -> Error {
    Error::InvalidConfig {
        name: name.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(name, value, "expected a whole number"))
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(name, value, "expected 1 or 0 (true or false)")),
    }
}

/// Parses `90`, `90s`, `15m` or `1h` into a duration.
pub(crate) fn parse_duration(name: &str, value: &str) -> Result<Duration> {
    let trimmed = value.trim();
    let (digits, unit_seconds) = match trimmed.char_indices().last() {
        Some((at, 's')) => (&trimmed[..at], 1),
        Some((at, 'm')) => (&trimmed[..at], 60),
        Some((at, 'h')) => (&trimmed[..at], 3600),
        _ => (trimmed, 1),
    };
    let amount: u64 = digits.parse().map_err(|_| {
        invalid(
            name,
            value,
            "expected seconds or a number with s, m or h, such as 90s or 10m",
        )
    })?;
    if amount == 0 {
        return Err(invalid(name, value, "a timeout must be longer than zero"));
    }
    Ok(Duration::from_secs(amount * unit_seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn env_overrides_win_over_builder() {
        let spec = ClusterSpec::default()
            .cpus(2)
            .memory_mib(2048)
            .with_overrides_from(overrides(&[
                ("K3S_HARNESS_CPUS", "6"),
                ("K3S_HARNESS_K3S_VERSION", "v1.33.4+k3s1"),
                ("K3S_HARNESS_START_TIMEOUT", "15m"),
                ("K3S_HARNESS_ALLOW_LATEST", "true"),
                ("K3S_HARNESS_DESTROY", "on-success"),
                ("K3S_HARNESS_REUSE", "1"),
            ]))
            .unwrap();

        assert_eq!(spec.destroy_policy, DestroyPolicy::OnSuccess);
        assert!(spec.reuse);

        assert_eq!(spec.cpus, Some(6));
        assert_eq!(spec.memory_mib, Some(2048));
        assert_eq!(spec.k3s_version.as_deref(), Some("v1.33.4+k3s1"));
        assert_eq!(spec.start_timeout, Duration::from_secs(900));
        assert!(spec.allow_latest_images);
    }

    #[test]
    fn blank_override_is_ignored() {
        let spec = ClusterSpec::default()
            .cpus(2)
            .with_overrides_from(overrides(&[("K3S_HARNESS_CPUS", "  ")]))
            .unwrap();

        assert_eq!(spec.cpus, Some(2));
    }

    #[test]
    fn malformed_override_names_variable_and_value() {
        let error = ClusterSpec::default()
            .with_overrides_from(overrides(&[("K3S_HARNESS_MEMORY_MIB", "4G")]))
            .unwrap_err()
            .to_string();

        assert!(error.contains("K3S_HARNESS_MEMORY_MIB"), "{error}");
        assert!(error.contains("\"4G\""), "{error}");
        assert!(error.contains("whole number"), "{error}");
    }

    #[test]
    fn invalid_values_are_rejected() {
        let cases = [
            ClusterSpec::default().cpus(0),
            ClusterSpec::default().memory_mib(128),
            ClusterSpec::default().disk_gib(0),
            ClusterSpec::default().api_port(22),
            ClusterSpec::default().k3s_version("v1.33; rm -rf /"),
            ClusterSpec::default().template(" "),
        ];
        for spec in cases {
            assert!(spec.validate().is_err(), "{spec:?} should be rejected");
        }
    }

    #[test]
    fn k3s_release_names_are_checked() {
        for valid in ["v1.33.4+k3s1", "v1.34.0-rc1+k3s1", "v1.30.10+k3s12"] {
            assert!(is_k3s_release(valid), "{valid} is a release name");
        }
        for invalid in [
            "latest",
            "1.33.4+k3s1",
            "v1.33+k3s1",
            "v1.33.4",
            "v1.33.4+k3s",
            "v1.33.4-+k3s1",
            "v1.33.x+k3s1",
            "stable",
        ] {
            assert!(!is_k3s_release(invalid), "{invalid} is not a release name");
        }
    }

    #[test]
    fn unknown_destroy_policy_is_rejected() {
        let error = ClusterSpec::default()
            .with_overrides_from(overrides(&[("K3S_HARNESS_DESTROY", "sometimes")]))
            .unwrap_err()
            .to_string();

        assert!(error.contains("sometimes"), "{error}");
        assert!(error.contains("on-success"), "{error}");
    }

    #[test]
    fn duration_forms() {
        assert_eq!(parse_duration("X", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("X", "90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("X", "10m").unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            parse_duration("X", "1h").unwrap(),
            Duration::from_secs(3600)
        );
        assert!(parse_duration("X", "0").is_err());
        assert!(parse_duration("X", "ten").is_err());
        assert!(parse_duration("X", "5d").is_err());
    }

    #[test]
    fn fingerprint_tracks_vm_shape_only() {
        let base = ClusterSpec::default();

        assert_eq!(
            base.fingerprint(),
            base.clone()
                .start_timeout(Duration::from_secs(1))
                .instance_name("other")
                .fingerprint()
        );
        assert_ne!(base.fingerprint(), base.clone().cpus(8).fingerprint());
        assert_ne!(
            base.fingerprint(),
            base.clone().k3s_version("v1.32.1+k3s1").fingerprint()
        );
        assert_eq!(base.fingerprint().len(), 8);
    }

    #[test]
    fn k3s_version_becomes_env_expression() {
        let spec = ClusterSpec::default().k3s_version("v1.33.4+k3s1");

        assert_eq!(
            spec.k3s_version_expression().as_deref(),
            Some(".env.INSTALL_K3S_VERSION = \"v1.33.4+k3s1\"")
        );
    }
}
