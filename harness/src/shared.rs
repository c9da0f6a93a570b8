//! One cluster per test run, shared by every process of the run.
//!
//! cargo-nextest runs each test in its own process, so a `static` alone would boot one VM per
//! test. Processes of one run instead meet in the instance's state directory:
//!
//! 1. The instance name derives from the spec's fingerprint and the run's key, so every process
//!    of a run computes the same name without talking to the others.
//! 2. The `lock` file is held exclusively while a process boots or inspects the instance. The
//!    first process boots and writes `cluster.json`; the others wait, then attach by reading it.
//!    A booting process that dies releases the lock with its death and leaves no record, so the
//!    next process deletes the half-booted VM and boots again.
//! 3. Every attached process holds a shared lock on `lease` until it exits.
//! 4. The booting process starts a detached reaper that deletes the VM once the run's owner
//!    process is gone and no lease is held. The kernel releases locks when a process dies, so
//!    this holds after SIGKILL of the runner, of a test, or of both.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use lima_provisioner::{InstanceName, InstanceStatus, Limactl, Provisioner};
use tokio::sync::OnceCell;

use crate::cluster::{BootOwner, Cluster, blocking, limactl_for, state_dir_for};
use crate::diagnostics::{self, Trigger};
use crate::error::{Error, Result};
use crate::run::Run;
use crate::spec::{ClusterSpec, DestroyPolicy};
use crate::state::{self, StateDir};
use crate::{booting, gc, reaper};

/// Variable naming an instance that a nextest setup script booted for the run.
pub const INSTANCE_ENV: &str = "K3S_HARNESS_INSTANCE";

/// Variable naming that instance's kubeconfig, exported beside [`INSTANCE_ENV`].
pub const KUBECONFIG_ENV: &str = "K3S_HARNESS_KUBECONFIG";

/// The shared clusters of this process, one per spec fingerprint.
static CLUSTERS: OnceLock<Mutex<HashMap<String, &'static OnceCell<Cluster>>>> = OnceLock::new();

/// Attachments of this process to shared clusters.
static ATTACHMENTS: Mutex<Vec<Attachment>> = Mutex::new(Vec::new());

/// One attachment: the lease keeps the VM alive while this process runs.
struct Attachment {
    dir: PathBuf,
    lease: Option<File>,
    policy: DestroyPolicy,
    instance: InstanceName,
    agents: Vec<InstanceName>,
    limactl: Limactl,
    kubeconfig: PathBuf,
    owned_by_this_process: bool,
}

/// See [`Cluster::shared`].
pub(crate) async fn shared(spec: ClusterSpec) -> Result<&'static Cluster> {
    let spec = spec.with_env_overrides()?;
    let cell = {
        let mut clusters = CLUSTERS
            .get_or_init(Default::default)
            .lock()
            .expect("the shared cluster table is never poisoned");
        *clusters
            .entry(spec.fingerprint())
            .or_insert_with(|| Box::leak(Box::new(OnceCell::new())))
    };
    cell.get_or_try_init(|| acquire(spec)).await
}

/// Attaches to the run's cluster for `spec`, booting it if this process is the first.
async fn acquire(spec: ClusterSpec) -> Result<Cluster> {
    let provisioner = Provisioner::new(limactl_for(&spec)?);
    let state = state_dir_for(&spec)?;
    let from_setup_script = std::env::var(INSTANCE_ENV)
        .ok()
        .filter(|name| !name.is_empty());
    let run = Run::detect();

    let name = match &from_setup_script {
        Some(name) => name.clone(),
        None => instance_name(&spec, &run),
    };
    let name = InstanceName::new(name, provisioner.limactl().lima_home())?;

    {
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || gc::sweep(&state)).await;
    }

    let dir = state.create_instance_dir(name.as_str())?;
    let lock = lock_exclusive(dir.join(state::LOCK_FILE)).await?;

    let record = state.read_record_opt(name.as_str())?;
    let cluster = match record {
        // A booting process died before the cluster was ready: its VM is a leftover.
        Some(record) if !record.ready && from_setup_script.is_none() => {
            tracing::warn!(instance = %name, "the process booting this cluster died; booting it again");
            remove_leftover(&provisioner, &state, &name, &record.agent_names()?).await?;
            boot(spec, name, provisioner, &state, &run).await?
        }
        Some(record) => {
            if record.fingerprint != spec.fingerprint() {
                return Err(stale_fingerprint(&name, &record.fingerprint, &spec));
            }
            let running = {
                let provisioner = &provisioner;
                let name = &name;
                blocking(move || provisioner.limactl().instance(name)).await?
            }
            .is_some_and(|instance| instance.status == Some(InstanceStatus::Running));
            if running {
                tracing::debug!(instance = %name, "attaching to the run's cluster");
                Cluster::from_record(&record, spec, provisioner, state.clone(), name)
            } else if from_setup_script.is_some() {
                return Err(Error::InvalidConfig {
                    name: INSTANCE_ENV.to_owned(),
                    value: name.to_string(),
                    reason: "the instance the setup script booted is no longer running".to_owned(),
                });
            } else {
                tracing::warn!(instance = %name, "the recorded cluster is not running; booting it again");
                remove_leftover(&provisioner, &state, &name, &record.agent_names()?).await?;
                boot(spec, name, provisioner, &state, &run).await?
            }
        }
        None if from_setup_script.is_some() => {
            return Err(Error::UnknownInstance {
                instance: name.to_string(),
                state_dir: state.root().to_owned(),
            });
        }
        None => {
            remove_leftover(&provisioner, &state, &name, &[]).await?;
            boot(spec, name, provisioner, &state, &run).await?
        }
    };

    attach(&cluster, &dir)?;
    drop(lock);
    Ok(cluster)
}

/// `k3sh-<fingerprint>-<run id>`, or `k3sh-<fingerprint>-reuse` for a VM kept across runs,
/// unless the spec names the instance itself.
fn instance_name(spec: &ClusterSpec, run: &Run) -> String {
    if let Some(name) = &spec.instance_name {
        name.clone()
    } else if spec.reuse {
        format!("{}{}-reuse", crate::INSTANCE_PREFIX, spec.fingerprint())
    } else {
        format!(
            "{}{}-{}",
            crate::INSTANCE_PREFIX,
            spec.fingerprint(),
            run.short_id()
        )
    }
}

fn stale_fingerprint(name: &InstanceName, recorded: &str, spec: &ClusterSpec) -> Error {
    Error::InvalidConfig {
        name: "ClusterSpec".to_owned(),
        value: spec.fingerprint(),
        reason: format!(
            "instance `{name}` was booted from a spec with fingerprint {recorded}, so it is not \
             the cluster this spec describes; delete it with `k3s-harness down {name}` or pass \
             the spec it was booted from"
        ),
    }
}

/// Deletes a cluster that has no usable record: a process that was booting it died. `agents`
/// are the agents its record names, if any.
///
/// The dead process's `limactl start` calls may still be running; they are killed first,
/// because they would go on creating the instances that this deletes.
async fn remove_leftover(
    provisioner: &Provisioner,
    state: &StateDir,
    name: &InstanceName,
    agents: &[InstanceName],
) -> Result<()> {
    let dir = state.instance_dir(name.as_str());
    blocking(|| booting::stop_abandoned_start(&dir)).await;
    let exists = blocking(|| provisioner.exists(name)).await?;
    if exists || !agents.is_empty() {
        tracing::warn!(instance = %name, "deleting a half-booted cluster left by a process that died while booting it");
        blocking(|| booting::destroy_cluster(provisioner, name, agents, &dir)).await?;
    }
    state.remove_record(name.as_str())
}

/// Boots the run's cluster while holding the instance lock, then starts its reaper.
async fn boot(
    spec: ClusterSpec,
    name: InstanceName,
    provisioner: Provisioner,
    state: &StateDir,
    run: &Run,
) -> Result<Cluster> {
    let owner = BootOwner {
        owner: run.owner,
        run_key: Some(run.key.clone()),
        start_reaper: !spec.reuse,
    };
    Cluster::boot(spec, name, provisioner, state.clone(), owner).await
}

/// Takes this process's lease on the cluster and remembers it for the exit and panic hooks.
fn attach(cluster: &Cluster, dir: &Path) -> Result<()> {
    let lease_path = dir.join(state::LEASE_FILE);
    let lease = state::open_lock_file(&lease_path)?;
    lease
        .lock_shared()
        .map_err(|error| Error::io("take a shared lock on", &lease_path, error))?;

    let record = cluster.state_dir().read_record(cluster.name())?;
    ATTACHMENTS
        .lock()
        .expect("the attachment list is never poisoned")
        .push(Attachment {
            dir: dir.to_owned(),
            lease: Some(lease),
            policy: record.destroy_policy,
            instance: cluster.instance_name().clone(),
            agents: cluster
                .nodes()
                .iter()
                .skip(1)
                .map(|node| node.instance_name().clone())
                .collect(),
            limactl: cluster.provisioner().limactl().clone(),
            kubeconfig: cluster.kubeconfig_path().to_owned(),
            owned_by_this_process: record.owner == crate::run::ProcessId::current(),
        });
    install_panic_hook();
    Ok(())
}

/// Opens `path` and waits for an exclusive lock on it, off the async runtime.
async fn lock_exclusive(path: PathBuf) -> Result<File> {
    tokio::task::spawn_blocking(move || {
        let file = state::open_lock_file(&path)?;
        file.lock()
            .map_err(|error| Error::io("take an exclusive lock on", &path, error))?;
        Ok(file)
    })
    .await
    .expect("taking a file lock does not panic")
}

/// Marks every attached cluster's run as failed when a test panics. For a VM that the destroy
/// policy will keep, it then collects diagnostics while the failed test's namespaces still
/// exist (unwinding deletes them), and prints how to reach the VM and where the diagnostics
/// are.
///
/// NOTE: a panic caught with `catch_unwind` (a `#[should_panic]` test, for one) also marks the
/// run as failed and collects diagnostics. The collection delays the panicking test by its
/// duration: a few seconds against the fake `limactl`, and at most the probe's and the
/// guest commands' deadlines when the guest hangs.
fn install_panic_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            // A panic inside a collection must not start another one, nor wait for the lock
            // that the panicking collection's caller holds.
            if diagnostics::on_collector_thread() {
                return;
            }
            let Ok(attachments) = ATTACHMENTS.lock() else {
                return;
            };
            for attachment in attachments.iter() {
                let _ = std::fs::write(attachment.dir.join(state::FAILED_FILE), b"");
            }
            for attachment in attachments.iter() {
                if attachment.policy != DestroyPolicy::Always {
                    let source = diagnostics::Source {
                        limactl: &attachment.limactl,
                        instance: &attachment.instance,
                        agents: &attachment.agents,
                        state_dir: &attachment.dir,
                    };
                    let diagnostics =
                        diagnostics::collect_and_describe(&source, Trigger::TestFailed);
                    eprintln!("{}", keep_hint(attachment, &diagnostics));
                }
            }
        }));
    });
}

/// Formats the hint that shows a developer how to inspect a kept VM, followed by the sentence
/// about its diagnostics.
fn keep_hint(attachment: &Attachment, diagnostics: &str) -> String {
    let name = &attachment.instance;
    format!(
        "k3s-harness: a test failed; instance `{name}` is kept after the run (destroy policy \
         {policy}). Inspect it with `{home}limactl shell {name}` or `KUBECONFIG={kubeconfig} \
         kubectl get pods -A`, and delete it with `k3s-harness down {name}`. {diagnostics}",
        policy = attachment.policy,
        home = crate::cluster::lima_home_prefix(attachment.limactl.lima_home()),
        kubeconfig = attachment.kubeconfig.display(),
    )
}

/// Releases this process's leases at exit, and ends the run of a cluster this process owns
/// (a test binary run on its own) at once instead of leaving it to the reaper.
///
/// The work runs on a fresh thread: after `main` returns, the main thread's thread-locals may
/// already be gone, and a `tracing` subscriber that uses them would abort the process.
#[dtor::dtor(unsafe)]
fn release_attachments() {
    let worker = std::thread::spawn(|| {
        let Ok(mut attachments) = ATTACHMENTS.lock() else {
            return;
        };
        for attachment in attachments.iter_mut() {
            drop(attachment.lease.take());
            if attachment.owned_by_this_process {
                let _ = reaper::end_run(&attachment.dir);
            }
        }
    });
    let _ = worker.join();
}
