//! The `k3s-harness` command line.
//!
//! Exit status: 0 on success, 1 when the operation failed (the error is printed on stderr),
//! 2 for invalid arguments or configuration, 130 when `up` was interrupted (its VM is deleted).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lima_provisioner::InstanceName;

use crate::Cluster;
use crate::booting;
use crate::error::{Error, Result};
use crate::shared::{INSTANCE_ENV, KUBECONFIG_ENV};
use crate::spec::{ClusterSpec, parse_duration};
use crate::state::StateDir;

/// Throwaway k3s clusters in Lima VMs for end-to-end tests.
#[derive(Debug, Parser)]
#[command(name = "k3s-harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a cluster and leave it running; prints `instance=NAME` and `kubeconfig=PATH`.
    Up(UpArgs),
    /// Print the path of a harness cluster's kubeconfig.
    Kubeconfig {
        /// The Lima instance name printed by `up`.
        name: String,
    },
    /// Delete a harness cluster's VM and the harness's files for it.
    Down {
        /// The Lima instance name printed by `up`.
        name: String,
    },
    /// Delete harness clusters whose test run has ended and that no policy keeps.
    Gc,
    /// Collect a harness cluster's logs and cluster state into a new directory under its state
    /// directory, and print that directory's path.
    Logs {
        /// The Lima instance name printed by `up`.
        name: String,
    },
    /// Boot the run's shared cluster from a nextest setup script and export
    /// K3S_HARNESS_INSTANCE and K3S_HARNESS_KUBECONFIG to the tests through $NEXTEST_ENV.
    NextestSetup(SpecArgs),
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    #[command(flatten)]
    spec: SpecArgs,
}

#[derive(Debug, clap::Args)]
struct SpecArgs {
    /// Lima instance name [default: `k3sh-FINGERPRINT-RANDOM`] [env: K3S_HARNESS_INSTANCE]
    #[arg(long)]
    name: Option<String>,
    /// Lima template locator [default: template:k3s] [env: K3S_HARNESS_TEMPLATE]
    #[arg(long)]
    template: Option<String>,
    /// Virtual CPUs [default: Lima's, 4] [env: K3S_HARNESS_CPUS]
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory in MiB [default: Lima's, 4096] [env: K3S_HARNESS_MEMORY_MIB]
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<u64>,
    /// Disk size in GiB [default: Lima's, 100] [env: K3S_HARNESS_DISK_GIB]
    #[arg(long, value_name = "GIB")]
    disk_gib: Option<u64>,
    /// k3s release to install, such as v1.33.4+k3s1 [default: the installer's stable channel]
    /// [env: K3S_HARNESS_K3S_VERSION]
    #[arg(long)]
    k3s_version: Option<String>,
    /// Host port forwarded to the API server [default: a free port] [env: K3S_HARNESS_API_PORT]
    #[arg(long)]
    api_port: Option<u16>,
    /// Bound on `limactl start`: seconds, or a number with s, m or h [default: 10m]
    /// [env: K3S_HARNESS_START_TIMEOUT]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    start_timeout: Option<Duration>,
    /// Bound on the readiness wait after start: seconds, or a number with s, m or h
    /// [default: 5m] [env: K3S_HARNESS_READY_TIMEOUT]
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    ready_timeout: Option<Duration>,
}

fn duration_arg(value: &str) -> std::result::Result<Duration, String> {
    parse_duration("duration", value).map_err(|error| error.to_string())
}

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube's client logs every refused connection at ERROR while the harness waits for the API
    // server, which is expected during a boot, so it stays quiet unless K3S_HARNESS_LOG enables it.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("K3S_HARNESS_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "warn,k3s_harness=info,lima_provisioner=info,kube_client=off",
                )
            }),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            exit_code_for(&error)
        }
    }
}

/// 2 for configuration the user can fix by changing arguments or variables, 1 otherwise.
fn exit_code_for(error: &Error) -> ExitCode {
    match error {
        Error::InvalidConfig { .. }
        | Error::Lima(lima_provisioner::Error::InvalidInstanceName { .. }) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

/// Prints `key=value` on stdout; a closed stdout (`k3s-harness up | true`) is not an error.
fn print_value(key: &str, value: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{key}={value}");
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Up(args) => up(args).await,
        Command::Kubeconfig { name } => {
            let record = StateDir::from_env()?.read_record(&name)?;
            println!("{}", record.kubeconfig.display());
            Ok(())
        }
        Command::Down { name } => down(&name),
        Command::Gc => gc(),
        Command::Logs { name } => crate::diagnostics::run_logs_command(&name),
        Command::NextestSetup(args) => nextest_setup(args).await,
    }
}

async fn up(args: UpArgs) -> Result<()> {
    let mut spec = args.spec.into_spec()?;
    let name = match &spec.instance_name {
        Some(name) => name.clone(),
        None => crate::cluster::generate_instance_name(&spec),
    };
    spec = spec.instance_name(name.clone());

    // Lima's host agent outlives an interrupted `limactl start`, so Ctrl-C must delete the VM
    // that is booting. Only this command handles signals; test processes never do. The boot
    // runs as its own task because it blocks its thread while limactl runs, and this select
    // must still see the signal.
    let boot = tokio::spawn(Cluster::start(spec.clone()));
    let cluster = tokio::select! {
        started = boot => started.expect("the boot task does not panic")?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("k3s-harness: interrupted; deleting instance `{name}`");
            delete_interrupted(&spec, &name);
            std::process::exit(130);
        }
    };

    print_value("instance", cluster.name());
    print_value(
        "kubeconfig",
        &cluster.kubeconfig_path().display().to_string(),
    );
    let home = cluster.lima_home_prefix();
    eprintln!(
        "The cluster keeps running. Use it with `KUBECONFIG={} kubectl get nodes`, open a shell \
         with `{home}limactl shell {}`, and delete it with `k3s-harness down {}`.",
        cluster.kubeconfig_path().display(),
        cluster.name(),
        cluster.name()
    );
    cluster.detach()
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
async fn nextest_setup(args: SpecArgs) -> Result<()> {
    let Some(env_file) = std::env::var_os("NEXTEST_ENV").filter(|value| !value.is_empty()) else {
        return Err(Error::InvalidConfig {
            name: "NEXTEST_ENV".to_owned(),
            value: String::new(),
            reason: "nextest-setup must run as a nextest setup script, which sets NEXTEST_ENV; \
                     see the setup script in .config/nextest.toml"
                .to_owned(),
        });
    };

    let cluster = Cluster::shared(args.into_spec()?).await?;
    let lines = [
        (INSTANCE_ENV, cluster.name().to_owned()),
        (
            KUBECONFIG_ENV,
            cluster.kubeconfig_path().display().to_string(),
        ),
    ];
    let mut text = String::new();
    for (key, value) in lines {
        text.push_str(&nextest_env_line(key, &value)?);
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
    Ok(())
}

/// Formats one `KEY=value` line for `$NEXTEST_ENV`, which rejects keys starting with `NEXTEST`
/// and values that are empty or span lines.
fn nextest_env_line(key: &str, value: &str) -> Result<String> {
    let invalid = |reason: &str| Error::InvalidConfig {
        name: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if key.is_empty() || key.starts_with("NEXTEST") || key.contains('=') {
        return Err(invalid(
            "nextest rejects empty keys, keys with '=' and keys starting with NEXTEST",
        ));
    }
    if value.is_empty() || value.contains(['\n', '\r']) {
        return Err(invalid("nextest rejects empty and multi-line values"));
    }
    Ok(format!("{key}={value}\n"))
}

fn gc() -> Result<()> {
    let state = StateDir::from_env()?;
    let report = crate::gc::collect(&state);
    for name in &report.deleted {
        println!("deleted {name}");
    }
    for (name, reason) in &report.kept {
        println!("kept {name}: {reason}");
    }
    for (name, error) in &report.failed {
        eprintln!("error: failed to delete {name}: {error}");
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            name: "gc".to_owned(),
            value: report.failed.len().to_string(),
            reason: "some instances could not be deleted; see the errors above".to_owned(),
        })
    }
}

impl SpecArgs {
    /// Builds the spec: the `K3S_HARNESS_*` variables first, then the flags, so a flag given on
    /// the command line wins over a variable.
    fn into_spec(self) -> Result<ClusterSpec> {
        let args = self;
        let mut spec = ClusterSpec::default().with_env_overrides()?;
        if let Some(template) = args.template {
            spec = spec.template(template);
        }
        if let Some(timeout) = args.start_timeout {
            spec = spec.start_timeout(timeout);
        }
        if let Some(timeout) = args.ready_timeout {
            spec = spec.ready_timeout(timeout);
        }
        if let Some(name) = args.name {
            spec = spec.instance_name(name);
        }
        if let Some(cpus) = args.cpus {
            spec = spec.cpus(cpus);
        }
        if let Some(mib) = args.memory_mib {
            spec = spec.memory_mib(mib);
        }
        if let Some(gib) = args.disk_gib {
            spec = spec.disk_gib(gib);
        }
        if let Some(version) = args.k3s_version {
            spec = spec.k3s_version(version);
        }
        if let Some(port) = args.api_port {
            spec = spec.api_port(port);
        }
        spec.validate()?;
        Ok(spec)
    }
}

/// Deletes a cluster that the harness started; other Lima instances are never touched.
fn down(name: &str) -> Result<()> {
    let state = StateDir::from_env()?;
    let record = state.read_record(name)?;
    let instance = InstanceName::new(name, &record.lima_home)?;
    booting::destroy_cluster(
        &record.provisioner(),
        &instance,
        &record.agent_names()?,
        &state.instance_dir(name),
    )?;
    state.remove_instance_dir(name)?;
    eprintln!("Deleted instance `{name}`.");
    Ok(())
}
