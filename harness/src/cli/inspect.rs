//! `status`, `list` and `kubeconfig`: describing harness clusters.
//!
//! `status` and `list` print a table, or with `--json` one JSON object per instance (`status`)
//! or a JSON array of them sorted by name (`list`). The JSON field names are stable; the
//! fields are those of [`InstanceReport`], documented in [`JSON_HELP`].

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use lima_provisioner::{Instance, InstanceName};
use serde::Serialize;

use super::{CliError, Context, print_line};
use crate::cluster::blocking;
use crate::error::Error;
use crate::spec::DestroyPolicy;
use crate::state::{ClusterRecord, FAILED_FILE, StateDir};

/// The long help of `--json`, which documents the fields.
const JSON_HELP: &str = "\
Print JSON instead of a table: one object per instance, with these stable fields:
  name            Lima instance name
  lima_status     Lima's status (Running, Stopped, Broken, ...), NotFound when limactl does
                  not list the instance, null when limactl failed (see lima_error)
  lima_error      why limactl could not be asked, or null
  api_port        host TCP port forwarded to the API server
  kubeconfig      path of the rewritten kubeconfig
  ready           false while the VM boots, or after its booting process died
  kept            true once the cluster outlives its run (`up`, or a destroy policy)
  reuse           true when the VM is kept across test runs (K3S_HARNESS_REUSE)
  destroy_policy  always, on-success or never
  test_failed     true once a test of the run failed
  owner_pid       pid of the process whose exit ends the run
  owner_running   whether that process still runs
  run_key         key of the test run that shares the cluster, or null
  fingerprint     hash of the spec the VM was booted from
  platform        containerd platform of the guest, such as linux/amd64
  lima_home       LIMA_HOME of the instance
  limactl         limactl binary that manages the instance";

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    /// The Lima instance name printed by `up`.
    name: String,
    /// Print a JSON object instead of a table
    #[arg(long, long_help = JSON_HELP)]
    json: bool,
}

/// Arguments of `list`.
#[derive(Debug, clap::Args)]
pub(super) struct ListArgs {
    /// Print a JSON array of objects, sorted by name, instead of a table
    #[arg(long, long_help = JSON_HELP)]
    json: bool,
}

/// Arguments of `kubeconfig`.
#[derive(Debug, clap::Args)]
pub(super) struct KubeconfigArgs {
    /// The Lima instance name printed by `up`.
    name: String,
    /// Print a shell line, `export KUBECONFIG='PATH'`, for `eval "$(k3s-harness kubeconfig
    /// --export NAME)"`, instead of the bare path
    #[arg(long)]
    export: bool,
}

/// One harness instance as `status` and `list` report it; see [`JSON_HELP`] for the fields.
#[derive(Debug, Serialize)]
struct InstanceReport {
    name: String,
    lima_status: Option<String>,
    lima_error: Option<String>,
    api_port: u16,
    kubeconfig: String,
    ready: bool,
    kept: bool,
    reuse: bool,
    destroy_policy: DestroyPolicy,
    test_failed: bool,
    owner_pid: u32,
    owner_running: bool,
    run_key: Option<String>,
    fingerprint: String,
    platform: String,
    lima_home: String,
    limactl: String,
}

/// The status limactl reports for one instance.
enum LimaStatus {
    /// `limactl list` shows the instance with this status.
    Listed(String),
    /// `limactl list` does not show the instance.
    NotFound,
    /// limactl could not be asked.
    Unknown(String),
}

impl InstanceReport {
    fn new(record: &ClusterRecord, state: &StateDir, lima: LimaStatus) -> Self {
        let (lima_status, lima_error) = match lima {
            LimaStatus::Listed(status) => (Some(status), None),
            LimaStatus::NotFound => (Some("NotFound".to_owned()), None),
            LimaStatus::Unknown(error) => (None, Some(error)),
        };
        InstanceReport {
            name: record.instance.clone(),
            lima_status,
            lima_error,
            api_port: record.api_port,
            kubeconfig: record.kubeconfig.display().to_string(),
            ready: record.ready,
            kept: record.kept,
            reuse: record.reuse,
            destroy_policy: record.destroy_policy,
            test_failed: state
                .instance_dir(&record.instance)
                .join(FAILED_FILE)
                .exists(),
            owner_pid: record.owner.pid,
            owner_running: record.owner.is_alive(),
            run_key: record.run_key.clone(),
            fingerprint: record.fingerprint.clone(),
            platform: record.platform.clone(),
            lima_home: record.lima_home.display().to_string(),
            limactl: record.limactl.display().to_string(),
        }
    }

    /// Returns the value of the `lima_status` field, or `unknown`, for tables.
    fn lima_column(&self) -> &str {
        self.lima_status.as_deref().unwrap_or("unknown")
    }

    /// `1234`, or `1234 (exited)` once the owner is gone.
    fn owner_column(&self) -> String {
        if self.owner_running {
            self.owner_pid.to_string()
        } else {
            format!("{} (exited)", self.owner_pid)
        }
    }
}

/// Prints one instance's report.
///
/// TODO: a multi-node cluster reports its server's Lima status only; the agents' statuses
/// belong in the table and in `--json`.
pub(super) async fn status(args: StatusArgs, context: &Context) -> Result<ExitCode, CliError> {
    let state = context.state()?;
    let record = state.read_record(&args.name)?;
    let lima = blocking(|| lima_status(&record)).await;
    let report = InstanceReport::new(&record, &state, lima);

    if args.json {
        print_line(&serde_json::to_string_pretty(&report).expect("a report serialises"));
        return Ok(ExitCode::SUCCESS);
    }
    let yes_no = |value: bool| if value { "yes" } else { "no" }.to_owned();
    let mut rows = vec![
        ("name", report.name.clone()),
        ("lima status", report.lima_column().to_owned()),
    ];
    if let Some(error) = &report.lima_error {
        rows.push(("lima error", error.clone()));
    }
    rows.extend([
        ("api port", report.api_port.to_string()),
        ("kubeconfig", report.kubeconfig.clone()),
        ("ready", yes_no(report.ready)),
        ("kept", yes_no(report.kept)),
        ("reuse", yes_no(report.reuse)),
        ("destroy policy", report.destroy_policy.to_string()),
        ("test failed", yes_no(report.test_failed)),
        ("owner", report.owner_column()),
        (
            "run",
            report.run_key.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("fingerprint", report.fingerprint.clone()),
        ("platform", report.platform.clone()),
        ("lima home", report.lima_home.clone()),
        ("limactl", report.limactl.clone()),
    ]);
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    for (key, value) in rows {
        print_line(&format!("{:<width$}  {value}", format!("{key}:")));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints every instance with a harness record in the state directory.
pub(super) async fn list(args: ListArgs, context: &Context) -> Result<ExitCode, CliError> {
    let state = context.state()?;
    let mut records = Vec::new();
    for name in state.instance_names() {
        match state.read_record_opt(&name) {
            Ok(Some(record)) => records.push(record),
            // A directory without a record holds only the lock of a boot that failed.
            Ok(None) => {}
            Err(error) => eprintln!("warning: skipping `{name}`: {error}"),
        }
    }
    let mut statuses = blocking(|| lima_statuses(&records)).await;
    let reports: Vec<InstanceReport> = records
        .iter()
        .zip(statuses.drain(..))
        .map(|(record, lima)| InstanceReport::new(record, &state, lima))
        .collect();

    if args.json {
        print_line(&serde_json::to_string_pretty(&reports).expect("a report serialises"));
        return Ok(ExitCode::SUCCESS);
    }
    if reports.is_empty() {
        eprintln!(
            "No harness clusters in {}; boot one with `k3s-harness up`.",
            state.root().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        [
            "NAME",
            "LIMA",
            "API",
            "STATE",
            "POLICY",
            "OWNER",
            "RUN",
            "KUBECONFIG",
        ]
        .map(str::to_owned),
    ];
    for report in &reports {
        rows.push([
            report.name.clone(),
            report.lima_column().to_owned(),
            report.api_port.to_string(),
            state_column(report),
            report.destroy_policy.to_string(),
            report.owner_column(),
            report.run_key.clone().unwrap_or_else(|| "-".to_owned()),
            report.kubeconfig.clone(),
        ]);
    }
    print_line(render_table(&rows).trim_end());
    Ok(ExitCode::SUCCESS)
}

/// `ready` or `booting`, with `kept`, `reuse` and `test failed` appended when they hold.
fn state_column(report: &InstanceReport) -> String {
    let mut words = vec![if report.ready { "ready" } else { "booting" }];
    if report.kept {
        words.push("kept");
    }
    if report.reuse {
        words.push("reuse");
    }
    if report.test_failed {
        words.push("test failed");
    }
    words.join(",")
}

/// Lays out rows in columns two spaces apart; the last column is not padded.
fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Asks the record's limactl about its instance.
fn lima_status(record: &ClusterRecord) -> LimaStatus {
    let found = InstanceName::new(&record.instance, &record.lima_home)
        .and_then(|name| record.provisioner().limactl().instance(&name));
    match found {
        Ok(Some(instance)) => listed(&instance),
        Ok(None) => LimaStatus::NotFound,
        Err(error) => LimaStatus::Unknown(error.to_string()),
    }
}

/// Asks limactl about every recorded instance, with one `limactl list` per Lima installation.
fn lima_statuses(records: &[ClusterRecord]) -> Vec<LimaStatus> {
    type Installation = (PathBuf, PathBuf, Vec<(String, String)>);
    let mut listings: BTreeMap<Installation, Result<Vec<Instance>, String>> = BTreeMap::new();
    records
        .iter()
        .map(|record| {
            let installation = (
                record.limactl.clone(),
                record.lima_home.clone(),
                record.limactl_env.clone(),
            );
            let listing = listings.entry(installation).or_insert_with(|| {
                record
                    .provisioner()
                    .limactl()
                    .list(&[])
                    .map_err(|error| error.to_string())
            });
            match listing {
                Ok(instances) => instances
                    .iter()
                    .find(|instance| instance.name == record.instance)
                    .map_or(LimaStatus::NotFound, listed),
                Err(error) => LimaStatus::Unknown(error.clone()),
            }
        })
        .collect()
}

fn listed(instance: &Instance) -> LimaStatus {
    match &instance.status {
        Some(status) => LimaStatus::Listed(status.to_string()),
        None => LimaStatus::Unknown("`limactl list` shows the instance without a status".into()),
    }
}

/// Prints the kubeconfig's path, or a shell line that exports it.
pub(super) fn kubeconfig(args: KubeconfigArgs, context: &Context) -> Result<ExitCode, CliError> {
    let state = context.state()?;
    let record = state.read_record(&args.name)?;
    if !record.ready {
        return Err(CliError::NotReady {
            instance: args.name,
        });
    }
    if !record.kubeconfig.is_file() {
        return Err(Error::Kubeconfig {
            path: record.kubeconfig,
            reason: format!(
                "the file is missing; delete the cluster with `k3s-harness down {}` and boot a \
                 new one",
                args.name
            ),
        }
        .into());
    }

    let path = record.kubeconfig.as_os_str().as_bytes();
    let mut line = if args.export {
        let mut line = b"export KUBECONFIG=".to_vec();
        line.extend(single_quoted(path));
        line
    } else {
        path.to_vec()
    };
    line.push(b'\n');
    let _ = std::io::stdout().write_all(&line);
    Ok(ExitCode::SUCCESS)
}

/// Quotes `value` for POSIX shells: inside single quotes every byte is literal, and a single
/// quote is written as `'\''`.
fn single_quoted(value: &[u8]) -> Vec<u8> {
    let mut quoted = vec![b'\''];
    for &byte in value {
        if byte == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_quotes_survive_quoting() {
        assert_eq!(single_quoted(b"/a b/c"), b"'/a b/c'");
        assert_eq!(single_quoted(b"it's"), b"'it'\\''s'");
        assert_eq!(single_quoted(b"$HOME`x`"), b"'$HOME`x`'");
    }

    #[test]
    fn table_aligns_columns_and_leaves_last_unpadded() {
        let rows = [
            ["NAME", "API", "PATH"].map(str::to_owned),
            ["k3sh-a", "1", "/p"].map(str::to_owned),
        ];

        assert_eq!(render_table(&rows), "NAME    API  PATH\nk3sh-a  1    /p\n");
    }
}
