//! `shell`, `import` and `converge`: working inside a running harness cluster.
//!
//! Each command finds the cluster through its state record, as `Cluster::shared` does when it
//! attaches, so it reaches the instance with the limactl and Lima home that booted it.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use lima_provisioner::InstanceName;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use super::spec_args::{ImageArgs, duration_arg, spec_from_env};
use super::{CliError, Context, print_line, print_value};
use crate::cluster::{Cluster, blocking};
use crate::converge::{ConvergeOptions, DEFAULT_CONVERGE_TIMEOUT};
use crate::error::Error;
use crate::spec::ClusterSpec;
use crate::state::{ClusterRecord, StateDir};

/// Default bound on `shell`: long enough for an interactive debugging session.
const DEFAULT_SHELL_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Arguments of `shell`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit status: the guest command's; 128 plus the signal number when a signal ended
`limactl shell`; 1 when the harness failed (unknown instance, timeout); 2 for invalid
arguments. limactl itself exits 1 when the instance is not running, and 255 when SSH failed.")]
pub(super) struct ShellArgs {
    /// The Lima instance name printed by `up`.
    name: String,
    /// Guest directory to run the command in [default: the guest user's home]
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Bound on the command, after which `limactl shell` is killed: seconds, or a number with
    /// s, m or h [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    timeout: Option<Duration>,
    /// The command and its arguments, after `--`. Each argument reaches the guest unchanged,
    /// so shell syntax needs `sh -c '...'`. stdin, stdout and stderr are passed through.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Arguments of `import`.
#[derive(Debug, clap::Args)]
pub(super) struct ImportArgs {
    /// The Lima instance name printed by `up`.
    name: String,
    /// Image archives: OCI image layouts or `docker save` tars, gzipped or not. The normalised
    /// references they contain are printed on stdout, one per line.
    #[arg(value_name = "ARCHIVE", required_unless_present = "images")]
    archives: Vec<PathBuf>,
    /// Image reference to save with the container engine and stream into the cluster, such as
    /// operator:1.0; repeatable [default: none]
    #[arg(long = "image", value_name = "REFERENCE")]
    images: Vec<String>,
    #[command(flatten)]
    image_settings: ImageArgs,
}

/// Arguments of `converge`.
#[derive(Debug, clap::Args)]
pub(super) struct ConvergeArgs {
    /// The Lima instance name printed by `up`.
    name: String,
    /// The Jetpack playbook file.
    playbook: PathBuf,
    /// Extra variable for the playbook, with a string value; repeatable, and wins over
    /// --extra-vars-file [default: none]
    #[arg(short = 'e', long = "extra-var", value_name = "KEY=VALUE", value_parser = key_value)]
    extra_vars: Vec<(String, String)>,
    /// JSON file holding an object of extra variables [default: none]
    #[arg(long, value_name = "FILE")]
    extra_vars_file: Option<PathBuf>,
    /// Inventory host to limit the run to; repeatable [default: every host]
    #[arg(long = "limit-host", value_name = "HOST")]
    limit_hosts: Vec<String>,
    /// Tag that selects the tasks to run; repeatable [default: every task]
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Guest user to run tasks as through sudo, such as root [default: the SSH user]
    #[arg(long, value_name = "USER")]
    sudo: Option<String>,
    /// Bound on each jetp run, after which it is killed: seconds, or a number with s, m or h
    /// [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    timeout: Option<Duration>,
    /// Converge a second time and fail if that run changed anything
    #[arg(long)]
    check_idempotent: bool,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Reads the record of instance `name` and checks that its boot finished.
fn ready_record(state: &StateDir, name: &str) -> Result<ClusterRecord, CliError> {
    let record = state.read_record(name)?;
    if !record.ready {
        return Err(CliError::NotReady {
            instance: name.to_owned(),
        });
    }
    Ok(record)
}

/// Rebuilds the handle of a ready harness cluster that Lima lists as running.
///
/// The handle never deletes the VM when dropped.
async fn attach(context: &Context, name: &str, spec: ClusterSpec) -> Result<Cluster, CliError> {
    let state = context.state()?;
    let record = ready_record(&state, name)?;
    let instance = InstanceName::new(name, &record.lima_home).map_err(Error::from)?;
    let provisioner = record.provisioner();

    let listed = blocking(|| provisioner.limactl().instance(&instance))
        .await
        .map_err(Error::from)?;
    match listed {
        Some(listed) if listed.is_running() => {}
        Some(listed) => {
            return Err(CliError::NotRunning {
                instance: name.to_owned(),
                status: listed
                    .status
                    .map_or_else(|| "in an unknown state".to_owned(), |s| s.to_string()),
            });
        }
        None => {
            return Err(CliError::NotRunning {
                instance: name.to_owned(),
                status: format!("not found in {}", record.lima_home.display()),
            });
        }
    }
    Ok(Cluster::from_record(
        &record,
        spec,
        provisioner,
        state,
        instance,
    ))
}

/// Runs a command in the guest with this process's stdin, stdout and stderr, and returns its
/// exit status.
///
/// `limactl shell` runs in this process's group, so the terminal's Ctrl-C and Ctrl-Z reach it
/// (and the `ssh` it runs) directly, as they would if the user ran it. SIGINT, SIGTERM and
/// SIGHUP that this process receives are passed on too, for senders that signal this process
/// alone, so a Ctrl-C at the terminal reaches limactl twice. This process stays until limactl
/// exits, to return its status.
///
/// TODO: on a multi-node cluster this reaches the server only; a `--node` option should pick
/// an agent, as `Cluster::node` does in tests.
pub(super) async fn shell(args: ShellArgs, context: &Context) -> Result<ExitCode, CliError> {
    let state = context.state()?;
    let record = ready_record(&state, &args.name)?;
    let instance = InstanceName::new(&args.name, &record.lima_home).map_err(Error::from)?;
    let provisioner = record.provisioner();
    let limactl = provisioner.limactl();
    let argv: Vec<&str> = args.command.iter().map(String::as_str).collect();
    let workdir = args.workdir.as_deref();
    let rendered = limactl.render_shell_command(&instance, &argv, workdir);
    let spawn_error = |source| CliError::ShellSpawn {
        command: rendered.clone(),
        source,
    };

    // The handlers are installed before the spawn, so no signal in between ends this process
    // without its child.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(spawn_error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(spawn_error)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(spawn_error)?;
    let mut command =
        tokio::process::Command::from(limactl.interactive_shell_command(&instance, &argv, workdir));
    command
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(spawn_error)?;
    let pid = child.id();

    let timeout = args.timeout.unwrap_or(DEFAULT_SHELL_TIMEOUT);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(spawn_error)?;
                return Ok(ExitCode::from(exit_status_byte(status)));
            }
            _ = interrupt.recv() => forward(pid, Signal::SIGINT),
            _ = terminate.recv() => forward(pid, Signal::SIGTERM),
            _ = hangup.recv() => forward(pid, Signal::SIGHUP),
            () = &mut deadline => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(CliError::ShellTimedOut { command: rendered, after: timeout });
            }
        }
    }
}

/// Sends `signal` to the child `pid`, which may have exited already.
fn forward(pid: Option<u32>, signal: Signal) {
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Returns the exit status to pass on: the command's code, or 128 plus the number of the signal that
/// ended it, as POSIX shells report it.
fn exit_status_byte(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    u8::try_from(code & 0xff).unwrap_or(1)
}

/// Imports each archive, then each engine image, and prints the references as they arrive.
pub(super) async fn import(args: ImportArgs, context: &Context) -> Result<ExitCode, CliError> {
    for archive in &args.archives {
        check_archive(archive)?;
    }
    let spec = args
        .image_settings
        .apply(spec_from_env(context.state_dir.as_deref())?);
    let cluster = attach(context, &args.name, spec).await?;

    for archive in &args.archives {
        for reference in cluster.import_image(archive).await? {
            print_line(&reference);
        }
    }
    for image in &args.images {
        print_line(&cluster.import_docker_image(image).await?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Rejects a path that is not a readable file before anything is imported.
fn check_archive(path: &Path) -> Result<(), Error> {
    let problem = match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => return Ok(()),
        Ok(_) => "not a file".to_owned(),
        Err(error) => error.to_string(),
    };
    Err(Error::InvalidConfig {
        name: "ARCHIVE".to_owned(),
        value: path.display().to_string(),
        reason: format!(
            "{problem}; pass an image archive written by `docker save`, `podman save` or \
             `skopeo copy`"
        ),
    })
}

/// Runs the playbook and prints how many task results changed the VM.
pub(super) async fn converge(args: ConvergeArgs, context: &Context) -> Result<ExitCode, CliError> {
    if !args.playbook.is_file() {
        return Err(Error::InvalidConfig {
            name: "PLAYBOOK".to_owned(),
            value: args.playbook.display().to_string(),
            reason: "no such file; pass the path of a Jetpack playbook".to_owned(),
        }
        .into());
    }
    let mut options = ConvergeOptions {
        limit_hosts: args.limit_hosts,
        tags: args.tags,
        sudo_user: args.sudo,
        timeout: args.timeout.unwrap_or(DEFAULT_CONVERGE_TIMEOUT),
        ..ConvergeOptions::default()
    };
    if let Some(path) = &args.extra_vars_file {
        options.extra_vars = read_extra_vars(path)?;
    }
    for (key, value) in args.extra_vars {
        options.extra_vars.insert(key, value.into());
    }
    let cluster = attach(context, &args.name, ClusterSpec::default()).await?;

    let report = cluster.converge_with(&args.playbook, &options).await?;
    print_value("changed", &report.changed.to_string());
    print_value("unchanged", &report.unchanged.to_string());
    if args.check_idempotent {
        cluster.check_idempotent(&args.playbook, &options).await?;
        eprintln!("k3s-harness: the second converge changed nothing; the playbook is idempotent");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a JSON object of extra variables.
fn read_extra_vars(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let invalid = |reason: String| Error::InvalidConfig {
        name: "--extra-vars-file".to_owned(),
        value: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| invalid(format!("{error}; pass a readable JSON file")))?;
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(
            "the file holds JSON, but not an object; write `{\"name\": \"value\"}`".to_owned(),
        )),
        Err(error) => Err(invalid(format!("invalid JSON: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn exit_status_passes_code_and_signal_through() {
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        let signalled = |signal: i32| ExitStatus::from_raw(signal);

        assert_eq!(exit_status_byte(exited(0)), 0);
        assert_eq!(exit_status_byte(exited(7)), 7);
        assert_eq!(exit_status_byte(exited(255)), 255);
        assert_eq!(exit_status_byte(signalled(9)), 137);
    }

    #[test]
    fn extra_var_needs_key_and_equals() {
        assert_eq!(
            key_value("a=b=c").unwrap(),
            ("a".to_owned(), "b=c".to_owned())
        );
        assert_eq!(key_value("a=").unwrap(), ("a".to_owned(), String::new()));
        assert!(key_value("=b").is_err());
        assert!(key_value("ab").is_err());
    }
}
