//! Writers of small OCI and docker-archive image tars, re-exported from the harness.

pub use k3s_harness::testing::*;
