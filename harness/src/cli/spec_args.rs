//! Flags that set [`ClusterSpec`] fields, shared by the subcommands that boot or import.
//!
//! Each flag wins over its `K3S_HARNESS_*` variable (or `LIMACTL`, `LIMA_HOME`): the spec is
//! built from the environment first, and the flags are applied to the result.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;
use crate::spec::{ClusterSpec, DestroyPolicy, parse_duration};

/// What to boot and where: the VM's shape, the boot's bounds, and the Lima installation.
#[derive(Debug, clap::Args)]
pub(super) struct BootArgs {
    /// Lima instance name [default: `k3sh-FINGERPRINT-RANDOM`] [env: K3S_HARNESS_INSTANCE]
    #[arg(long)]
    name: Option<String>,
    /// Lima template locator: `template:NAME`, a file path or a URL [default: template:k3s]
    /// [env: K3S_HARNESS_TEMPLATE]
    #[arg(long)]
    template: Option<String>,
    /// Virtual CPUs [default: Lima's, 4] [env: K3S_HARNESS_CPUS]
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory in MiB [default: Lima's, 4096] [env: K3S_HARNESS_MEMORY_MIB]
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<u64>,
    /// Disk size in GiB [default: Lima's, 100] [env: K3S_HARNESS_DISK_GIB]
    #[arg(long, value_name = "GIB")]
    disk_gib: Option<u64>,
    /// k3s release to install, such as v1.33.4+k3s1 [default: the installer's stable channel]
    /// [env: K3S_HARNESS_K3S_VERSION]
    #[arg(long, value_name = "VERSION")]
    k3s_version: Option<String>,
    /// Nodes in the cluster: one k3s server, the rest agents on Lima's user-v2 network, 1 to 9
    /// [default: 1] [env: K3S_HARNESS_NODES]
    #[arg(long, value_name = "COUNT")]
    nodes: Option<u32>,
    /// Host TCP port forwarded to the API server [default: a free port]
    /// [env: K3S_HARNESS_API_PORT]
    #[arg(long, value_name = "PORT")]
    api_port: Option<u16>,
    /// Bound on `limactl start`: seconds, or a number with s, m or h [default: 10m]
    /// [env: K3S_HARNESS_START_TIMEOUT]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    start_timeout: Option<Duration>,
    /// Bound on the readiness wait after start: seconds, or a number with s, m or h
    /// [default: 5m] [env: K3S_HARNESS_READY_TIMEOUT]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    ready_timeout: Option<Duration>,
    /// The limactl binary [default: limactl on PATH] [env: LIMACTL]
    #[arg(long, value_name = "PATH")]
    limactl: Option<PathBuf>,
    /// Lima's home directory, where the instances live [default: ~/.lima] [env: LIMA_HOME]
    #[arg(long, value_name = "DIR")]
    lima_home: Option<PathBuf>,
}

/// How images are imported into the cluster.
#[derive(Debug, clap::Args)]
pub(super) struct ImageArgs {
    /// Bound on each image import, transfer and verification included: seconds, or a number
    /// with s, m or h [default: 10m] [env: K3S_HARNESS_IMPORT_TIMEOUT]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    import_timeout: Option<Duration>,
    /// Allow images tagged `:latest` or untagged, which Kubernetes pulls again unless the pod
    /// sets imagePullPolicy; `--allow-latest-images=false` turns it off [default: false]
    /// [env: K3S_HARNESS_ALLOW_LATEST]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    allow_latest_images: Option<bool>,
    /// Program that saves container engine images, called as `PROGRAM save REFERENCE`
    /// [default: docker, podman or nerdctl, the first on PATH] [env: K3S_HARNESS_IMAGE_TOOL]
    #[arg(long, value_name = "PROGRAM")]
    container_engine: Option<PathBuf>,
}

/// What happens to the run's shared cluster after the run.
#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    /// What happens to the VM when the test run ends: always (delete it), on-success (keep it
    /// when a test failed) or never (keep it) [default: always] [env: K3S_HARNESS_DESTROY]
    #[arg(long, value_name = "POLICY")]
    destroy: Option<DestroyPolicy>,
    /// Keep one VM per spec across test runs, for fast local iteration; `--reuse=false` turns
    /// it off [default: false] [env: K3S_HARNESS_REUSE]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    reuse: Option<bool>,
}

pub(super) fn duration_arg(value: &str) -> std::result::Result<Duration, String> {
    parse_duration("duration", value).map_err(|error| error.to_string())
}

/// Returns the spec from the `K3S_HARNESS_*` variables, `--state-dir` applied; the caller
/// applies its flags on top.
pub(super) fn spec_from_env(state_dir: Option<&Path>) -> Result<ClusterSpec> {
    let mut spec = ClusterSpec::default().with_env_overrides()?;
    if let Some(dir) = state_dir {
        spec = spec.state_dir(dir);
    }
    Ok(spec)
}

impl BootArgs {
    /// Applies the flags that were given to `spec`.
    pub(super) fn apply(&self, mut spec: ClusterSpec) -> ClusterSpec {
        if let Some(name) = &self.name {
            spec = spec.instance_name(name);
        }
        if let Some(template) = &self.template {
            spec = spec.template(template);
        }
        if let Some(cpus) = self.cpus {
            spec = spec.cpus(cpus);
        }
        if let Some(mib) = self.memory_mib {
            spec = spec.memory_mib(mib);
        }
        if let Some(gib) = self.disk_gib {
            spec = spec.disk_gib(gib);
        }
        if let Some(version) = &self.k3s_version {
            spec = spec.k3s_version(version);
        }
        if let Some(nodes) = self.nodes {
            spec = spec.nodes(nodes);
        }
        if let Some(port) = self.api_port {
            spec = spec.api_port(port);
        }
        if let Some(timeout) = self.start_timeout {
            spec = spec.start_timeout(timeout);
        }
        if let Some(timeout) = self.ready_timeout {
            spec = spec.ready_timeout(timeout);
        }
        if let Some(program) = &self.limactl {
            spec = spec.limactl(program);
        }
        if let Some(dir) = &self.lima_home {
            spec = spec.lima_home(dir);
        }
        spec
    }

    /// Returns the variables that give a test process's spec the values of the flags that were
    /// given, so it has the booted cluster's fingerprint and Lima installation and can attach.
    ///
    /// `--name` is left out, because `K3S_HARNESS_INSTANCE` names the booted instance anyway,
    /// and so is `--api-port`, because a test that boots a cluster of its own would then
    /// request the port the shared cluster holds.
    pub(super) fn env_exports(&self) -> Vec<(&'static str, OsString)> {
        let mut exports = Vec::new();
        let mut add = |key, value: Option<String>| {
            if let Some(value) = value {
                exports.push((key, OsString::from(value)));
            }
        };
        add("K3S_HARNESS_TEMPLATE", self.template.clone());
        add("K3S_HARNESS_CPUS", self.cpus.map(|cpus| cpus.to_string()));
        add(
            "K3S_HARNESS_MEMORY_MIB",
            self.memory_mib.map(|mib| mib.to_string()),
        );
        add(
            "K3S_HARNESS_DISK_GIB",
            self.disk_gib.map(|gib| gib.to_string()),
        );
        add("K3S_HARNESS_K3S_VERSION", self.k3s_version.clone());
        add(
            "K3S_HARNESS_NODES",
            self.nodes.map(|nodes| nodes.to_string()),
        );
        add("K3S_HARNESS_START_TIMEOUT", self.start_timeout.map(seconds));
        add("K3S_HARNESS_READY_TIMEOUT", self.ready_timeout.map(seconds));
        for (key, path) in [("LIMACTL", &self.limactl), ("LIMA_HOME", &self.lima_home)] {
            if let Some(path) = path {
                exports.push((key, path.as_os_str().to_owned()));
            }
        }
        exports
    }
}

impl ImageArgs {
    /// Applies the flags that were given to `spec`.
    pub(super) fn apply(&self, mut spec: ClusterSpec) -> ClusterSpec {
        if let Some(timeout) = self.import_timeout {
            spec = spec.import_timeout(timeout);
        }
        if let Some(allow) = self.allow_latest_images {
            spec = spec.allow_latest_images(allow);
        }
        if let Some(program) = &self.container_engine {
            spec = spec.container_engine(program);
        }
        spec
    }

    /// Returns the variables that carry the flags that were given to the tests; see
    /// [`BootArgs::env_exports`].
    pub(super) fn env_exports(&self) -> Vec<(&'static str, OsString)> {
        let mut exports = Vec::new();
        if let Some(timeout) = self.import_timeout {
            exports.push(("K3S_HARNESS_IMPORT_TIMEOUT", seconds(timeout).into()));
        }
        if let Some(allow) = self.allow_latest_images {
            exports.push(("K3S_HARNESS_ALLOW_LATEST", bit(allow).into()));
        }
        if let Some(program) = &self.container_engine {
            exports.push(("K3S_HARNESS_IMAGE_TOOL", program.as_os_str().to_owned()));
        }
        exports
    }
}

impl RunArgs {
    /// Applies the flags that were given to `spec`.
    pub(super) fn apply(&self, mut spec: ClusterSpec) -> ClusterSpec {
        if let Some(policy) = self.destroy {
            spec = spec.destroy_policy(policy);
        }
        if let Some(reuse) = self.reuse {
            spec = spec.reuse(reuse);
        }
        spec
    }

    /// Returns the variables that carry the flags that were given to the tests; see
    /// [`BootArgs::env_exports`].
    pub(super) fn env_exports(&self) -> Vec<(&'static str, OsString)> {
        let mut exports = Vec::new();
        if let Some(policy) = self.destroy {
            exports.push(("K3S_HARNESS_DESTROY", policy.to_string().into()));
        }
        if let Some(reuse) = self.reuse {
            exports.push(("K3S_HARNESS_REUSE", bit(reuse).into()));
        }
        exports
    }
}

fn seconds(duration: Duration) -> String {
    duration.as_secs().to_string()
}

fn bit(value: bool) -> &'static str {
    if value { "1" } else { "0" }
}
