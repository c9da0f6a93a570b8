//! Collections for an instance named on the command line (`k3s-harness logs NAME`).

use lima_provisioner::InstanceName;

use super::collect::{Collection, Source, Trigger, collect};
use crate::error::Result;
use crate::state::StateDir;

/// Collects diagnostics for the harness instance `name`, which must have a record in `state`,
/// and its agents if it has any.
///
/// # Errors
///
/// [`Error::UnknownInstance`](crate::Error::UnknownInstance) when the state directory has no
/// record of `name`, and the errors of [`collect`]. Collectors that fail (a VM that no longer
/// runs, for one) are listed in the collection's summary, not returned.
pub(crate) fn collect_named(state: &StateDir, name: &str) -> Result<Collection> {
    let record = state.read_record(name)?;
    let instance = InstanceName::new(name, &record.lima_home)?;
    let provisioner = record.provisioner();
    let dir = state.instance_dir(name);
    let agents = record.agent_names()?;
    let source = Source {
        limactl: provisioner.limactl(),
        instance: &instance,
        agents: &agents,
        state_dir: &dir,
    };
    collect(&source, Trigger::Requested)
}
