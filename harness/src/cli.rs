//! The `k3s-harness` command line.
//!
//! Subcommands, grouped by module: `up` and `nextest-setup` boot a cluster (`cli::boot`);
//! `down` and `gc` delete clusters, and `logs` collects diagnostics (`cli::lifecycle`); `status`,
//! `list` and `kubeconfig` describe them (`cli::inspect`); `shell`, `import` and `converge` work
//! inside a running one (`cli::guest`). `up` and `nextest-setup` show the boot's phases on
//! stderr (`cli::progress`).
//!
//! Exit status: 0 on success, 1 when the operation failed (the error is printed on stderr), 2
//! for invalid arguments or configuration, 130 when interrupted by SIGINT (Ctrl-C; `up` then
//! deletes the VM it was booting). `shell` exits with the status of the guest command instead,
//! or 128 plus the signal number when a signal ended `limactl shell`, and with 1 when the
//! harness itself failed.

mod boot;
mod guest;
mod inspect;
mod lifecycle;
mod progress;
mod spec_args;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cluster::blocking;
use crate::converge::ConvergeError;
use crate::error::Error;
use crate::state::StateDir;
use progress::BootProgress;

/// The exit statuses, appended to `k3s-harness --help`.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success
  1    the operation failed; the error is printed on stderr
  2    invalid arguments or configuration
  130  interrupted by SIGINT (Ctrl-C); `up` deletes the VM it was booting
`shell` exits with the guest command's status instead.";

/// Log filter when `K3S_HARNESS_LOG` is unset.
///
/// kube's client logs every refused connection at ERROR while the harness waits for the API
/// server, which is expected during a boot, so it stays quiet unless `K3S_HARNESS_LOG`
/// enables it.
const DEFAULT_LOG_FILTER: &str = "warn,k3s_harness=info,lima_provisioner=info,kube_client=off";

/// Throwaway k3s clusters in Lima VMs for end-to-end tests.
///
/// Set K3S_HARNESS_LOG to a tracing filter (such as `debug`) for more detail on stderr.
#[derive(Debug, Parser)]
#[command(name = "k3s-harness", version, after_help = EXIT_STATUS_HELP)]
struct Cli {
    /// Directory of the harness's per-instance files [default: $XDG_STATE_HOME/k3s-harness,
    /// else ~/.local/state/k3s-harness] [env: K3S_HARNESS_STATE_DIR]
    #[arg(long, global = true, value_name = "DIR", display_order = 900)]
    state_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a cluster and leave it running; prints `instance=NAME` and `kubeconfig=PATH`.
    ///
    /// The boot's phases are shown on stderr, as a spinner on a terminal and otherwise as one
    /// line per phase with a UTC timestamp. The time each phase took follows at the end. The
    /// cluster runs until `k3s-harness down NAME`, and Ctrl-C during the boot deletes it.
    Up(boot::UpArgs),
    /// Print the path of a harness cluster's kubeconfig.
    Kubeconfig(inspect::KubeconfigArgs),
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
    ///
    /// Every flag given, except --api-port and --name, is exported to the tests as its
    /// variable too (`--cpus 2` as K3S_HARNESS_CPUS=2, `--lima-home` as LIMA_HOME,
    /// `--state-dir` as K3S_HARNESS_STATE_DIR), so a test's `Cluster::shared` spec matches the
    /// booted cluster and attaches to it. The boot's phases are printed on stderr.
    NextestSetup(boot::NextestSetupArgs),
    /// Describe one harness cluster: its Lima status, API port, owner, policy and kubeconfig.
    Status(inspect::StatusArgs),
    /// List every harness cluster in the state directory.
    List(inspect::ListArgs),
    /// Run a command in a harness cluster's VM through `limactl shell`.
    Shell(guest::ShellArgs),
    /// Import image archives or container engine images into a harness cluster's containerd.
    ///
    /// Prints the normalised reference of every imported image on stdout, one per line, such
    /// as docker.io/library/operator:1.0. An archive already imported into the cluster is
    /// skipped. `:latest` and untagged references are rejected unless --allow-latest-images is
    /// given, because Kubernetes would pull them again.
    Import(guest::ImportArgs),
    /// Run a Jetpack playbook against a harness cluster's VM over SSH.
    ///
    /// Runs `jetp ssh --playbook PLAYBOOK --inventory DIR`, where JETP names the binary, else
    /// jetpack or jetp on PATH. jetp's output is logged on stderr as it arrives; stdout gets
    /// `changed=N` and `unchanged=N`, counted from the first run.
    Converge(guest::ConvergeArgs),
}

impl Command {
    /// Returns true when the command boots a cluster, whose phases are then shown on stderr.
    fn boots(&self) -> bool {
        matches!(self, Command::Up(_) | Command::NextestSetup(_))
    }
}

/// Settings that every subcommand may need besides its own arguments.
struct Context {
    /// `--state-dir`, which wins over `K3S_HARNESS_STATE_DIR`.
    state_dir: Option<PathBuf>,
    /// The boot progress display, for the commands that boot.
    progress: Option<Arc<BootProgress>>,
}

impl Context {
    /// Returns the harness state directory: `--state-dir`, else the environment's.
    fn state(&self) -> Result<StateDir, Error> {
        match &self.state_dir {
            Some(dir) => Ok(StateDir::new(dir.clone())),
            None => StateDir::from_env(),
        }
    }
}

/// A failed command, with its exit status.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// A harness operation failed.
    #[error(transparent)]
    Harness(#[from] Error),

    /// A Jetpack converge failed.
    #[error(transparent)]
    Converge(#[from] ConvergeError),

    /// The instance's record shows that it is still booting.
    #[error(
        "instance `{instance}` is not ready: it is still booting, or the process booting it \
         died; wait for `k3s-harness up` to finish, or delete it with `k3s-harness down {instance}`"
    )]
    NotReady {
        /// The instance.
        instance: String,
    },

    /// Lima does not list the instance as running.
    #[error(
        "Lima instance `{instance}` is {status}, not Running; delete it with \
         `k3s-harness down {instance}` and boot a new one"
    )]
    NotRunning {
        /// The instance.
        instance: String,
        /// Lima's status, or `not found`.
        status: String,
    },

    /// `k3s-harness gc` could not delete some instances; their errors were printed already.
    #[error("failed to delete {failed} harness cluster(s); see the errors above")]
    GcIncomplete {
        /// How many deletions failed.
        failed: usize,
    },

    /// `limactl shell` could not be started or waited for.
    #[error("failed to run `{command}`: {source}")]
    ShellSpawn {
        /// The shell-quoted command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// `limactl shell` ran past `--timeout` and was killed.
    #[error("`{command}` timed out after {after:?} and was killed; pass a longer --timeout")]
    ShellTimedOut {
        /// The shell-quoted command line.
        command: String,
        /// The deadline.
        after: Duration,
    },
}

impl CliError {
    /// 2 for input the user can fix by changing arguments or variables, 1 otherwise.
    fn exit_code(&self) -> ExitCode {
        let invalid_input = match self {
            CliError::Harness(error) => is_invalid_input(error),
            CliError::Converge(
                ConvergeError::InvalidOption { .. } | ConvergeError::PlaybookNotFound { .. },
            ) => true,
            _ => false,
        };
        if invalid_input {
            ExitCode::from(2)
        } else {
            ExitCode::FAILURE
        }
    }
}

fn is_invalid_input(error: &Error) -> bool {
    matches!(
        error,
        Error::InvalidConfig { .. }
            | Error::Lima(
                lima_provisioner::Error::InvalidInstanceName { .. }
                    | lima_provisioner::Error::InvalidSpec { .. }
            )
    )
}

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = cli.command.boots().then(BootProgress::for_stderr);
    init_tracing(progress.clone());

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
    let context = Context {
        state_dir: cli.state_dir,
        progress,
    };
    let result = runtime.block_on(run(cli.command, context));
    // An interrupted command may leave a blocking call behind, which must not delay the exit.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

/// Logs to stderr through `K3S_HARNESS_LOG`'s filter, and feeds boot phases to `progress`.
fn init_tracing(progress: Option<Arc<BootProgress>>) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("K3S_HARNESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    if progress.is_some() {
        let hidden = format!("{}=off", crate::progress::TARGET);
        filter = filter.add_directive(hidden.parse().expect("the directive is valid"));
    }
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(progress::LogWriter::new(progress.clone()))
        .with_filter(filter);
    let phases = progress.map(|progress| {
        progress::PhaseLayer::new(progress).with_filter(tracing_subscriber::filter::filter_fn(
            |metadata| metadata.target() == crate::progress::TARGET,
        ))
    });
    tracing_subscriber::registry().with(log).with(phases).init();
}

async fn run(command: Command, context: Context) -> Result<ExitCode, CliError> {
    match command {
        // `up` deletes the VM it boots when interrupted, and `shell` leaves signals to the guest
        // command, so both handle SIGINT themselves.
        Command::Up(args) => boot::up(args, &context).await,
        Command::Shell(args) => guest::shell(args, &context).await,
        command => {
            let progress = context.progress.clone();
            interruptible(dispatch(command, context), progress).await
        }
    }
}

async fn dispatch(command: Command, context: Context) -> Result<ExitCode, CliError> {
    match command {
        Command::Kubeconfig(args) => inspect::kubeconfig(args, &context),
        Command::Down { name } => blocking(|| lifecycle::down(&name, &context)).await,
        Command::Gc => blocking(|| lifecycle::gc(&context)).await,
        Command::Logs { name } => blocking(|| lifecycle::logs(&name, &context)).await,
        Command::NextestSetup(args) => boot::nextest_setup(args, &context).await,
        Command::Status(args) => inspect::status(args, &context).await,
        Command::List(args) => inspect::list(args, &context).await,
        Command::Import(args) => guest::import(args, &context).await,
        Command::Converge(args) => guest::converge(args, &context).await,
        Command::Up(_) | Command::Shell(_) => unreachable!("`run` handles these itself"),
    }
}

/// Runs `command` on its own task and returns 130 when SIGINT arrives first.
///
/// The command runs apart from this select because its blocking limactl calls hold their
/// thread, and the signal must still be seen.
async fn interruptible(
    command: impl Future<Output = Result<ExitCode, CliError>> + Send + 'static,
    progress: Option<Arc<BootProgress>>,
) -> Result<ExitCode, CliError> {
    let task = tokio::spawn(command);
    tokio::select! {
        finished = task => finished.expect("a command task does not panic"),
        _ = tokio::signal::ctrl_c() => {
            if let Some(progress) = progress {
                progress.abandon();
            }
            eprintln!("k3s-harness: interrupted");
            Ok(ExitCode::from(130))
        }
    }
}

/// Prints `key=value` on stdout; a closed stdout (`k3s-harness up | true`) is not an error.
fn print_value(key: &str, value: &str) {
    print_line(&format!("{key}={value}"));
}

/// Prints one line on stdout, ignoring a closed stdout.
fn print_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}
