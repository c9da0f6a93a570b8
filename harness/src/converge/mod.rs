//! Jetpack converge: running a playbook over SSH against the cluster's VM with `jetp ssh`.
//!
//! Each run gets a fresh scratch directory. It contains the inventory (every node in a `k3s`
//! group and a group per role, with the `jet_ssh_*` variables), the extra variables file, a
//! private SSH agent's socket, and the working directory jetp starts in. The harness shells out to the
//! CLI and never links jetporch or the Jetpack fork (both GPL-3.0).

mod binary;
mod error;
mod inventory;
mod output;
mod process;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use crate::cluster::Cluster;
pub use binary::JETP_ENV;
pub use error::ConvergeError;
pub use inventory::INVENTORY_GROUP;
use inventory::{Inventory, InventoryNode};
use process::{SshAgent, TAIL_LINES, describe_status, run_streaming};

/// Default bound on one `jetp ssh` run.
pub const DEFAULT_CONVERGE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Settings of one converge run beyond the playbook.
#[derive(Clone, Debug)]
pub struct ConvergeOptions {
    /// Variables passed to the playbook with `-e @FILE` (a JSON object).
    pub extra_vars: serde_json::Map<String, serde_json::Value>,
    /// Inventory hosts to limit the run to (`--limit-hosts`); empty means every host.
    pub limit_hosts: Vec<String>,
    /// Tags that select the tasks to run (`--tags`); empty means every task.
    pub tags: Vec<String>,
    /// User to run tasks as through sudo on the guest (`--sudo`), for example `root`.
    pub sudo_user: Option<String>,
    /// Bound on the whole jetp run, after which it is killed.
    pub timeout: Duration,
}

impl Default for ConvergeOptions {
    fn default() -> Self {
        ConvergeOptions {
            extra_vars: serde_json::Map::new(),
            limit_hosts: Vec::new(),
            tags: Vec::new(),
            sudo_user: None,
            timeout: DEFAULT_CONVERGE_TIMEOUT,
        }
    }
}

/// Result of a successful converge, counted from jetp's per-task output markers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConvergeReport {
    /// Task results that changed the host (`created`, `modified`, `removed`, and `complete`
    /// for tasks that ran a command).
    pub changed: usize,
    /// Task results that found the host as declared (`matched`).
    pub unchanged: usize,
    /// Names of the tasks that changed the host, each once, in run order.
    pub changed_tasks: Vec<String>,
    /// jetp's whole output, stdout and stderr interleaved, ANSI codes removed.
    pub output: String,
}

/// Runs `playbook` against `cluster`; see [`Cluster::converge_with`].
pub(crate) async fn converge(
    cluster: &Cluster,
    playbook: &Path,
    options: &ConvergeOptions,
) -> Result<ConvergeReport, ConvergeError> {
    validate(options)?;
    let playbook =
        std::fs::canonicalize(playbook).map_err(|source| ConvergeError::PlaybookNotFound {
            path: playbook.to_owned(),
            source,
        })?;
    let program = binary::find(
        std::env::var_os(JETP_ENV).as_deref(),
        std::env::var_os("PATH").as_deref(),
    )?;

    // Every node in one inventory and one jetp run, so that plays can target a role.
    let instance = cluster.name().to_owned();
    let mut nodes = Vec::new();
    for node in cluster.nodes() {
        let provisioner = cluster.provisioner().clone();
        let name = node.instance_name().clone();
        let vars = tokio::task::spawn_blocking(move || provisioner.host_vars(&name))
            .await
            .expect("reading the instance's SSH details does not panic")?;
        nodes.push((node.name().to_owned(), node.role(), vars));
    }
    let inventory = Inventory::new(
        &nodes
            .iter()
            .map(|(name, role, vars)| InventoryNode {
                instance: name,
                role: role.as_str(),
                vars,
            })
            .collect::<Vec<_>>(),
    )?;
    for (host, node) in inventory.hosts() {
        tracing::info!(instance, host, node, "inventory host");
    }
    let host_vars = &nodes[0].2;

    let scratch = tempfile::Builder::new()
        .prefix("k3sh-converge-")
        .tempdir()
        .map_err(|source| ConvergeError::Io {
            action: "create a scratch directory in",
            path: std::env::temp_dir(),
            source,
        })?;
    let inventory_dir = scratch.path().join("inventory");
    inventory.write(&create_dir(inventory_dir)?)?;
    let workdir = create_dir(scratch.path().join("work"))?;
    let extra_vars_file = write_extra_vars(scratch.path(), &options.extra_vars)?;

    let agent = SshAgent::start(scratch.path(), &host_vars.ssh_private_key_file).await?;

    let args = jetp_args(
        &playbook,
        &scratch.path().join("inventory"),
        extra_vars_file.as_deref(),
        options,
    );
    let rendered = shell_words::join(
        std::iter::once(program.to_string_lossy()).chain(args.iter().map(|a| a.to_string_lossy())),
    );
    let mut command = Command::new(&program);
    command.args(&args).current_dir(&workdir);
    if let Some(agent) = &agent {
        command.env("SSH_AUTH_SOCK", agent.socket());
    }

    tracing::info!(instance, command = %rendered, "converging with Jetpack");
    let finished = run_streaming(command, &rendered, &instance, options.timeout, |line| {
        tracing::info!(instance, "{line}");
    })
    .await?;
    drop(agent);

    let failure = if !finished.status.success() {
        Some(describe_status(finished.status))
    } else {
        finished.tally.failure_marker.as_ref().map(|marker| {
            format!(
                "{} but printed `{marker}`",
                describe_status(finished.status)
            )
        })
    };
    if let Some(status) = failure {
        return Err(ConvergeError::Failed {
            instance,
            command: rendered,
            status,
            tail_lines: TAIL_LINES,
            tail: output::tail(&finished.lines, TAIL_LINES),
        });
    }

    tracing::info!(
        instance,
        changed = finished.tally.changed,
        unchanged = finished.tally.unchanged,
        "Jetpack converge finished"
    );
    Ok(ConvergeReport {
        changed: finished.tally.changed,
        unchanged: finished.tally.unchanged,
        changed_tasks: finished.tally.changed_tasks,
        output: finished.lines.join("\n"),
    })
}

/// Converges again and fails if anything changed; see [`Cluster::check_idempotent`].
pub(crate) async fn check_idempotent(
    cluster: &Cluster,
    playbook: &Path,
    options: &ConvergeOptions,
) -> Result<ConvergeReport, ConvergeError> {
    let report = converge(cluster, playbook, options).await?;
    if report.changed > 0 {
        return Err(ConvergeError::NotIdempotent {
            instance: cluster.name().to_owned(),
            playbook: playbook.to_owned(),
            changed: report.changed,
            changed_tasks: report.changed_tasks,
        });
    }
    Ok(report)
}

/// Rejects options that jetp would misread: it splits `--limit-hosts` and `--tags` on `:`.
fn validate(options: &ConvergeOptions) -> Result<(), ConvergeError> {
    const SEPARATOR_REASON: &str = "jetp separates list entries with `:`, so an entry must be \
                                    non-empty and contain no `:`";
    let lists = [
        ("limit_hosts", &options.limit_hosts),
        ("tags", &options.tags),
    ];
    for (name, values) in lists {
        if let Some(value) = values
            .iter()
            .find(|value| value.is_empty() || value.contains(':'))
        {
            return Err(ConvergeError::InvalidOption {
                name,
                value: value.clone(),
                reason: SEPARATOR_REASON,
            });
        }
    }
    if let Some(user) = &options.sudo_user
        && (user.is_empty() || user.chars().any(char::is_whitespace))
    {
        return Err(ConvergeError::InvalidOption {
            name: "sudo_user",
            value: user.clone(),
            reason: "a user name must be non-empty and contain no whitespace",
        });
    }
    if options.timeout.is_zero() {
        return Err(ConvergeError::InvalidOption {
            name: "timeout",
            value: format!("{:?}", options.timeout),
            reason: "the timeout must be longer than zero",
        });
    }
    Ok(())
}

/// Builds the arguments after the program: `ssh --playbook P --inventory I [...]`.
fn jetp_args(
    playbook: &Path,
    inventory: &Path,
    extra_vars_file: Option<&Path>,
    options: &ConvergeOptions,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "ssh".into(),
        "--playbook".into(),
        playbook.into(),
        "--inventory".into(),
        inventory.into(),
    ];
    if let Some(file) = extra_vars_file {
        let mut value = OsString::from("@");
        value.push(file);
        args.extend(["--extra-vars".into(), value]);
    }
    if !options.limit_hosts.is_empty() {
        args.extend(["--limit-hosts".into(), options.limit_hosts.join(":").into()]);
    }
    if !options.tags.is_empty() {
        args.extend(["--tags".into(), options.tags.join(":").into()]);
    }
    if let Some(user) = &options.sudo_user {
        args.extend(["--sudo".into(), user.into()]);
    }
    args
}

/// Writes the extra variables as JSON to `DIR/extra-vars.json`, unless there are none.
///
/// jetp 0.1.1 removes every `@` from the `--extra-vars @PATH` argument before opening the file,
/// so a path containing `@` is rejected here rather than failing inside jetp.
fn write_extra_vars(
    dir: &Path,
    vars: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<PathBuf>, ConvergeError> {
    if vars.is_empty() {
        return Ok(None);
    }
    let path = dir.join("extra-vars.json");
    if path.to_string_lossy().contains('@') {
        return Err(ConvergeError::InvalidOption {
            name: "extra_vars",
            value: path.display().to_string(),
            reason: "jetp drops every `@` from an `--extra-vars @FILE` path; set TMPDIR to a \
                     directory without `@`",
        });
    }
    let json = serde_json::to_vec_pretty(vars).expect("a JSON map always serializes");
    std::fs::write(&path, json).map_err(|source| ConvergeError::Io {
        action: "write the extra variables file",
        path: path.clone(),
        source,
    })?;
    Ok(Some(path))
}

fn create_dir(path: PathBuf) -> Result<PathBuf, ConvergeError> {
    std::fs::create_dir_all(&path).map_err(|source| ConvergeError::Io {
        action: "create the directory",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_minimal() {
        let args = jetp_args(
            Path::new("/p/site.yml"),
            Path::new("/s/inventory"),
            None,
            &ConvergeOptions::default(),
        );

        assert_eq!(
            args,
            [
                "ssh",
                "--playbook",
                "/p/site.yml",
                "--inventory",
                "/s/inventory"
            ]
        );
    }

    #[test]
    fn args_with_every_option() {
        let options = ConvergeOptions {
            limit_hosts: vec!["a".to_owned(), "b".to_owned()],
            tags: vec!["prep".to_owned()],
            sudo_user: Some("root".to_owned()),
            ..ConvergeOptions::default()
        };

        let args = jetp_args(
            Path::new("/p/site.yml"),
            Path::new("/s/inventory"),
            Some(Path::new("/s/extra-vars.json")),
            &options,
        );

        assert_eq!(
            args,
            [
                "ssh",
                "--playbook",
                "/p/site.yml",
                "--inventory",
                "/s/inventory",
                "--extra-vars",
                "@/s/extra-vars.json",
                "--limit-hosts",
                "a:b",
                "--tags",
                "prep",
                "--sudo",
                "root",
            ]
        );
    }

    #[test]
    fn colon_in_tag_is_rejected() {
        let options = ConvergeOptions {
            tags: vec!["a:b".to_owned()],
            ..ConvergeOptions::default()
        };

        let error = validate(&options).unwrap_err();

        assert!(
            matches!(error, ConvergeError::InvalidOption { name: "tags", .. }),
            "{error:?}"
        );
    }

    #[test]
    fn empty_host_and_zero_timeout_are_rejected() {
        let empty_host = ConvergeOptions {
            limit_hosts: vec![String::new()],
            ..ConvergeOptions::default()
        };
        let zero_timeout = ConvergeOptions {
            timeout: Duration::ZERO,
            ..ConvergeOptions::default()
        };
        let blank_user = ConvergeOptions {
            sudo_user: Some("a b".to_owned()),
            ..ConvergeOptions::default()
        };

        for options in [empty_host, zero_timeout, blank_user] {
            assert!(validate(&options).is_err(), "{options:?}");
        }
        validate(&ConvergeOptions::default()).unwrap();
    }

    #[test]
    fn extra_vars_written_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = serde_json::Map::new();
        vars.insert("target_dir".to_owned(), "/tmp/x y".into());
        vars.insert("count".to_owned(), 3.into());

        let path = write_extra_vars(dir.path(), &vars).unwrap().unwrap();

        let read: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read, vars);
        assert_eq!(
            write_extra_vars(dir.path(), &serde_json::Map::new()).unwrap(),
            None
        );
    }

    #[test]
    fn failure_error_names_command_status_and_tail() {
        let error = ConvergeError::Failed {
            instance: "k3sh-abc".to_owned(),
            command: "jetp ssh --playbook '/p/my site.yml'".to_owned(),
            status: "exited with status 1".to_owned(),
            tail_lines: TAIL_LINES,
            tail: "! error: k3sh-abc: boom\n(X) Failures have occured.".to_owned(),
        };

        let message = error.to_string();

        assert!(
            message.contains("`jetp ssh --playbook '/p/my site.yml'` exited with status 1"),
            "{message}"
        );
        assert!(message.contains("instance `k3sh-abc`"), "{message}");
        assert!(message.contains("Last 30 lines"), "{message}");
        assert!(message.ends_with("(X) Failures have occured."), "{message}");
    }

    #[test]
    fn not_idempotent_error_lists_tasks() {
        let error = ConvergeError::NotIdempotent {
            instance: "k3sh-abc".to_owned(),
            playbook: PathBuf::from("/p/site.yml"),
            changed: 2,
            changed_tasks: vec!["write config".to_owned(), "run migration".to_owned()],
        };

        let message = error.to_string();

        assert!(
            message.contains("/p/site.yml is not idempotent"),
            "{message}"
        );
        assert!(message.contains("write config, run migration"), "{message}");
    }
}
