//! `up` and `nextest-setup`: booting a cluster from the command line.

use std::ffi::OsString;
use std::process::ExitCode;

use lima_provisioner::InstanceName;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::progress::Outcome;
use super::spec_args::{BootArgs, ImageArgs, RunArgs, spec_from_env};
use super::{CliError, Context, print_value};
use crate::Cluster;
use crate::booting;
use crate::error::{Error, Result};
use crate::shared::{INSTANCE_ENV, KUBECONFIG_ENV};
use crate::spec::ClusterSpec;

/// Arguments of `up`.
#[derive(Debug, clap::Args)]
pub(super) struct UpArgs {
    #[command(flatten)]
    boot: BootArgs,
}

/// Arguments of `nextest-setup`; the flags are exported to the tests as well.
#[derive(Debug, clap::Args)]
pub(super) struct NextestSetupArgs {
    #[command(flatten)]
    boot: BootArgs,
    #[command(flatten)]
    image: ImageArgs,
    #[command(flatten)]
    run: RunArgs,
}

/// Boots a cluster that outlives this process, and prints its name and kubeconfig.
pub(super) async fn up(args: UpArgs, context: &Context) -> Result<ExitCode, CliError> {
    let spec = spec_from_env(context.state_dir.as_deref());
    let mut spec = args.boot.apply(spec?);
    spec.validate()?;
    let name = match &spec.instance_name {
        Some(name) => name.clone(),
        None => crate::cluster::generate_instance_name(&spec),
    };
    spec = spec.instance_name(name.clone());

    // Lima's host agent outlives an interrupted `limactl start`, so Ctrl-C must delete the VM
    // that is booting. Only this command handles signals; test processes never do. The boot
    // runs as its own task because it blocks its thread while limactl runs, and this select
    // must still see the signal.
    // SIGTERM (a CI job's timeout or cancellation, `timeout(1)`) and SIGHUP (a closed
    // terminal) get the same treatment as Ctrl-C.
    let mut terminate = unix_signal(SignalKind::terminate())?;
    let mut hangup = unix_signal(SignalKind::hangup())?;
    let boot = tokio::spawn(Cluster::start(spec.clone()));
    let signal = tokio::select! {
        started = boot => Ok(started.expect("the boot task does not panic")),
        _ = tokio::signal::ctrl_c() => Err(("interrupted", 130)),
        _ = terminate.recv() => Err(("terminated", 128 + 15)),
        _ = hangup.recv() => Err(("hung up", 128 + 1)),
    };
    let started = match signal {
        Ok(started) => started,
        Err((what, status)) => {
            if let Some(progress) = &context.progress {
                progress.abandon();
            }
            eprintln!("k3s-harness: {what}; deleting instance `{name}`");
            delete_interrupted(&spec, &name);
            std::process::exit(status);
        }
    };
    if let Some(progress) = &context.progress {
        progress.finish(if started.is_ok() {
            Outcome::Ready
        } else {
            Outcome::Failed
        });
    }
    let cluster = started?;

    print_value("instance", cluster.name());
    print_value(
        "kubeconfig",
        &cluster.kubeconfig_path().display().to_string(),
    );
    let home = cluster.lima_home_prefix();
    eprintln!(
        "The cluster keeps running. Use it with `KUBECONFIG={} kubectl get nodes`, open a shell \
         with `k3s-harness shell {} -- bash` (or `{home}limactl shell {}`), and delete it with \
         `k3s-harness down {}`.",
        cluster.kubeconfig_path().display(),
        cluster.name(),
        cluster.name(),
        cluster.name()
    );
    cluster.detach()?;
    Ok(ExitCode::SUCCESS)
}

/// Starts listening for the Unix signal `kind`.
fn unix_signal(kind: SignalKind) -> Result<Signal, CliError> {
    signal(kind).map_err(|error| {
        CliError::from(crate::Error::io(
            "listen for a signal in",
            "k3s-harness up",
            error,
        ))
    })
}

/// Deletes the instance an interrupted `up` was booting, and the harness's files for it.
fn delete_interrupted(spec: &ClusterSpec, name: &str) {
    let state = crate::cluster::state_dir_for(spec);
    let deleted = crate::cluster::limactl_for(spec).and_then(|limactl| {
        let instance = InstanceName::new(name, limactl.lima_home())?;
        let provisioner = lima_provisioner::Provisioner::new(limactl);
        match &state {
            // `limactl start` runs in its own process group, so Ctrl-C did not reach it.
            Ok(state) => {
                let agents = crate::nodes::agent_names(
                    &instance,
                    spec.nodes,
                    provisioner.limactl().lima_home(),
                )?;
                booting::destroy_cluster(
                    &provisioner,
                    &instance,
                    &agents,
                    &state.instance_dir(name),
                )?
            }
            Err(_) => provisioner.destroy(&instance)?,
        }
        Ok(())
    });
    if let Err(error) = deleted {
        eprintln!("error: failed to delete instance `{name}`: {error}");
    }
    if let Ok(state) = state {
        let _ = state.remove_instance_dir(name);
    }
}

/// Boots (or attaches to) the run's shared cluster and exports it to the run's tests.
pub(super) async fn nextest_setup(
    args: NextestSetupArgs,
    context: &Context,
) -> Result<ExitCode, CliError> {
    let Some(env_file) = std::env::var_os("NEXTEST_ENV").filter(|value| !value.is_empty()) else {
        return Err(Error::InvalidConfig {
            name: "NEXTEST_ENV".to_owned(),
            value: String::new(),
            reason: "nextest-setup must run as a nextest setup script, which sets NEXTEST_ENV; \
                     see the setup script in .config/nextest.toml"
                .to_owned(),
        }
        .into());
    };

    let mut spec = spec_from_env(context.state_dir.as_deref())?;
    spec = args.run.apply(args.image.apply(args.boot.apply(spec)));
    spec.validate()?;
    let mut exports: Vec<(&str, OsString)> = Vec::new();
    exports.extend(args.boot.env_exports());
    exports.extend(args.image.env_exports());
    exports.extend(args.run.env_exports());
    if let Some(dir) = &context.state_dir {
        exports.push(("K3S_HARNESS_STATE_DIR", dir.as_os_str().to_owned()));
    }
    // Checked before the boot, so a value nextest would reject leaves no VM behind.
    let mut text = String::new();
    for (key, value) in &exports {
        text.push_str(&nextest_env_line(key, value)?);
    }

    let shared = Cluster::shared(spec).await;
    if let Some(progress) = &context.progress {
        progress.finish(if shared.is_ok() {
            Outcome::Ready
        } else {
            Outcome::Failed
        });
    }
    let cluster = shared?;
    let lines = [
        (INSTANCE_ENV, OsString::from(cluster.name())),
        (
            KUBECONFIG_ENV,
            cluster.kubeconfig_path().as_os_str().to_owned(),
        ),
    ];
    for (key, value) in &lines {
        text.push_str(&nextest_env_line(key, value)?);
    }

    let path = std::path::PathBuf::from(env_file);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(|error| Error::io("open", &path, error))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|error| Error::io("write", &path, error))?;
    eprintln!("k3s-harness: the run's cluster is `{}`", cluster.name());
    Ok(ExitCode::SUCCESS)
}

/// Formats one `KEY=value` line for `$NEXTEST_ENV`, which rejects keys starting with `NEXTEST`
/// and values that are empty or span lines.
fn nextest_env_line(key: &str, value: &std::ffi::OsStr) -> Result<String> {
    let invalid = |reason: &str| Error::InvalidConfig {
        name: key.to_owned(),
        value: value.to_string_lossy().into_owned(),
        reason: reason.to_owned(),
    };
    if key.is_empty() || key.starts_with("NEXTEST") || key.contains('=') {
        return Err(invalid(
            "nextest rejects empty keys, keys with '=' and keys starting with NEXTEST",
        ));
    }
    let Some(value) = value.to_str() else {
        return Err(invalid(
            "the value is not valid UTF-8, which $NEXTEST_ENV needs; use a path in UTF-8",
        ));
    };
    if value.is_empty() || value.contains(['\n', '\r']) {
        return Err(invalid("nextest rejects empty and multi-line values"));
    }
    Ok(format!("{key}={value}\n"))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn env_line_is_key_equals_value() {
        let line = nextest_env_line("K3S_HARNESS_CPUS", OsStr::new("2")).unwrap();

        assert_eq!(line, "K3S_HARNESS_CPUS=2\n");
    }

    #[test]
    fn env_line_rejects_what_nextest_rejects() {
        let cases = [
            ("NEXTEST_X", "1"),
            ("", "1"),
            ("A=B", "1"),
            ("K3S_HARNESS_TEMPLATE", ""),
            ("K3S_HARNESS_TEMPLATE", "a\nb"),
        ];
        for (key, value) in cases {
            let error = nextest_env_line(key, OsStr::new(value));
            assert!(error.is_err(), "{key}={value:?} is accepted");
        }
    }
}
