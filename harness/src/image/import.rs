//! Streaming an image archive into the guest's k3s containerd and checking the result.

use std::path::Path;

use lima_provisioner::ShellOptions;

use super::{ImageError, carries_platform, inspect_archive, latest_references, open_for_import};
use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// Bound on listing the guest's images after an import.
const VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Imports `path` into `cluster`; see [`Cluster::import_image`].
///
/// The archive goes on stdin to `sudo k3s ctr -n k8s.io images import --platform P -`: k3s's
/// own `ctr` talks to the containerd the kubelet uses, and `k8s.io` is the namespace the CRI
/// reads, so the image is visible to pods (an import with the distribution's `ctr` or into
/// another namespace succeeds but stays invisible to the kubelet). Only the guest's platform is
/// imported, because archives of multi-platform images often lack the other platforms' blobs.
/// Success of `ctr` is not trusted: `crictl images` must list every reference afterwards.
pub(crate) async fn import(cluster: &Cluster, path: &Path) -> Result<Vec<String>> {
    let info = {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || inspect_archive(&path))
            .await
            .expect("archive inspection does not panic")?
    };
    let references: Vec<String> = info
        .images
        .iter()
        .map(|image| image.reference.as_str().to_owned())
        .collect();

    let latest = latest_references(&info);
    if !latest.is_empty() && !cluster.spec().allow_latest_images {
        return Err(ImageError::LatestReference {
            path: path.to_owned(),
            references: latest
                .iter()
                .map(|reference| reference.as_str().to_owned())
                .collect(),
        }
        .into());
    }
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

    let already_imported = cluster
        .imported_digests()
        .lock()
        .expect("the import record is never poisoned")
        .contains(&info.content_digest);
    if already_imported {
        tracing::debug!(archive = %path.display(), digest = %info.content_digest, "archive already imported; skipping");
        return Ok(references);
    }

    tracing::info!(
        instance = cluster.name(),
        archive = %path.display(),
        size = info.size,
        images = ?references,
        "importing image archive"
    );
    let argv = [
        "sudo",
        "k3s",
        "ctr",
        "-n",
        "k8s.io",
        "images",
        "import",
        "--platform",
        cluster.platform(),
        "-",
    ];
    let options = ShellOptions {
        workdir: Some("/".to_owned()),
        timeout: cluster.spec().import_timeout,
        stdin: None,
    };
    let reader = open_for_import(path, info.compression)?;
    let provisioner = cluster.provisioner().clone();
    let name = cluster.instance_name().clone();
    let output = tokio::task::spawn_blocking(move || {
        provisioner
            .limactl()
            .shell_streaming(&name, &argv, reader, &options)
    })
    .await
    .expect("the import does not panic")?;
    output.check()?;

    verify(cluster, path, &references).await?;
    cluster
        .imported_digests()
        .lock()
        .expect("the import record is never poisoned")
        .insert(info.content_digest);
    Ok(references)
}

/// Fails unless the kubelet's view (`crictl images`) lists every reference.
async fn verify(cluster: &Cluster, path: &Path, references: &[String]) -> Result<()> {
    let provisioner = cluster.provisioner().clone();
    let name = cluster.instance_name().clone();
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
            path: path.to_owned(),
            missing,
        }))
    }
}
