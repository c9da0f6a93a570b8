//! [`Cluster`]: one k3s VM booted through limactl, and its lifetime.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lima_provisioner::{InstanceName, LimaSpec, Limactl, PortForward, Provisioner, ShellOutput};
use tokio::time::Instant;

use crate::booting::BootingMarker;
use crate::converge::{self, ConvergeError, ConvergeOptions, ConvergeReport};
use crate::diagnostics::Trigger;
use crate::error::{Error, Result};
use crate::namespace::TestNamespace;
use crate::nodes::{Node, NodeRole};
use crate::progress::{self, HostAgentLogWatch, Phase};
use crate::run::ProcessId;
use crate::spec::ClusterSpec;
use crate::state::{ClusterRecord, StateDir};
use crate::{diagnostics, image, kubeconfig, nodes, readiness, reaper, shared};

/// Prefix of every instance name the harness generates, so its VMs are recognisable in
/// `limactl list`.
pub const INSTANCE_PREFIX: &str = "k3sh-";

/// The host agent's log in the instance directory, which shows the boot's phases.
const HOST_AGENT_LOG: &str = "ha.stderr.log";

/// A k3s cluster in a Lima VM.
///
/// Dropping a `Cluster` deletes its VM (a blocking `limactl delete -f`), unless
/// [`detach`](Self::detach) was called. Prefer [`shutdown`](Self::shutdown) in async code: it
/// reports failures instead of logging them.
///
/// The cluster keeps no connection and no runtime handle, so one value can serve tests that run
/// on different Tokio runtimes, and [`client`](Self::client) builds a fresh client each call.
#[derive(Debug)]
pub struct Cluster {
    name: InstanceName,
    /// The agents of a multi-node cluster, in node order; `name` is the server.
    agents: Vec<InstanceName>,
    provisioner: Provisioner,
    state: StateDir,
    kubeconfig: PathBuf,
    api_port: u16,
    platform: &'static str,
    spec: ClusterSpec,
    destroy_on_drop: bool,
}

impl Cluster {
    /// Boots a cluster that the caller owns, and waits until it is ready.
    ///
    /// The spec's `K3S_HARNESS_*` overrides are applied first. On any failure after
    /// `limactl start` was called, the instance is deleted before the error is returned, and a
    /// failed start carries the tail of the host agent's and the serial console's logs. Before
    /// the deletion, diagnostics are collected into the instance's state directory (see
    /// [`dump_diagnostics`](Self::dump_diagnostics)), and the error names their directory,
    /// which outlives the instance.
    pub async fn start(spec: ClusterSpec) -> Result<Cluster> {
        let spec = spec.with_env_overrides()?;
        let provisioner = Provisioner::new(limactl_for(&spec)?);
        let state = state_dir_for(&spec)?;
        let name = match &spec.instance_name {
            Some(name) => name.clone(),
            None => generate_instance_name(&spec),
        };
        let name = InstanceName::new(name, provisioner.limactl().lima_home())?;

        let owner = BootOwner {
            owner: ProcessId::current(),
            run_key: None,
            start_reaper: false,
        };
        // A state directory that already contains a cluster's files belongs to another cluster of
        // the same name, which a failed start must leave alone. Diagnostics left by an earlier
        // failed start do not count.
        let state_existed = state.holds_cluster_files(name.as_str());
        match Cluster::boot(spec, name.clone(), provisioner, state.clone(), owner).await {
            Ok(mut cluster) => {
                cluster.destroy_on_drop = true;
                Ok(cluster)
            }
            Err(error) => {
                if state_existed {
                    return Err(error);
                }
                if let Err(cleanup) = state.remove_instance_dir(name.as_str()) {
                    tracing::error!(instance = %name, error = %cleanup, "failed to remove the state directory");
                }
                Err(error)
            }
        }
    }

    /// Boots instance `name` and writes its record; the VM is deleted again when any step fails.
    ///
    /// The state directory is left in place (with its lock file), because the shared path holds
    /// its lock while booting. The returned cluster is not destroyed on drop.
    pub(crate) async fn boot(
        spec: ClusterSpec,
        name: InstanceName,
        provisioner: Provisioner,
        state: StateDir,
        owner: BootOwner,
    ) -> Result<Cluster> {
        progress::enter(name.as_str(), Phase::Create, None);
        let lima_spec = {
            let provisioner_ref = &provisioner;
            let spec_ref = &spec;
            let name_ref = &name;
            blocking(move || prepare(provisioner_ref, spec_ref, name_ref)).await?
        };
        let api_port = lima_spec.port_forwards[0]
            .host_port
            .expect("the pinned API forward names its host port");
        let agent_template = lima_spec.clone();

        let agents = nodes::agent_names(&name, spec.nodes, provisioner.limactl().lima_home())?;
        state.create_instance_dir(name.as_str())?;
        let mut cluster = Cluster {
            kubeconfig: state.kubeconfig_path(name.as_str()),
            name,
            agents,
            provisioner,
            state,
            api_port,
            platform: "linux/amd64",
            spec,
            destroy_on_drop: false,
        };

        let mut booting_record = cluster.record(BootOwner {
            owner: owner.owner,
            run_key: owner.run_key.clone(),
            start_reaper: false,
        });
        booting_record.ready = false;
        cluster.state.write_record(&booting_record)?;
        // The reaper starts before the boot: if the whole run is interrupted while Lima boots,
        // the VM that Lima keeps booting must still be deleted.
        if owner.start_reaper {
            reaper::spawn(&cluster.state.instance_dir(cluster.name.as_str()))?;
        }

        tracing::info!(instance = %cluster.name, api_port, "starting k3s in a Lima VM");
        let dir = cluster.state.instance_dir(cluster.name.as_str());
        let marker = BootingMarker::for_this_process();
        let _booting = marker.write(&dir)?;
        let boot = {
            let provisioner = &cluster.provisioner;
            let dir = &dir;
            let host_agent_log = cluster.instance_dir().join(HOST_AGENT_LOG);
            let name = cluster.name.as_str();
            blocking(move || {
                let _watch = HostAgentLogWatch::start(name, host_agent_log);
                provisioner
                    .limactl()
                    .create_and_start_observed(&lima_spec, |pid| {
                        let marker = BootingMarker {
                            limactl_start: ProcessId::of(pid),
                            ..marker
                        };
                        if let Err(error) = marker.replace(dir) {
                            tracing::warn!(%error, "failed to record the pid of `limactl start`");
                        }
                    })
            })
            .await
        };
        match boot {
            Ok(()) => {}
            // Lima ran and left a VM behind (or may have): delete it, then report with the logs.
            Err(
                source @ (lima_provisioner::Error::StartFailed { .. }
                | lima_provisioner::Error::TimedOut(_)),
            ) if leaves_vm_behind(&source) => {
                let log_tail = diagnostics::serial_log_tail(&cluster.instance_dir());
                let diagnostics = if killed_by_signal(&source) {
                    "No diagnostics were collected: `limactl start` was killed by a signal, so \
                     another process (an interrupted `k3s-harness up`, for one) is deleting the \
                     instance."
                        .to_owned()
                } else {
                    cluster.collect_diagnostics(Trigger::StartFailed).await
                };
                cluster.delete_vm_quietly().await;
                return Err(Error::StartFailed {
                    instance: cluster.name.to_string(),
                    source: Box::new(source),
                    log_tail,
                    diagnostics,
                });
            }
            // Everything else (a preflight check, a name another process took meanwhile) left
            // no VM of ours, so nothing is deleted: an existing instance belongs to someone else.
            Err(source) => {
                let _ = cluster.state.remove_record(cluster.name.as_str());
                return Err(source.into());
            }
        }

        let agents_booted = if cluster.agents.is_empty() {
            Ok(())
        } else {
            cluster.boot_agents(&agent_template, &dir).await
        };
        let finished = match agents_booted {
            Ok(()) => cluster.finish_start().await,
            Err(error) => Err(error),
        };
        let recorded = match finished {
            Ok(()) => cluster.state.write_record(&cluster.record(owner)),
            Err(error) => Err(error),
        };
        match recorded {
            Ok(()) => {
                tracing::info!(instance = %cluster.name, kubeconfig = %cluster.kubeconfig.display(), "cluster ready");
                Ok(cluster)
            }
            Err(error) => {
                let diagnostics = cluster.collect_diagnostics(Trigger::StartFailed).await;
                cluster.delete_vm_quietly().await;
                let _ = cluster.state.remove_record(cluster.name.as_str());
                Err(Error::SetupFailed {
                    instance: cluster.name.to_string(),
                    source: Box::new(error),
                    diagnostics,
                })
            }
        }
    }

    /// Rebuilds the handle of a running cluster from its record, without any limactl call.
    pub(crate) fn from_record(
        record: &ClusterRecord,
        spec: ClusterSpec,
        provisioner: Provisioner,
        state: StateDir,
        name: InstanceName,
    ) -> Cluster {
        let agents = record
            .agents
            .iter()
            .filter_map(|agent| InstanceName::new(agent, provisioner.limactl().lima_home()).ok())
            .collect();
        Cluster {
            kubeconfig: record.kubeconfig.clone(),
            name,
            agents,
            provisioner,
            state,
            api_port: record.api_port,
            platform: known_platform(&record.platform),
            spec,
            destroy_on_drop: false,
        }
    }

    /// The record that lets other processes attach to this cluster.
    fn record(&self, owner: BootOwner) -> ClusterRecord {
        let limactl = self.provisioner.limactl();
        ClusterRecord {
            instance: self.name.to_string(),
            limactl: limactl.program().to_owned(),
            lima_home: limactl.lima_home().to_owned(),
            limactl_env: self
                .spec
                .limactl_env
                .iter()
                .map(|(key, value)| {
                    (
                        key.to_string_lossy().into_owned(),
                        value.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
            api_port: self.api_port,
            kubeconfig: self.kubeconfig.clone(),
            fingerprint: self.spec.fingerprint(),
            platform: self.platform.to_owned(),
            owner: owner.owner,
            run_key: owner.run_key,
            destroy_policy: self.spec.destroy_policy,
            reuse: self.spec.reuse,
            kept: false,
            ready: true,
            agents: self.agents.iter().map(ToString::to_string).collect(),
        }
    }

    /// Returns the cluster shared by every test of this test run that passes an equivalent
    /// spec, booting it on first use.
    ///
    /// A test run is a `cargo nextest run` (every test is its own process there), a `cargo test`
    /// invocation, or a test binary run on its own. The first process to ask boots the VM; the
    /// others wait on a file lock and attach to it. A detached reaper deletes the VM once the
    /// run is over (after the runner exits, even by SIGKILL, and every test process has
    /// finished), following the spec's [`DestroyPolicy`](crate::DestroyPolicy). Specs with
    /// different fingerprints get different VMs.
    ///
    /// When `K3S_HARNESS_INSTANCE` is set (by `k3s-harness nextest-setup`), the call attaches to
    /// that instance instead, and fails if its spec differs.
    pub async fn shared(spec: ClusterSpec) -> Result<&'static Cluster> {
        shared::shared(spec).await
    }

    /// Reads the server's join token and boots the agents in parallel from the server's Lima
    /// spec. `dir` is the state directory whose booting marker records their starts.
    async fn boot_agents(&self, server_spec: &LimaSpec, dir: &Path) -> Result<()> {
        let token = nodes::read_token(&self.provisioner, &self.name).await?;
        let url = nodes::server_url(&self.name);
        let specs: Vec<LimaSpec> = self
            .agents
            .iter()
            .map(|agent| nodes::agent_spec(server_spec, agent.clone(), &url, &token))
            .collect();
        let marker = BootingMarker::read(dir).unwrap_or_else(BootingMarker::for_this_process);
        let provisioner = &self.provisioner;
        blocking(move || nodes::boot_agents(provisioner, specs, marker, dir)).await
    }

    /// Returns every node of the cluster: the server first, then the agents in order.
    pub fn nodes(&self) -> Vec<Node<'_>> {
        std::iter::once(Node::new(self, &self.name, NodeRole::Server, 0))
            .chain(
                self.agents
                    .iter()
                    .enumerate()
                    .map(|(index, agent)| Node::new(self, agent, NodeRole::Agent, index + 1)),
            )
            .collect()
    }

    /// Returns node `index` (0 is the server), or `None` past the last agent.
    pub fn node(&self, index: usize) -> Option<Node<'_>> {
        self.nodes().into_iter().nth(index)
    }

    /// Waits for the kubeconfig, rewrites it, and waits for readiness.
    async fn finish_start(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.spec.ready_timeout;

        let instance = {
            let provisioner = &self.provisioner;
            let name = &self.name;
            blocking(move || provisioner.limactl().instance(name)).await?
        };
        let instance = instance.ok_or_else(|| Error::Timeout {
            instance: self.name.to_string(),
            what: "the instance to be listed after `limactl start`".to_owned(),
            waited: Duration::ZERO,
            last: "`limactl list` does not show it".to_owned(),
        })?;
        if let Some(platform) = instance.arch.as_deref().and_then(image::guest_platform) {
            self.platform = platform;
        }
        let guest_kubeconfig = instance.kubeconfig_path().unwrap_or_else(|| {
            self.instance_dir()
                .join("copied-from-guest/kubeconfig.yaml")
        });

        progress::enter(self.name.as_str(), Phase::Kubeconfig, None);
        readiness::poll(
            self.name.as_str(),
            "Lima to copy the kubeconfig out of the guest",
            deadline,
            self.spec.ready_timeout,
            || {
                let path = guest_kubeconfig.clone();
                async move {
                    match std::fs::metadata(&path) {
                        Ok(metadata) if metadata.len() > 0 => Ok(()),
                        Ok(_) => Err(format!("{} is empty", path.display())),
                        Err(error) => Err(format!("{}: {error}", path.display())),
                    }
                }
            },
        )
        .await?;
        kubeconfig::rewrite_file(
            &guest_kubeconfig,
            &self.kubeconfig,
            self.name.as_str(),
            self.api_port,
        )?;

        let client = self.client().await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        readiness::wait_ready(
            &client,
            self.name.as_str(),
            self.agents.len() + 1,
            remaining.max(Duration::from_secs(1)),
        )
        .await?;

        Ok(())
    }

    /// Returns the Lima instance name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Returns the host port that forwards to the API server.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// Returns the path of the rewritten kubeconfig (mode 0600): server `https://127.0.0.1:<api_port>`, cluster,
    /// context and user named after the instance.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Returns the containerd platform of the guest, e.g. `linux/amd64`.
    pub fn platform(&self) -> &'static str {
        self.platform
    }

    /// Returns the spec the cluster was booted from, overrides applied.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Builds a client for this cluster from its kubeconfig, without touching the
    /// process-global `KUBECONFIG`.
    pub async fn client(&self) -> Result<kube::Client> {
        let config = kubeconfig::client_config(&self.kubeconfig).await?;
        kube::Client::try_from(config).map_err(|error| Error::kube("building a client", error))
    }

    /// Creates a namespace named `<prefix>-<random suffix>` for one test, labelled with this
    /// instance, and waits for its `default` service account.
    ///
    /// The namespace is deleted when the returned guard drops.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        TestNamespace::create(self, prefix).await
    }

    /// Runs `argv` in the guest through `limactl shell` and returns its output.
    ///
    /// Each element reaches the guest as one argument (Lima quotes them), so shell operators
    /// must be passed inside `sh -c`. A non-zero exit is an error carrying the stderr tail.
    /// On a multi-node cluster it runs on the server; [`Node::shell`] runs on any node.
    pub async fn shell(&self, argv: &[&str]) -> Result<ShellOutput> {
        nodes::shell(&self.provisioner, &self.name, argv).await
    }

    /// Imports an image archive (OCI layout or `docker save` format, optionally gzipped) into
    /// the guest's k3s containerd and verifies that every image it names is present.
    ///
    /// Returns the normalised references (for example `docker.io/library/op:1.0`) to use in pod
    /// specs. An archive already imported into this cluster (same content digest) is skipped.
    pub async fn import_image(&self, archive: impl AsRef<Path>) -> Result<Vec<String>> {
        image::import::import(self, archive.as_ref()).await
    }

    /// Streams an image from the host's container engine into the guest's k3s containerd and
    /// verifies it, without a temporary file: `docker save`, else `podman save`, else
    /// `nerdctl save`, whichever is on `PATH` first (the spec or `K3S_HARNESS_IMAGE_TOOL` can name another).
    ///
    /// Returns the normalised reference. `:latest` and untagged references are rejected unless
    /// [`ClusterSpec::allow_latest_images`] is set, because Kubernetes would pull them again.
    pub async fn import_docker_image(&self, reference: &str) -> Result<String> {
        image::import::import_from_engine(self, reference).await
    }

    /// Runs a Jetpack playbook against the VM over SSH with default [`ConvergeOptions`].
    ///
    /// See [`converge_with`](Self::converge_with).
    pub async fn converge(
        &self,
        playbook: impl AsRef<Path>,
    ) -> Result<ConvergeReport, ConvergeError> {
        converge::converge(self, playbook.as_ref(), &ConvergeOptions::default()).await
    }

    /// Runs a Jetpack playbook against the VM over SSH: `jetp ssh --playbook P --inventory I`.
    ///
    /// The inventory has a host per node, all in the group `k3s` and each in `server` or
    /// `agent`, with Lima's forwarded SSH port, guest user and key as `jet_ssh_*` variables.
    /// The server's host is `127.0.0.1`, and agents get other spellings of that address
    /// (`127.1`, `127.0.1`, ...), because jetp distinguishes hosts by name. The binary is `JETP`
    /// (a path), else `jetpack` or `jetp` on `PATH`. Each output line is logged at INFO as it
    /// arrives. A non-zero exit, a failure marker in the output or the timeout is an error
    /// carrying the command and the output's last lines.
    pub async fn converge_with(
        &self,
        playbook: impl AsRef<Path>,
        options: &ConvergeOptions,
    ) -> Result<ConvergeReport, ConvergeError> {
        converge::converge(self, playbook.as_ref(), options).await
    }

    /// Converges the playbook again and fails if that changed anything, as Molecule's
    /// idempotence check does; call it after [`converge_with`](Self::converge_with).
    pub async fn check_idempotent(
        &self,
        playbook: impl AsRef<Path>,
        options: &ConvergeOptions,
    ) -> Result<ConvergeReport, ConvergeError> {
        converge::check_idempotent(self, playbook.as_ref(), options).await
    }

    /// Collects logs and cluster state for a bug report into a new directory and returns it:
    /// `<state dir>/<instance>/diagnostics/<UTC time>-requested-<pid>/`.
    ///
    /// The directory contains the ends of Lima's `ha.stderr.log` and `serial*.log`, the guest's
    /// `journalctl -u k3s` and `/var/log/cloud-init-output.log`, node conditions, events, and
    /// pod descriptions and logs of `kube-system` and of the namespaces created with
    /// [`namespace`](Self::namespace), plus `collectors.txt`, which says what each file holds
    /// or why its collector failed. Each guest command has its own deadline, and a collector
    /// that fails does not stop the others. Values that look like secrets (tokens, passwords,
    /// private keys, literal environment variables of pods) are redacted, and kubeconfigs and
    /// Secrets are never read.
    ///
    /// The directory outlives the cluster: [`shutdown`](Self::shutdown) and `Drop` leave it in
    /// place.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory or its summary cannot be written.
    pub async fn dump_diagnostics(&self) -> Result<PathBuf> {
        let dir = self.state.instance_dir(self.name.as_str());
        let source = diagnostics::Source {
            limactl: self.provisioner.limactl(),
            instance: &self.name,
            agents: &self.agents,
            state_dir: &dir,
        };
        let collection = blocking(|| diagnostics::collect(&source, Trigger::Requested)).await?;
        Ok(collection.dir)
    }

    /// Collects diagnostics before the VM is deleted after a failed start, and returns the
    /// sentence for the error message.
    async fn collect_diagnostics(&self, trigger: Trigger) -> String {
        let dir = self.state.instance_dir(self.name.as_str());
        let source = diagnostics::Source {
            limactl: self.provisioner.limactl(),
            instance: &self.name,
            agents: &self.agents,
            state_dir: &dir,
        };
        blocking(|| diagnostics::collect_and_describe(&source, trigger)).await
    }

    /// Deletes the VM and the harness's files for it, except collected diagnostics, and
    /// reports any failure.
    pub async fn shutdown(mut self) -> Result<()> {
        self.destroy_on_drop = false;
        let provisioner = &self.provisioner;
        let name = &self.name;
        let agents = &self.agents;
        blocking(move || nodes::destroy_nodes(provisioner, name, agents)).await?;
        self.state.remove_instance_dir(self.name.as_str())
    }

    /// Keeps the VM running after this value is dropped, for a caller that manages its
    /// lifetime itself (the `k3s-harness up` command).
    ///
    /// The VM is marked as kept, so `k3s-harness gc` leaves it alone; `k3s-harness down NAME`
    /// deletes it.
    pub fn detach(mut self) -> Result<()> {
        self.destroy_on_drop = false;
        let mut record = self.state.read_record(self.name.as_str())?;
        record.kept = true;
        self.state.write_record(&record)
    }

    /// `LIMA_HOME=<dir> ` when the instance lives outside Lima's default home, for hints that
    /// show `limactl` commands.
    pub(crate) fn lima_home_prefix(&self) -> String {
        lima_home_prefix(self.provisioner.limactl().lima_home())
    }

    pub(crate) fn state_dir(&self) -> &StateDir {
        &self.state
    }

    pub(crate) fn provisioner(&self) -> &Provisioner {
        &self.provisioner
    }

    pub(crate) fn instance_name(&self) -> &InstanceName {
        &self.name
    }

    /// The instance's directory under `LIMA_HOME`.
    pub(crate) fn instance_dir(&self) -> PathBuf {
        self.provisioner
            .limactl()
            .lima_home()
            .join(self.name.as_str())
    }

    /// Deletes the VM after a failed start; failures are logged, because the start error
    /// matters more to the caller.
    async fn delete_vm_quietly(&mut self) {
        self.destroy_on_drop = false;
        let provisioner = &self.provisioner;
        let name = &self.name;
        let agents = &self.agents;
        let deleted = blocking(move || nodes::destroy_nodes(provisioner, name, agents)).await;
        if let Err(error) = deleted {
            tracing::error!(instance = %self.name, %error, "failed to delete the instance after a failed start");
        }
    }

    /// Deletes the VM from a destructor, where nothing can be returned.
    fn destroy_blocking(&self) {
        if let Err(error) = nodes::destroy_nodes(&self.provisioner, &self.name, &self.agents) {
            tracing::error!(instance = %self.name, %error, "failed to delete the cluster's Lima instances");
        }
        if let Err(error) = self.state.remove_instance_dir(self.name.as_str()) {
            tracing::error!(instance = %self.name, %error, "failed to remove the state directory");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.destroy_on_drop {
            self.destroy_blocking();
        }
    }
}

/// Builds the limactl client that the spec selects: its binary and Lima home, else `LIMACTL` and
/// `LIMA_HOME`.
pub(crate) fn limactl_for(spec: &ClusterSpec) -> Result<Limactl> {
    let mut limactl = Limactl::from_env()?;
    if let Some(program) = &spec.limactl {
        limactl = limactl.with_program(program.clone());
    }
    if let Some(home) = &spec.lima_home {
        limactl = limactl.with_lima_home(home.clone());
    }
    for (key, value) in &spec.limactl_env {
        limactl = limactl.with_env(key.clone(), value.clone());
    }
    Ok(limactl)
}

/// The harness state directory that the spec selects, else `K3S_HARNESS_STATE_DIR` or the
/// per-user default.
pub(crate) fn state_dir_for(spec: &ClusterSpec) -> Result<StateDir> {
    match &spec.state_dir {
        Some(dir) => Ok(StateDir::new(dir.clone())),
        None => StateDir::from_env(),
    }
}

/// `LIMA_HOME=<home> ` unless `home` is Lima's default, `~/.lima`, for hints that show
/// `limactl` commands.
pub(crate) fn lima_home_prefix(home: &Path) -> String {
    let default = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".lima"));
    if default.as_deref() == Some(home) {
        String::new()
    } else {
        format!("LIMA_HOME={} ", home.display())
    }
}

/// Whether a failed `limactl start` may have left a VM of this call's making behind.
fn leaves_vm_behind(error: &lima_provisioner::Error) -> bool {
    match error {
        lima_provisioner::Error::StartFailed { kind, .. } => kind.leaves_vm_behind(),
        _ => true,
    }
}

/// Returns whether `limactl start` was killed by a signal. The harness's own deadline is reported as
/// `TimedOut` instead, so a signal means that another process stopped the start on purpose.
fn killed_by_signal(error: &lima_provisioner::Error) -> bool {
    use std::os::unix::process::ExitStatusExt;

    match error {
        lima_provisioner::Error::StartFailed { failure, .. } => failure.status.signal().is_some(),
        _ => false,
    }
}

/// Returns the static spelling of a platform read back from a record. Lima's guests are
/// `linux/amd64` unless the record names another platform.
fn known_platform(platform: &str) -> &'static str {
    const PLATFORMS: [&str; 6] = [
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
        "linux/riscv64",
        "linux/s390x",
        "linux/ppc64le",
    ];
    PLATFORMS
        .into_iter()
        .find(|known| *known == platform)
        .unwrap_or(PLATFORMS[0])
}

/// Who a booted cluster belongs to: the process whose exit ends its run, and the run's key.
pub(crate) struct BootOwner {
    pub(crate) owner: ProcessId,
    pub(crate) run_key: Option<String>,
    /// Whether a reaper watches the run (shared clusters that are not reused).
    pub(crate) start_reaper: bool,
}

/// Checks limactl and the host, and builds the Lima spec: refuses old Lima and a name that is
/// already taken, and picks the API port.
fn prepare(provisioner: &Provisioner, spec: &ClusterSpec, name: &InstanceName) -> Result<LimaSpec> {
    let version = provisioner.limactl().version()?;

    if provisioner.exists(name)? {
        return Err(Error::InvalidConfig {
            name: "instance_name".to_owned(),
            value: name.to_string(),
            reason: format!(
                "a Lima instance with this name already exists; delete it with \
                 `limactl delete -f {name}` or choose another name"
            ),
        });
    }

    let api_port = match spec.api_port {
        // Lima reports a failed host bind only as a warning in ha.stderr.log, and the kubeconfig
        // would then reach whoever owns the port, so a taken port is rejected up front.
        Some(port) => {
            if let Err(error) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return Err(Error::InvalidConfig {
                    name: "api_port (K3S_HARNESS_API_PORT, --api-port)".to_owned(),
                    value: port.to_string(),
                    reason: format!(
                        "127.0.0.1:{port} cannot be bound ({error}), so Lima could not forward \
                         the API server there; pick a free port or leave it unset"
                    ),
                });
            }
            port
        }
        None => lima_provisioner::pick_free_port().map_err(|error| {
            Error::io(
                "pick a free host port for the API server",
                "127.0.0.1:0",
                error,
            )
        })?,
    };

    let mut lima_spec = LimaSpec::new(name.clone());
    lima_spec.template = spec.template.clone();
    lima_spec.cpus = spec.cpus;
    lima_spec.memory_mib = spec.memory_mib;
    lima_spec.disk_gib = spec.disk_gib;
    lima_spec.start_timeout = spec.start_timeout;
    lima_spec.port_forwards = PortForward::pin_api_server(api_port);
    lima_spec.set.extend(spec.k3s_version_expression());

    if spec.nodes > 1 {
        nodes::check_agent_support(provisioner, &version, &spec.template, spec.nodes)?;
        for agent in nodes::agent_names(name, spec.nodes, provisioner.limactl().lima_home())? {
            if provisioner.exists(&agent)? {
                return Err(Error::InvalidConfig {
                    name: "instance_name".to_owned(),
                    value: name.to_string(),
                    reason: format!(
                        "its agent instance `{agent}` already exists; delete it with \
                         `limactl delete -f {agent}` or choose another name"
                    ),
                });
            }
        }
        lima_spec.networks.push(nodes::USER_V2_NETWORK.to_owned());
    }
    Ok(lima_spec)
}

/// `k3sh-<spec fingerprint>-<6 random hex digits>`: 20 characters, well inside the socket path
/// budget for any reasonable `LIMA_HOME`, and a valid Kubernetes node name once Lima prefixes
/// `lima-`.
pub(crate) fn generate_instance_name(spec: &ClusterSpec) -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let random = hasher.finish() & 0xff_ffff;
    format!("{INSTANCE_PREFIX}{}-{random:06x}", spec.fingerprint())
}

/// Runs blocking provisioner work off the async runtime.
///
/// `block_in_place` keeps borrowed arguments usable but needs the multi-thread runtime. On a
/// current-thread runtime (the `#[tokio::test]` default) the work runs inline instead, as any
/// blocking call on that runtime would.
pub(crate) async fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid_and_distinct() {
        let spec = ClusterSpec::default();
        let first = generate_instance_name(&spec);
        let second = generate_instance_name(&spec);

        assert!(first.starts_with(INSTANCE_PREFIX), "{first}");
        assert_eq!(first.len(), 20, "{first}");
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_ne!(first, second);
        InstanceName::new(first, Path::new("/tmp/lima")).unwrap();
    }
}
