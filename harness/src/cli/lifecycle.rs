//! `down` and `gc`, which delete harness clusters, and `logs`, which collects what a developer
//! needs before deleting one.

use std::process::ExitCode;

use lima_provisioner::InstanceName;

use super::{CliError, Context, print_line};
use crate::booting;

/// Deletes a cluster that the harness started; other Lima instances are never touched.
pub(super) fn down(name: &str, context: &Context) -> Result<ExitCode, CliError> {
    let state = context.state()?;
    let record = state.read_record(name)?;
    let instance = InstanceName::new(name, &record.lima_home).map_err(crate::Error::from)?;
    booting::destroy_cluster(
        &record.provisioner(),
        &instance,
        &record.agent_names()?,
        &state.instance_dir(name),
    )
    .map_err(crate::Error::from)?;
    state.remove_instance_dir(name)?;
    eprintln!("Deleted instance `{name}`.");
    Ok(ExitCode::SUCCESS)
}

/// Collects diagnostics for a harness cluster, prints their directory on stdout and a summary
/// on stderr.
pub(super) fn logs(name: &str, context: &Context) -> Result<ExitCode, CliError> {
    let state = context.state()?;
    let collection = crate::diagnostics::collect_named(&state, name)?;
    print_line(&collection.dir.display().to_string());
    eprintln!("{}", collection.describe());
    Ok(ExitCode::SUCCESS)
}

/// Deletes the clusters whose run has ended, and prints what it deleted and kept.
pub(super) fn gc(context: &Context) -> Result<ExitCode, CliError> {
    let state = context.state()?;
    let report = crate::gc::collect(&state);
    for name in &report.deleted {
        print_line(&format!("deleted {name}"));
    }
    for (name, reason) in &report.kept {
        print_line(&format!("kept {name}: {reason}"));
    }
    for (name, error) in &report.failed {
        eprintln!("error: failed to delete {name}: {error}");
    }
    if report.failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::GcIncomplete {
            failed: report.failed.len(),
        })
    }
}
