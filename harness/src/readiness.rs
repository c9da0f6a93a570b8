//! Waiting until a freshly started k3s can take a test's workload.
//!
//! Lima's k3s template only probes that `/etc/rancher/k3s/k3s.yaml` exists, so `limactl start`
//! returning 0 proves little about the API server. Ready here means, in order: `/readyz` answers
//! `ok`, every node of the cluster has registered and is `Ready`, a CoreDNS pod is running and ready, and the `default` namespace
//! has its `default` service account (pods are rejected until it exists).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::progress::{self, Phase};

/// First pause between two polls; it doubles up to [`MAX_POLL_INTERVAL`].
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Maximum pause between two polls, so a ready cluster is noticed within a second.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Bound on one API request during the readiness wait, so a hung connection cannot use up the
/// whole wait.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for the cluster behind `client` to be ready with at least `nodes` nodes, within
/// `timeout` overall.
pub(crate) async fn wait_ready(
    client: &Client,
    instance: &str,
    nodes: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;

    progress::enter(instance, Phase::ApiServer, None);
    poll(
        instance,
        "the API server's /readyz",
        deadline,
        timeout,
        || api_server_ready(client),
    )
    .await?;
    progress::enter(instance, Phase::Nodes, None);
    poll(
        instance,
        "every node to be Ready",
        deadline,
        timeout,
        || nodes_ready(client, nodes),
    )
    .await?;
    progress::enter(instance, Phase::CoreDns, None);
    poll(instance, "CoreDNS to run", deadline, timeout, || {
        coredns_ready(client)
    })
    .await?;
    progress::enter(instance, Phase::ServiceAccount, None);
    wait_for_default_service_account(client, instance, "default", deadline, timeout).await
}

/// Waits until namespace `namespace` has its `default` service account.
pub(crate) async fn wait_for_default_service_account(
    client: &Client,
    instance: &str,
    namespace: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<()> {
    let what = format!("the default service account in namespace {namespace}");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    poll(instance, &what, deadline, timeout, || async {
        match accounts.get_opt("default").await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("not created yet".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await
}

/// The observation of a readiness check that did not pass.
#[derive(Debug)]
pub(crate) enum Seen {
    /// Not ready yet; waiting may help.
    Retry(String),
    /// Waiting cannot help, so the wait stops at once with this observation.
    Fatal(String),
}

impl From<String> for Seen {
    fn from(text: String) -> Self {
        Seen::Retry(text)
    }
}

/// Calls `check` until it succeeds or `deadline` passes, backing off between calls.
///
/// `check` describes what it observed when it fails. The last description goes into the timeout
/// error, so the reader learns how far the cluster got; a [`Seen::Fatal`] observation ends the
/// wait at once.
pub(crate) async fn poll<F, Fut, E>(
    instance: &str,
    what: &str,
    deadline: Instant,
    budget: Duration,
    mut check: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<(), E>>,
    E: Into<Seen>,
{
    let timeout = |last: String| Error::Timeout {
        instance: instance.to_owned(),
        what: what.to_owned(),
        waited: budget,
        last,
    };
    let mut interval = FIRST_POLL_INTERVAL;
    let mut last: Option<String> = None;
    loop {
        let request_deadline = deadline.min(Instant::now() + REQUEST_TIMEOUT);
        match tokio::time::timeout_at(request_deadline, check()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(seen)) => match seen.into() {
                Seen::Retry(text) => last = Some(text),
                Seen::Fatal(text) => {
                    return Err(Error::Timeout {
                        instance: instance.to_owned(),
                        what: what.to_owned(),
                        waited: Duration::ZERO,
                        last: format!("{text}; waiting longer cannot help, so the wait stopped"),
                    });
                }
            },
            // A request cut short by the overall deadline adds no information, so the previous
            // attempt's observation stays.
            Err(_) if Instant::now() >= deadline && last.is_some() => {}
            Err(_) => last = Some(format!("a request took longer than {REQUEST_TIMEOUT:?}")),
        }

        let now = Instant::now();
        if now >= deadline {
            return Err(timeout(last.unwrap_or_default()));
        }
        tracing::debug!(instance, what, last = ?last, "not ready yet");
        tokio::time::sleep(interval.min(deadline - now)).await;
        if Instant::now() >= deadline {
            return Err(timeout(last.unwrap_or_default()));
        }
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    }
}

async fn api_server_ready(client: &Client) -> std::result::Result<(), Seen> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|error| Seen::Fatal(error.to_string()))?;
    match client.request_text(request).await {
        Ok(body) if body.trim() == "ok" => Ok(()),
        Ok(body) => Err(Seen::Retry(format!("/readyz answered {:?}", body.trim()))),
        Err(error) => Err(describe_connection_error(&error)),
    }
}

async fn nodes_ready(client: &Client, expected: usize) -> std::result::Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(|error| error.to_string())?;
    if list.items.len() < expected {
        return Err(format!(
            "{} of {expected} nodes have registered",
            list.items.len()
        ));
    }

    let not_ready: Vec<String> = list
        .items
        .iter()
        .filter(|node| !node_is_ready(node))
        .map(|node| node.metadata.name.clone().unwrap_or_default())
        .collect();
    if not_ready.is_empty() {
        Ok(())
    } else {
        Err(format!("nodes not Ready: {}", not_ready.join(", ")))
    }
}

/// Whether a node reports condition `Ready=True`.
pub(crate) fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

async fn coredns_ready(client: &Client) -> std::result::Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let list = pods
        .list(&ListParams::default().labels("k8s-app=kube-dns"))
        .await
        .map_err(|error| error.to_string())?;
    if list.items.iter().any(pod_is_ready) {
        Ok(())
    } else if list.items.is_empty() {
        Err("no CoreDNS pod (label k8s-app=kube-dns) exists yet".to_owned())
    } else {
        Err(format!(
            "{} CoreDNS pods exist, none Running and Ready",
            list.items.len()
        ))
    }
}

fn pod_is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status.conditions.as_ref().is_some_and(|conditions| {
            conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
        })
}

/// Describes a failed request with its whole chain of causes; see [`classify_failure`].
fn describe_connection_error(error: &kube::Error) -> Seen {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    classify_failure(text)
}

/// Decides whether a failed request is worth retrying. Two certificate failures are fatal,
/// because waiting does not change them:
///
/// - a certificate that this instance's CA did not sign: the port is served by something other
///   than this instance's k3s, typically another cluster that Lima forwarded to the same port;
/// - a certificate that does not cover the kubeconfig's server address. rustls then lists the
///   names and addresses the certificate covers (its subjectAltName entries), which stay in
///   the message. k3s's default list is shown in <https://github.com/k3s-io/k3s/issues/1381>.
fn classify_failure(mut text: String) -> Seen {
    if text.contains("NotValidForName") || text.contains("certificate not valid for name") {
        text.push_str(
            " (k3s signs its serving certificate for localhost, the `kubernetes` service \
             names, 127.0.0.1, its node address and its service address, so the kubeconfig \
             must reach the API server through 127.0.0.1 and the forwarded port; another \
             address needs k3s's `--tls-san` at install time)",
        );
        return Seen::Fatal(text);
    }
    if text.contains("UnknownIssuer") || text.contains("certificate verify failed") {
        text.push_str(
            " (the API port answers with a certificate this instance's CA did not sign, so \
             another cluster or program owns the port)",
        );
        return Seen::Fatal(text);
    }
    Seen::Retry(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};

    fn node_with(condition: Option<(&str, &str)>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: condition.map(|(type_, status)| {
                    vec![NodeCondition {
                        type_: type_.to_owned(),
                        status: status.to_owned(),
                        ..NodeCondition::default()
                    }]
                }),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn node_readiness_needs_ready_true() {
        assert!(node_is_ready(&node_with(Some(("Ready", "True")))));
        assert!(!node_is_ready(&node_with(Some(("Ready", "False")))));
        assert!(!node_is_ready(&node_with(Some(("MemoryPressure", "True")))));
        assert!(!node_is_ready(&node_with(None)));
        assert!(!node_is_ready(&Node::default()));
    }

    #[tokio::test]
    async fn poll_reports_last_observation_on_timeout() {
        let budget = Duration::from_millis(200);
        let deadline = Instant::now() + budget;
        let mut calls = 0;

        let error = poll("k3sh-a", "the thing", deadline, budget, || {
            calls += 1;
            let seen = format!("attempt {calls}");
            async move { Err::<(), _>(seen) }
        })
        .await
        .unwrap_err();

        let message = error.to_string();
        assert!(message.contains("the thing"), "{message}");
        assert!(message.contains("k3sh-a"), "{message}");
        assert!(message.contains(&format!("attempt {calls}")), "{message}");
        assert!(calls >= 2, "polled {calls} times");
    }

    #[tokio::test]
    async fn fatal_observation_stops_wait_at_once() {
        let budget = Duration::from_secs(30);
        let deadline = Instant::now() + budget;
        let mut calls = 0;

        let error = poll("k3sh-a", "the API server", deadline, budget, || {
            calls += 1;
            async { Err::<(), _>(Seen::Fatal("UnknownIssuer".to_owned())) }
        })
        .await
        .unwrap_err()
        .to_string();

        assert_eq!(calls, 1);
        assert!(error.contains("UnknownIssuer"), "{error}");
        assert!(error.contains("cannot help"), "{error}");
    }

    #[test]
    fn certificate_name_mismatch_is_fatal() {
        let text = "error trying to connect: invalid peer certificate: certificate not valid \
                    for name \"192.0.2.15\"; certificate is only valid for \
                    IpAddress(127.0.0.1) or IpAddress(192.0.2.99)"
            .to_owned();

        let Seen::Fatal(message) = classify_failure(text) else {
            panic!("a name mismatch is retried");
        };

        assert!(message.contains("IpAddress(192.0.2.99)"), "{message}");
        assert!(message.contains("--tls-san"), "{message}");
    }

    #[test]
    fn refused_connection_is_retried() {
        let text = "error trying to connect: tcp connect error: Connection refused".to_owned();

        assert!(matches!(classify_failure(text), Seen::Retry(_)));
    }

    #[tokio::test]
    async fn slow_last_request_keeps_previous_observation() {
        let budget = Duration::from_millis(300);
        let deadline = Instant::now() + budget;
        let mut calls = 0;

        let error = poll("k3sh-a", "the API server", deadline, budget, || {
            calls += 1;
            let first = calls == 1;
            async move {
                if first {
                    Err::<(), _>("connection refused".to_owned())
                } else {
                    std::future::pending::<()>().await;
                    Ok(())
                }
            }
        })
        .await
        .unwrap_err()
        .to_string();

        assert!(error.contains("connection refused"), "{error}");
    }

    #[tokio::test]
    async fn poll_returns_once_check_passes() {
        let budget = Duration::from_secs(5);
        let deadline = Instant::now() + budget;
        let mut calls = 0;

        poll("k3sh-a", "the thing", deadline, budget, || {
            calls += 1;
            let done = calls >= 3;
            async move {
                if done {
                    Ok(())
                } else {
                    Err::<(), _>("not yet".to_owned())
                }
            }
        })
        .await
        .unwrap();

        assert_eq!(calls, 3);
    }
}
