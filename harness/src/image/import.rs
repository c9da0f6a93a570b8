//! Streaming images into the guest's k3s containerd and checking the result.
//!
//! The image goes on stdin to `sudo k3s ctr -n k8s.io images import --platform P -`. k3s's own
//! `ctr` talks to the containerd that the kubelet uses, and `k8s.io` is the namespace the CRI
//! reads, so the image is visible to pods. An import with the distribution's `ctr`, or into
//! another namespace, succeeds but stays invisible to the kubelet. Only the guest's platform is
//! imported, because archives of multi-platform images often lack the other platforms' blobs.
//! Success of `ctr` is not trusted: `crictl images` must list every reference afterwards.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lima_provisioner::{InstanceName, Provisioner, ShellOptions};

use super::record;
use super::{ImageError, ImageReference, carries_platform, inspect_archive, open_for_import};
use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// Bound on listing the guest's images after an import.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on the container engine's exit after its output ended or the import failed.
const ENGINE_EXIT_GRACE: Duration = Duration::from_secs(30);

/// Container engines tried in order when the spec names none.
const ENGINES: [&str; 3] = ["docker", "podman", "nerdctl"];

/// Imports `path` into `cluster`; see [`Cluster::import_image`].
pub(crate) async fn import(cluster: &Cluster, path: &Path) -> Result<Vec<String>> {
    let state_root = cluster.state_dir().root().to_owned();
    let instance_dir = cluster.state_dir().instance_dir(cluster.name());

    // The cheap path: a file whose metadata is unchanged since it was hashed, and whose digest
    // is recorded as imported into this instance, is not read at all.
    if let Some(digest) = record::cached_digest(&state_root, path)
        && let Some(references) = record::imported_references(&instance_dir, &digest)
    {
        reject_latest_unless_allowed(cluster, path, &references)?;
        tracing::debug!(archive = %path.display(), %digest, "archive already imported; skipping");
        return Ok(references);
    }

    // This pass reads the whole archive before the stream reads it again: about a twelfth of
    // an import's time, measured on a 1 GiB archive, where containerd's own import takes the
    // rest. It stays a separate pass so that a `:latest` reference, a missing platform or a
    // truncated archive is rejected before anything reaches the guest.
    let info = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || inspect_archive(&path))
            .await
            .expect("archive inspection does not panic")?
    };
    record::cache_digest(&state_root, path, &info.content_digest);
    if let Some(references) = record::imported_references(&instance_dir, &info.content_digest) {
        reject_latest_unless_allowed(cluster, path, &references)?;
        tracing::debug!(archive = %path.display(), digest = %info.content_digest, "archive already imported; skipping");
        return Ok(references);
    }

    let references: Vec<String> = info
        .images
        .iter()
        .map(|image| image.reference.as_str().to_owned())
        .collect();
    reject_latest_unless_allowed(cluster, path, &references)?;
    if !carries_platform(&info, cluster.platform()) {
        return Err(ImageError::PlatformNotCarried {
            path: path.to_owned(),
            platform: cluster.platform().to_owned(),
            carried: info
                .images
                .iter()
                .flat_map(|image| image.platforms.iter().cloned())
                .collect(),
        }
        .into());
    }

    tracing::info!(
        instance = cluster.name(),
        archive = %path.display(),
        size = info.size,
        images = ?references,
        "importing image archive"
    );
    // Every node gets the archive, in parallel: a pod may be scheduled on any of them.
    let mut imports = tokio::task::JoinSet::new();
    for node in node_names(cluster) {
        let reader = open_for_import(path, info.compression)?;
        let target = Target::new(cluster, node);
        let source = path.display().to_string();
        let references = references.clone();
        imports.spawn(async move {
            target.stream_into_containerd(reader).await?;
            target.verify(&source, &references).await
        });
    }
    while let Some(imported) = imports.join_next().await {
        imported.expect("an import does not panic")?;
    }

    record::mark_imported(&instance_dir, &info.content_digest, &references);
    Ok(references)
}

/// Fails when `references` (normalised, as an archive names them) include a `:latest` or
/// untagged one and this cluster's spec does not allow those. A skipped re-import checks too,
/// because an earlier call may have imported the archive with `allow_latest_images`.
fn reject_latest_unless_allowed(
    cluster: &Cluster,
    path: &Path,
    references: &[String],
) -> Result<()> {
    if cluster.spec().allow_latest_images {
        return Ok(());
    }
    let latest: Vec<String> = references
        .iter()
        .filter(|reference| {
            ImageReference::parse(reference).is_ok_and(|parsed| parsed.is_latest_or_untagged())
        })
        .cloned()
        .collect();
    if latest.is_empty() {
        return Ok(());
    }
    Err(ImageError::LatestReference {
        path: path.to_owned(),
        references: latest,
    }
    .into())
}

/// Saves `reference` with the host's container engine and imports it; see
/// [`Cluster::import_docker_image`].
pub(crate) async fn import_from_engine(cluster: &Cluster, reference: &str) -> Result<String> {
    let normalised = ImageReference::parse(reference)?;
    if normalised.is_latest_or_untagged() && !cluster.spec().allow_latest_images {
        return Err(ImageError::LatestReference {
            path: PathBuf::from(format!("save {reference}")),
            references: vec![normalised.as_str().to_owned()],
        }
        .into());
    }
    let engine = find_engine(cluster).ok_or_else(|| ImageError::NoContainerEngine {
        reference: reference.to_owned(),
    })?;

    // One `save` per node, one node after the other: the stream is not kept, so that memory
    // stays flat, and the engine reads its store again for each node.
    for node in node_names(cluster) {
        let target = Target::new(cluster, node);
        save_into(&target, &engine, reference).await?;
        let references = [normalised.as_str().to_owned()];
        target
            .verify(
                &format!("{} save {reference}", engine.display()),
                &references,
            )
            .await?;
    }
    Ok(normalised.as_str().to_owned())
}

/// Streams `ENGINE save REFERENCE` into `target`'s containerd.
async fn save_into(target: &Target, engine: &Path, reference: &str) -> Result<()> {
    let mut save = Command::new(engine);
    save.args(["save", reference])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let rendered = shell_words::join(
        std::iter::once(engine.to_string_lossy().into_owned())
            .chain(["save".to_owned(), reference.to_owned()]),
    );
    let mut child = save
        .spawn()
        .map_err(|error| Error::io("run the container engine", engine, error))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr_reader = drain_stderr(&mut child);

    tracing::info!(instance = %target.name, command = %rendered, "streaming an image into the cluster");
    let imported = target.stream_into_containerd(Box::new(stdout)).await;

    // The import may have ended early; the engine must not be left running or unreaped.
    if imported.is_err() {
        let _ = child.kill();
    }
    let status = wait_bounded(&mut child, ENGINE_EXIT_GRACE)
        .map_err(|error| Error::io("wait for the container engine", engine, error))?;
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(ImageError::SaveFailed {
            reference: reference.to_owned(),
            command: rendered,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
        }
        .into());
    }
    imported
}

/// One node to import into, with what the import needs from its cluster, owned so that the
/// nodes' imports can run as separate tasks.
struct Target {
    provisioner: Provisioner,
    name: InstanceName,
    platform: &'static str,
    import_timeout: Duration,
}

impl Target {
    fn new(cluster: &Cluster, name: InstanceName) -> Self {
        Target {
            provisioner: cluster.provisioner().clone(),
            name,
            platform: cluster.platform(),
            import_timeout: cluster.spec().import_timeout,
        }
    }

    /// Streams `reader` into `ctr images import` in the guest.
    async fn stream_into_containerd(&self, reader: Box<dyn Read + Send>) -> Result<()> {
        let options = ShellOptions {
            workdir: Some("/".to_owned()),
            timeout: self.import_timeout,
            stdin: None,
        };
        let provisioner = self.provisioner.clone();
        let name = self.name.clone();
        let platform = self.platform;
        let output = tokio::task::spawn_blocking(move || {
            let argv = [
                "sudo",
                "k3s",
                "ctr",
                "-n",
                "k8s.io",
                "images",
                "import",
                "--platform",
                platform,
                "-",
            ];
            provisioner
                .limactl()
                .shell_streaming(&name, &argv, reader, &options)
        })
        .await
        .expect("the import does not panic")?;
        output.check()?;
        Ok(())
    }

    /// Fails unless the kubelet's view (`crictl images`) lists every reference.
    async fn verify(&self, source: &str, references: &[String]) -> Result<()> {
        let provisioner = self.provisioner.clone();
        let name = self.name.clone();
        let output = tokio::task::spawn_blocking(move || {
            let options = ShellOptions {
                workdir: Some("/".to_owned()),
                timeout: VERIFY_TIMEOUT,
                stdin: None,
            };
            provisioner.limactl().shell(
                &name,
                &["sudo", "k3s", "crictl", "images", "-o", "json"],
                &options,
            )
        })
        .await
        .expect("listing images does not panic")?
        .check()?;

        let present = super::parse_crictl_images(&output.stdout)?;
        let missing: Vec<String> = references
            .iter()
            .filter(|reference| !present.contains(reference.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::Image(ImageError::MissingAfterImport {
                path: PathBuf::from(source),
                missing,
            }))
        }
    }
}

/// Returns the instance names of every node of `cluster`, the server first.
fn node_names(cluster: &Cluster) -> Vec<InstanceName> {
    cluster
        .nodes()
        .iter()
        .map(|node| node.instance_name().clone())
        .collect()
}

/// The engine the spec names, else the first of docker, podman and nerdctl on `PATH`.
fn find_engine(cluster: &Cluster) -> Option<PathBuf> {
    if let Some(engine) = &cluster.spec().container_engine {
        return Some(engine.clone());
    }
    let paths = std::env::var_os("PATH")?;
    ENGINES.iter().find_map(|engine| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(engine))
            .find(|candidate| candidate.is_file())
    })
}

/// Waits for `child` for at most `grace`, then kills it and reaps it.
fn wait_bounded(child: &mut Child, grace: Duration) -> std::io::Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            return child.wait();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the engine's stderr on a thread, so a chatty engine cannot block on a full pipe.
fn drain_stderr(child: &mut Child) -> std::thread::JoinHandle<Vec<u8>> {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    })
}
