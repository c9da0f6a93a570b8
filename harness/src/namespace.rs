//! [`TestNamespace`]: a namespace that belongs to one test and is deleted after it.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::{kubeconfig, readiness};

/// Label that marks namespaces created by the harness.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Label that names the Lima instance a namespace was created on.
pub const INSTANCE_LABEL: &str = "k3s-harness.io/instance";

/// Bound on waiting for a new namespace's `default` service account.
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on deleting a namespace from `Drop`.
const DROP_DELETE_TIMEOUT: Duration = Duration::from_secs(30);

/// A namespace created for one test.
///
/// Its name is the requested prefix plus a random suffix, so tests that run at the same time
/// never share one. Dropping the guard deletes the namespace (on a helper thread with its own
/// runtime and client, because `Drop` cannot await and the test's runtime may be shutting down);
/// [`delete`](Self::delete) does the same and reports errors.
pub struct TestNamespace {
    name: String,
    client: kube::Client,
    kubeconfig: PathBuf,
    deleted: bool,
}

impl TestNamespace {
    pub(crate) async fn create(cluster: &Cluster, prefix: &str) -> Result<TestNamespace> {
        let name = unique_name(prefix)?;
        let mut config = kubeconfig::client_config(cluster.kubeconfig_path()).await?;
        config.default_namespace = name.clone();
        let client = kube::Client::try_from(config)
            .map_err(|error| Error::kube("building a client", error))?;
        let namespaces: Api<Namespace> = Api::all(client.clone());

        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    [
                        (MANAGED_BY_LABEL.to_owned(), "k3s-harness".to_owned()),
                        (INSTANCE_LABEL.to_owned(), cluster.name().to_owned()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|error| Error::kube(format!("creating namespace {name}"), error))?;

        let guard = TestNamespace {
            name,
            client,
            kubeconfig: cluster.kubeconfig_path().to_owned(),
            deleted: false,
        };
        readiness::wait_for_default_service_account(
            &guard.client,
            cluster.name(),
            &guard.name,
            Instant::now() + SERVICE_ACCOUNT_TIMEOUT,
            SERVICE_ACCOUNT_TIMEOUT,
        )
        .await?;
        Ok(guard)
    }

    /// Returns the namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns a client whose default namespace is this one.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Deletes the namespace now and reports the outcome. Deleting a namespace that is already
    /// gone succeeds.
    pub async fn delete(mut self) -> Result<()> {
        self.deleted = true;
        delete_namespace(&self.client, &self.name).await
    }
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TestNamespace")
            .field("name", &self.name)
            .field("kubeconfig", &self.kubeconfig)
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();

        // A client built on the test's runtime may hold pooled connections driven by that
        // runtime, which is blocked here, so the helper thread builds its own client.
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let config = kubeconfig::client_config(&kubeconfig)
                    .await
                    .map_err(|error| error.to_string())?;
                let client = kube::Client::try_from(config).map_err(|error| error.to_string())?;
                tokio::time::timeout(DROP_DELETE_TIMEOUT, delete_namespace(&client, &name))
                    .await
                    .map_err(|_| format!("timed out after {DROP_DELETE_TIMEOUT:?}"))?
                    .map_err(|error| error.to_string())
            })
        });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(namespace = %self.name, %error, "failed to delete the test namespace");
            }
            Err(_) => tracing::error!(namespace = %self.name, "namespace deletion thread panicked"),
        }
    }
}

async fn delete_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(Error::kube(format!("deleting namespace {name}"), error)),
    }
}

/// `<prefix>-<5 random characters>`, checked against Kubernetes' DNS label rules.
fn unique_name(prefix: &str) -> Result<String> {
    const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

    let valid_prefix = !prefix.is_empty()
        && prefix.len() <= 57
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_prefix {
        return Err(Error::InvalidConfig {
            name: "namespace prefix".to_owned(),
            value: prefix.to_owned(),
            reason: "use 1 to 57 lowercase letters, digits and '-', starting with a letter (a \
                     Kubernetes DNS label with room for a 6-character suffix)"
                .to_owned(),
        });
    }

    let mut random = RandomState::new().build_hasher().finish();
    let mut name = format!("{}-", prefix.trim_end_matches('-'));
    for _ in 0..5 {
        name.push(SUFFIX_ALPHABET[(random % SUFFIX_ALPHABET.len() as u64) as usize] as char);
        random /= SUFFIX_ALPHABET.len() as u64;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels() {
        let first = unique_name("smoke").unwrap();
        let second = unique_name("smoke").unwrap();

        assert!(first.starts_with("smoke-"), "{first}");
        assert_eq!(first.len(), "smoke-".len() + 5);
        assert_ne!(first, second);
    }

    #[test]
    fn invalid_prefixes_are_rejected() {
        for prefix in ["", "Smoke", "1abc", "a_b", &"a".repeat(58)] {
            let error = unique_name(prefix).unwrap_err().to_string();
            assert!(error.contains("DNS label"), "{prefix:?}: {error}");
        }
    }
}
