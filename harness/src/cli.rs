//! The `k3s-harness` command line.
//!
//! Exit status: 0 on success, 1 when the operation failed (the error is printed on stderr),
//! 2 for invalid arguments.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lima_provisioner::{InstanceName, Limactl, Provisioner};

use crate::Cluster;
use crate::error::Result;
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
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Lima instance name [default: k3sh-<spec fingerprint>-<random>]
    #[arg(long)]
    name: Option<String>,
    /// Lima template locator
    #[arg(long, default_value = crate::spec::DEFAULT_TEMPLATE)]
    template: String,
    /// Virtual CPUs [default: Lima's, 4]
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory in MiB [default: Lima's, 4096]
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<u64>,
    /// Disk size in GiB [default: Lima's, 100]
    #[arg(long, value_name = "GIB")]
    disk_gib: Option<u64>,
    /// k3s release to install, such as v1.33.4+k3s1 [default: the installer's stable channel]
    #[arg(long)]
    k3s_version: Option<String>,
    /// Host port forwarded to the API server [default: a free port]
    #[arg(long)]
    api_port: Option<u16>,
    /// Bound on `limactl start`: seconds, or a number with s, m or h
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration_arg)]
    start_timeout: Duration,
    /// Bound on the readiness wait after start: seconds, or a number with s, m or h
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration_arg)]
    ready_timeout: Duration,
}

fn duration_arg(value: &str) -> std::result::Result<Duration, String> {
    parse_duration("duration", value).map_err(|error| error.to_string())
}

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("K3S_HARNESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
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
            ExitCode::FAILURE
        }
    }
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
    }
}

async fn up(args: UpArgs) -> Result<()> {
    let mut spec = ClusterSpec::default()
        .template(args.template)
        .start_timeout(args.start_timeout)
        .ready_timeout(args.ready_timeout);
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

    let cluster = Cluster::start(spec).await?;
    println!("instance={}", cluster.name());
    println!("kubeconfig={}", cluster.kubeconfig_path().display());
    eprintln!(
        "The cluster keeps running. Use it with `KUBECONFIG={} kubectl get nodes`, open a shell \
         with `limactl shell {}`, and delete it with `k3s-harness down {}`.",
        cluster.kubeconfig_path().display(),
        cluster.name(),
        cluster.name()
    );
    cluster.detach();
    Ok(())
}

/// Deletes a cluster that the harness started; other Lima instances are never touched.
fn down(name: &str) -> Result<()> {
    let state = StateDir::from_env()?;
    let record = state.read_record(name)?;
    let limactl = Limactl::from_env()?.with_lima_home(record.lima_home.clone());
    let instance = InstanceName::new(name, &record.lima_home)?;
    Provisioner::new(limactl).destroy(&instance)?;
    state.remove_instance_dir(name)?;
    eprintln!("Deleted instance `{name}`.");
    Ok(())
}
