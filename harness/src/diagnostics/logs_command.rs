//! `k3s-harness logs NAME`: a collection for an instance named on the command line.

use std::io::Write;

use lima_provisioner::InstanceName;

use super::collect::{Source, Trigger, collect};
use crate::error::Result;
use crate::state::StateDir;

/// Collects diagnostics for the harness instance `name`, which must have a record in the state
/// directory, then prints the collection's directory on stdout and a summary on stderr.
///
/// # Errors
///
/// [`Error::UnknownInstance`](crate::Error::UnknownInstance) when the state directory has no
/// record of `name`, and the errors of [`collect`]. Collectors that fail (a VM that no longer
/// runs, for one) are listed in the summary, not returned.
pub(crate) fn run_logs_command(name: &str) -> Result<()> {
    let state = StateDir::from_env()?;
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

    let collection = collect(&source, Trigger::Requested)?;

    // A closed stdout (`k3s-harness logs NAME | head -0`) is not an error.
    let _ = writeln!(std::io::stdout(), "{}", collection.dir.display());
    eprintln!("{}", collection.describe());
    Ok(())
}
