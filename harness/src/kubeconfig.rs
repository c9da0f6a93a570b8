//! Turning the kubeconfig that Lima copies out of the guest into one a test can use.
//!
//! k3s writes `server: https://127.0.0.1:6443` with cluster, context and user all named
//! `default`. The harness keeps the host `127.0.0.1` (k3s's serving certificate names it, while
//! the guest's address or `lima-NAME.internal` would fail verification), changes only the port
//! to the instance's pinned forward, and renames the entries after the instance so several
//! clusters can be merged into one `KUBECONFIG`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};

/// Reads the guest kubeconfig at `source`, rewrites it for `instance` on host port `api_port`,
/// and writes it to `target` with mode 0600.
///
/// The file is written to a temporary sibling and renamed, so a concurrent reader never sees a
/// half-written kubeconfig.
pub(crate) fn rewrite_file(
    source: &Path,
    target: &Path,
    instance: &str,
    api_port: u16,
) -> Result<Kubeconfig> {
    let text = fs::read_to_string(source)
        .map_err(|error| Error::io("read the kubeconfig copied from the guest", source, error))?;
    let kubeconfig = rewrite(&text, source, instance, api_port)?;
    write_private(target, &kubeconfig)?;
    Ok(kubeconfig)
}

/// Rewrites kubeconfig text: the one cluster's server port becomes `api_port` on 127.0.0.1, and
/// the cluster, context and user are renamed to `instance`.
pub(crate) fn rewrite(
    text: &str,
    path: &Path,
    instance: &str,
    api_port: u16,
) -> Result<Kubeconfig> {
    let invalid = |reason: String| Error::Kubeconfig {
        path: path.to_owned(),
        reason,
    };

    let mut kubeconfig = Kubeconfig::from_yaml(text).map_err(|error| invalid(error.to_string()))?;
    if kubeconfig.clusters.len() != 1
        || kubeconfig.contexts.len() != 1
        || kubeconfig.auth_infos.len() != 1
    {
        return Err(invalid(format!(
            "expected one cluster, context and user as k3s writes them, found {} clusters, {} \
             contexts and {} users",
            kubeconfig.clusters.len(),
            kubeconfig.contexts.len(),
            kubeconfig.auth_infos.len()
        )));
    }

    let cluster = kubeconfig.clusters[0]
        .cluster
        .as_mut()
        .ok_or_else(|| invalid("the cluster entry is empty".to_owned()))?;
    let server = cluster
        .server
        .as_deref()
        .ok_or_else(|| invalid("the cluster has no server URL".to_owned()))?;
    cluster.server = Some(rewrite_server_port(server, api_port).map_err(invalid)?);
    kubeconfig.clusters[0].name = instance.to_owned();

    kubeconfig.auth_infos[0].name = instance.to_owned();

    let context = &mut kubeconfig.contexts[0];
    context.name = instance.to_owned();
    let inner = context
        .context
        .as_mut()
        .ok_or_else(|| invalid("the context entry is empty".to_owned()))?;
    inner.cluster = instance.to_owned();
    inner.user = Some(instance.to_owned());

    kubeconfig.current_context = Some(instance.to_owned());
    Ok(kubeconfig)
}

/// Replaces the port of an `https://HOST[:PORT]` URL and keeps loopback hosts.
///
/// A non-loopback host is rejected: the harness reaches the API server only through Lima's
/// forward on 127.0.0.1, and k3s's certificate does not name the forwarded address otherwise.
fn rewrite_server_port(server: &str, api_port: u16) -> std::result::Result<String, String> {
    let rest = server
        .strip_prefix("https://")
        .ok_or_else(|| format!("server {server:?} is not an https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!(
            "server {server:?} is not a loopback address; k3s writes https://127.0.0.1:6443"
        ));
    }
    Ok(format!("https://127.0.0.1:{api_port}"))
}

/// Writes `kubeconfig` to `target` with mode 0600 through a temporary file and a rename.
pub(crate) fn write_private(target: &Path, kubeconfig: &Kubeconfig) -> Result<()> {
    let yaml = serde_saphyr::to_string(kubeconfig).map_err(|error| Error::Kubeconfig {
        path: target.to_owned(),
        reason: format!("failed to serialise: {error}"),
    })?;

    let temporary = temporary_sibling(target);
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(yaml.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, target)
    };
    write().map_err(|error| {
        let _ = fs::remove_file(&temporary);
        Error::io("write the kubeconfig", target, error)
    })
}

fn temporary_sibling(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    target.with_file_name(name)
}

/// Builds a kube client configuration from a rewritten kubeconfig file, without reading or
/// changing the process-global `KUBECONFIG`.
pub(crate) async fn client_config(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|error| Error::Kubeconfig {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|error| Error::Kubeconfig {
            path: path.to_owned(),
            reason: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape k3s writes to /etc/rancher/k3s/k3s.yaml (certificate data shortened).
    const K3S_KUBECONFIG: &str = "\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
";

    #[test]
    fn rewrite_changes_port_and_names_only() {
        let kubeconfig = rewrite(K3S_KUBECONFIG, Path::new("k3s.yaml"), "k3sh-a", 16443).unwrap();

        let cluster = kubeconfig.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:16443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        assert_eq!(kubeconfig.clusters[0].name, "k3sh-a");
        assert_eq!(kubeconfig.auth_infos[0].name, "k3sh-a");
        assert_eq!(kubeconfig.contexts[0].name, "k3sh-a");
        let context = kubeconfig.contexts[0].context.as_ref().unwrap();
        assert_eq!(context.cluster, "k3sh-a");
        assert_eq!(context.user.as_deref(), Some("k3sh-a"));
        assert_eq!(kubeconfig.current_context.as_deref(), Some("k3sh-a"));
    }

    #[test]
    fn rewrite_keeps_client_credentials() {
        let kubeconfig = rewrite(K3S_KUBECONFIG, Path::new("k3s.yaml"), "k3sh-a", 16443).unwrap();
        let yaml = serde_saphyr::to_string(&kubeconfig).unwrap();

        assert!(yaml.contains("client-key-data: S0VZ"), "{yaml}");
        assert!(yaml.contains("client-certificate-data: Q0VSVA=="), "{yaml}");
    }

    #[test]
    fn rewrite_rejects_guest_address() {
        let text = K3S_KUBECONFIG.replace("127.0.0.1:6443", "192.0.2.15:6443");
        let error = rewrite(&text, Path::new("k3s.yaml"), "k3sh-a", 16443)
            .unwrap_err()
            .to_string();

        assert!(error.contains("192.0.2.15"), "{error}");
        assert!(error.contains("loopback"), "{error}");
    }

    #[test]
    fn rewrite_rejects_empty_agent_kubeconfig() {
        let error = rewrite("", Path::new("k3s.yaml"), "k3sh-a", 16443)
            .unwrap_err()
            .to_string();

        assert!(error.contains("k3s.yaml"), "{error}");
    }

    #[test]
    fn written_file_is_private_and_readable_by_kube() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("kubeconfig.yaml");
        fs::write(&source, K3S_KUBECONFIG).unwrap();
        let target = dir.path().join("rewritten.yaml");

        rewrite_file(&source, &target, "k3sh-a", 16443).unwrap();

        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let reread = Kubeconfig::read_from(&target).unwrap();
        assert_eq!(reread.current_context.as_deref(), Some("k3sh-a"));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary file left"
        );
    }
}
