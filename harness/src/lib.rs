//! Throwaway k3s clusters in Lima VMs for end-to-end tests.
//!
//! ```no_run
//! use k3s_harness::{Cluster, ClusterSpec};
//!
//! # async fn example() -> k3s_harness::Result<()> {
//! let cluster = Cluster::start(ClusterSpec::default()).await?;
//! cluster.import_image("target/images/operator.tar").await?;
//! let namespace = cluster.namespace("e2e").await?;
//! let client: kube::Client = namespace.client();
//! // ... the test ...
//! cluster.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The harness drives the real `limactl` (Lima 2.0 or newer; `LIMACTL` names another binary,
//! `LIMA_HOME` another home). It boots `template:k3s` with the API server forwarded to a host
//! port of its own, rewrites the kubeconfig for that port, waits until the cluster can run pods,
//! and deletes the VM when the [`Cluster`] is dropped or shut down.

mod booting;
mod cluster;
mod converge;
mod diagnostics;
mod error;
mod gc;
pub mod image;
mod kubeconfig;
mod namespace;
mod nodes;
mod progress;
mod readiness;
mod reaper;
mod run;
mod shared;
mod spec;
mod state;

#[doc(hidden)]
pub mod cli;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use cluster::{Cluster, INSTANCE_PREFIX};
pub use converge::{
    ConvergeError, ConvergeOptions, ConvergeReport, DEFAULT_CONVERGE_TIMEOUT, INVENTORY_GROUP,
    JETP_ENV,
};
pub use error::{Error, Result};
pub use gc::GcReport;
pub use image::ImageError;
pub use lima_provisioner::ShellOutput;
pub use namespace::{INSTANCE_LABEL, MANAGED_BY_LABEL, TestNamespace};
pub use nodes::{Node, NodeRole};
pub use shared::{INSTANCE_ENV, KUBECONFIG_ENV};
pub use spec::{
    ClusterSpec, DEFAULT_IMPORT_TIMEOUT, DEFAULT_READY_TIMEOUT, DEFAULT_START_TIMEOUT,
    DEFAULT_TEMPLATE, DestroyPolicy,
};
