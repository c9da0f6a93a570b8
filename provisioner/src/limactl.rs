//! The limactl client: how to invoke limactl, the argv of each subcommand, and the mapping of
//! its exit statuses and stderr to results.
//!
//! Every call passes `--tty=false`, sets `LIMA_HOME` explicitly, runs in a scratch working
//! directory, and has a deadline (the `*_TIMEOUT` constants).

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracing::{debug, info};

use crate::command::{self, Output};
use crate::error::{CommandFailure, Error, Result, StartFailure, TAIL_LINES};
use crate::list::{Instance, parse_list_output};
use crate::name::InstanceName;
use crate::preflight;
use crate::shell::{ShellOptions, ShellOutput};
use crate::spec::{
    GUEST_USER_RULE, LimaSpec, ParamStyle, TEMPLATE_RULE, go_duration, is_usable_template,
    is_valid_guest_user,
};
use crate::stderr::{render_host_agent_log, strip_ansi, tail_lines};
use crate::version::{LimaVersion, MIN_LIMA_VERSION};

/// Deadline of `limactl --version`, which only prints a string.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline of `limactl list`. Each running instance costs one REST call to its host agent,
/// and Lima gives each call 3 s before it marks the instance `Broken`.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// Added to a start's `--timeout` for its deadline. Lima downloads the image and creates the
/// disk before its timer starts, and spawns the host agent after that, so a cold start can
/// take much longer than `--timeout`.
pub const START_TIMEOUT_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Deadline of `limactl stop`. A graceful stop waits up to 3m10s for the host agent's
/// `exiting` event and then up to 3 min for the `Stopped` status.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(7 * 60);

/// Deadline of `limactl delete -f`, which force-stops the VM and removes its directory.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(2 * 60);

/// The program name used when `LIMACTL` is not set.
const DEFAULT_PROGRAM: &str = "limactl";

/// Advice appended to a spawn error when limactl was not found.
const PROGRAM_HINT: &str =
    "Install Lima 2.0 or newer, or set LIMACTL to the path of the limactl binary.";

/// How to run limactl: the program, `LIMA_HOME`, the working directory and extra environment.
#[derive(Clone)]
pub struct Limactl {
    program: PathBuf,
    /// Absolute; empty when neither `LIMA_HOME` nor `HOME` was known.
    lima_home: PathBuf,
    work_dir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    effective_uid: fn() -> u32,
}

impl fmt::Debug for Limactl {
    /// Shows the names of the extra environment variables but not their values, which may contain
    /// credentials (a proxy URL, for example).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_keys: Vec<_> = self.env.iter().map(|(key, _)| key).collect();
        f.debug_struct("Limactl")
            .field("program", &self.program)
            .field("lima_home", &self.lima_home)
            .field("work_dir", &self.work_dir)
            .field("env_keys", &env_keys)
            .finish_non_exhaustive()
    }
}

impl Limactl {
    /// Reads the program from `LIMACTL` (else `limactl` on `PATH`) and the Lima directory from
    /// `LIMA_HOME` (else `~/.lima`).
    ///
    /// # Errors
    ///
    /// [`Error::RunningAsRoot`] when the effective user is root, and
    /// [`Error::LimaHomeUnknown`] when neither `LIMA_HOME` nor `HOME` is set.
    pub fn from_env() -> Result<Self> {
        Self::from_env_with(
            |key| std::env::var_os(key),
            preflight::current_effective_uid,
        )
    }

    pub(crate) fn from_env_with(
        lookup: impl Fn(&str) -> Option<OsString>,
        effective_uid: fn() -> u32,
    ) -> Result<Self> {
        preflight::reject_root(effective_uid())?;
        let program = non_empty(lookup("LIMACTL")).unwrap_or_else(|| DEFAULT_PROGRAM.into());
        let lima_home = default_lima_home(&lookup).ok_or(Error::LimaHomeUnknown)?;
        Ok(Self {
            program: program_path(program.into()),
            lima_home: absolute(&PathBuf::from(lima_home)),
            work_dir: None,
            env: Vec::new(),
            effective_uid,
        })
    }

    /// Runs `program`, with `LIMA_HOME` from the environment (else `~/.lima`).
    ///
    /// The root check happens at each call, which then fails with [`Error::RunningAsRoot`].
    pub fn new(program: impl Into<PathBuf>) -> Self {
        let lima_home = default_lima_home(&|key: &str| std::env::var_os(key))
            .map(|home| absolute(&PathBuf::from(home)))
            .unwrap_or_default();
        Self {
            program: program_path(program.into()),
            lima_home,
            work_dir: None,
            env: Vec::new(),
            effective_uid: preflight::current_effective_uid,
        }
    }

    /// Runs `program` instead of the binary chosen at construction. A path with a directory
    /// part is made absolute against the current directory, because limactl runs in its own
    /// working directory. A bare name is looked up on `PATH`.
    #[must_use]
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program_path(program.into());
        self
    }

    /// Uses `dir` as `LIMA_HOME`, made absolute against the current directory.
    #[must_use]
    pub fn with_lima_home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lima_home = absolute(&dir.into());
        self
    }

    /// Runs limactl in `dir` instead of `<temp dir>/lima-provisioner-<uid>`; it is created when
    /// missing.
    #[must_use]
    pub fn with_work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = Some(absolute(&dir.into()));
        self
    }

    /// Sets an extra environment variable for every limactl call. `LIMA_HOME` always comes
    /// from [`Limactl::with_lima_home`] and cannot be overridden here.
    #[must_use]
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    #[cfg(test)]
    pub(crate) fn with_effective_uid(mut self, effective_uid: fn() -> u32) -> Self {
        self.effective_uid = effective_uid;
        self
    }

    /// Returns the Lima directory passed as `LIMA_HOME` (absolute, with symlinks not resolved).
    pub fn lima_home(&self) -> &Path {
        &self.lima_home
    }

    /// Returns the limactl program.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Returns the path of Lima's SSH private key, `<LIMA_HOME>/_config/user`.
    pub fn ssh_key_path(&self) -> PathBuf {
        preflight::ssh_key_path(&self.lima_home)
    }

    /// Runs `limactl --version` and checks that it is at least Lima 2.0.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedLimaVersion`] for Lima older than 2.0, [`Error::UnrecognizedVersion`]
    /// when the output contains no version, and the errors of any limactl call.
    pub fn version(&self) -> Result<LimaVersion> {
        let (rendered, output) = self.run(&version_args(), VERSION_TIMEOUT)?;
        let output = check(rendered.clone(), output)?;
        let text = String::from_utf8_lossy(&output.stdout);
        let version = LimaVersion::parse(&text).ok_or_else(|| Error::UnrecognizedVersion {
            command: rendered,
            output: text.trim().to_owned(),
        })?;
        if !version.is_supported() {
            let (major, minor, patch) = MIN_LIMA_VERSION;
            return Err(Error::UnsupportedLimaVersion {
                found: version.raw,
                required: format!("{major}.{minor}.{patch}"),
            });
        }
        Ok(version)
    }

    /// Returns the names of the parameters that `template` declares (its `.param` keys), such
    /// as `url` and `token` for the k3s template of Lima 2.1 and newer:
    /// `limactl template yq TEMPLATE .param`.
    ///
    /// Checking the template, not the version, is how a caller learns whether a template takes
    /// a parameter: templates change between releases, and a file template has no release.
    ///
    /// # Errors
    ///
    /// The errors of the limactl call, for example for an unknown template.
    pub fn template_params(&self, template: &str) -> Result<Vec<String>> {
        let args = strings(["--tty=false", "template", "yq", template, ".param"]);
        let (rendered, output) = self.run(&args, VERSION_TIMEOUT)?;
        let output = check(rendered, output)?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(top_level_keys(&text))
    }

    /// Runs `limactl list --json [NAMES]`; no names lists every instance.
    ///
    /// # Errors
    ///
    /// A name that does not exist makes limactl exit 1, which is [`Error::CommandFailed`]
    /// here; use [`Limactl::instance`] to look up one name that may be absent.
    /// [`Error::ListParse`] when the output is not a stream of instance objects.
    pub fn list(&self, names: &[&InstanceName]) -> Result<Vec<Instance>> {
        let (rendered, output) = self.run(&list_args(names), LIST_TIMEOUT)?;
        let output = check(rendered.clone(), output)?;
        parse_list_output(&output.stdout).map_err(|error| Error::ListParse {
            command: rendered,
            error,
        })
    }

    /// Looks up one instance; `None` when it does not exist.
    ///
    /// limactl exits 1 with `unmatched instances` (after a `No instance matching NAME found`
    /// warning) for an absent name; that maps to `None`.
    ///
    /// # Errors
    ///
    /// [`Error::UnexpectedListOutput`] when limactl exits 0 but does not print exactly one
    /// entry with this name, and the errors of [`Limactl::list`].
    pub fn instance(&self, name: &InstanceName) -> Result<Option<Instance>> {
        let (rendered, output) = self.run(&list_args(&[name]), LIST_TIMEOUT)?;
        if !output.status.success() && reports_unmatched(&output.stderr) {
            debug!(instance = %name, "limactl lists no such instance");
            return Ok(None);
        }
        let output = check(rendered.clone(), output)?;
        let instances = parse_list_output(&output.stdout).map_err(|error| Error::ListParse {
            command: rendered.clone(),
            error,
        })?;

        let mut matching: Vec<Instance> = instances
            .into_iter()
            .filter(|instance| instance.name == name.as_str())
            .collect();
        if matching.len() != 1 {
            return Err(Error::UnexpectedListOutput {
                command: rendered,
                name: name.to_string(),
                count: matching.len(),
            });
        }
        Ok(matching.pop())
    }

    /// Creates and boots a new instance: `limactl start --tty=false --name=N ... TEMPLATE`.
    ///
    /// Template parameters use `--param` on Lima ≥ 2.2 and `--set '.param["K"] = "V"'` on
    /// older releases; that costs one `limactl --version` call when `spec.params` is not
    /// empty. The deadline is `spec.start_timeout` plus [`START_TIMEOUT_MARGIN`].
    ///
    /// # Errors
    ///
    /// [`Error::StartFailed`] with the classified cause (Lima leaves the VM running after most
    /// failures: delete it), [`Error::InsecureSshKey`], [`Error::InvalidInstanceName`] when the
    /// name does not fit this `LIMA_HOME`, [`Error::InvalidSpec`], [`Error::TimedOut`].
    pub fn create_and_start(&self, spec: &LimaSpec) -> Result<()> {
        self.create_and_start_observed(spec, |_| {})
    }

    /// Works like [`create_and_start`](Self::create_and_start), and passes the pid of
    /// `limactl start` to `on_spawn` as soon as it runs, before the boot finishes.
    ///
    /// `limactl start` leads its own process group, and it keeps booting when its caller dies:
    /// it goes on writing the instance directory and starts the host agent. A caller that may
    /// be killed mid-boot should record this pid (with the process's start time, against pid
    /// reuse), so that the process that deletes the half-booted instance can first kill that
    /// process group. A `limactl delete` that runs while the old `limactl start` still works can leave
    /// a second, unrecorded VM behind. Nothing is recorded if the caller dies between the spawn
    /// and `on_spawn`; that window is a few system calls wide.
    ///
    /// # Errors
    ///
    /// As for [`create_and_start`](Self::create_and_start).
    pub fn create_and_start_observed(
        &self,
        spec: &LimaSpec,
        on_spawn: impl FnOnce(u32),
    ) -> Result<()> {
        spec.name.check_lima_home(&self.lima_home)?;
        validate_spec(spec)?;
        preflight::check_ssh_key(&self.lima_home)?;

        let param_style = if spec.params.is_empty() || self.version()?.supports_param_flag() {
            ParamStyle::Flag
        } else {
            ParamStyle::Set
        };
        let args = spec.start_args_with(param_style);
        let secrets = spec.secret_values();

        info!(instance = %spec.name, template = %spec.template, "creating and starting Lima instance");
        let (rendered, output) = self.run_observed(
            &args,
            spec.start_timeout + START_TIMEOUT_MARGIN,
            command::Stdin::Null,
            on_spawn,
            &secrets,
        )?;
        if !output.status.success() {
            let output = Output {
                status: output.status,
                stdout: command::redact(
                    String::from_utf8_lossy(&output.stdout).into_owned(),
                    &secrets,
                )
                .into_bytes(),
                stderr: command::redact(
                    String::from_utf8_lossy(&output.stderr).into_owned(),
                    &secrets,
                )
                .into_bytes(),
            };
            return Err(self.start_error(&spec.name, rendered, &output));
        }
        info!(instance = %spec.name, "Lima instance is ready");
        Ok(())
    }

    /// Boots an existing, stopped instance: `limactl start --tty=false --timeout=DUR NAME`.
    ///
    /// It first checks that the instance exists, because `limactl start NAME` for an unknown
    /// NAME silently creates a default Ubuntu instance. A running instance is left alone by
    /// limactl (exit 0).
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`], [`Error::StartFailed`], [`Error::InsecureSshKey`],
    /// [`Error::TimedOut`].
    pub fn start_existing(&self, name: &InstanceName, timeout: Duration) -> Result<()> {
        name.check_lima_home(&self.lima_home)?;
        if self.instance(name)?.is_none() {
            return Err(Error::InstanceNotFound {
                name: name.to_string(),
                lima_home: self.lima_home.clone(),
            });
        }
        self.start_known(name, timeout)
    }

    /// Starts an instance that the caller has just seen in `limactl list`.
    pub(crate) fn start_known(&self, name: &InstanceName, timeout: Duration) -> Result<()> {
        preflight::check_ssh_key(&self.lima_home)?;

        info!(instance = %name, "starting existing Lima instance");
        let (rendered, output) = self.run(
            &start_existing_args(name, timeout),
            timeout + START_TIMEOUT_MARGIN,
        )?;
        if !output.status.success() {
            return Err(self.start_error(name, rendered, &output));
        }
        info!(instance = %name, "Lima instance is ready");
        Ok(())
    }

    /// Stops an instance: `limactl stop --tty=false [-f] NAME`.
    ///
    /// A graceful stop of an instance that is already stopped succeeds (limactl itself exits 1
    /// with "expected status `Running`, got `Stopped`").
    ///
    /// # Errors
    ///
    /// [`Error::CommandFailed`] for any other failure, [`Error::TimedOut`] after
    /// [`STOP_TIMEOUT`].
    pub fn stop(&self, name: &InstanceName, force: bool) -> Result<()> {
        info!(instance = %name, force, "stopping Lima instance");
        let (rendered, output) = self.run(&stop_args(name, force), STOP_TIMEOUT)?;
        if !force && !output.status.success() && reports_already_stopped(&output.stderr) {
            debug!(instance = %name, "instance was already stopped");
            return Ok(());
        }
        check(rendered, output)?;
        Ok(())
    }

    /// Deletes an instance: `limactl delete --tty=false -f NAME`. An absent instance is not an
    /// error (limactl warns and exits 0).
    ///
    /// # Errors
    ///
    /// [`Error::CommandFailed`], for example for a protected instance or a directory without
    /// `lima.yaml` (Lima ≥ 2.2 refuses to delete those); [`Error::TimedOut`].
    pub fn delete(&self, name: &InstanceName) -> Result<()> {
        info!(instance = %name, "deleting Lima instance");
        let (rendered, output) = self.run(&delete_args(name), DELETE_TIMEOUT)?;
        check(rendered, output)?;
        Ok(())
    }

    /// Runs `argv` in the guest through `limactl shell` and returns its output whatever the
    /// exit status; [`ShellOutput::check`] turns a non-zero status into an error.
    ///
    /// Lima quotes each argv element and runs the result with the guest user's login shell, so
    /// shell syntax only works inside `sh -c SCRIPT`.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] after `options.timeout`, [`Error::Spawn`], [`Error::RunningAsRoot`].
    pub fn shell(
        &self,
        name: &InstanceName,
        argv: &[&str],
        options: &ShellOptions,
    ) -> Result<ShellOutput> {
        let args = shell_args(name, argv, options.workdir.as_deref());
        let (rendered, output) =
            self.run_with_stdin(&args, options.timeout, options.stdin.clone().into())?;
        Ok(ShellOutput {
            status: output.status,
            stdout: output.stdout,
            stderr: output.stderr,
            command: rendered,
        })
    }

    /// Runs `argv` in the guest with `input` streamed to its stdin, for large inputs such as an
    /// image archive; memory use does not grow with the input's size. `options.stdin` is ignored.
    ///
    /// # Errors
    ///
    /// As [`Limactl::shell`], plus [`Error::Io`] when reading `input` fails.
    pub fn shell_streaming(
        &self,
        name: &InstanceName,
        argv: &[&str],
        input: Box<dyn std::io::Read + Send>,
        options: &ShellOptions,
    ) -> Result<ShellOutput> {
        let args = shell_args(name, argv, options.workdir.as_deref());
        let (rendered, output) =
            self.run_with_stdin(&args, options.timeout, command::Stdin::Reader(input))?;
        Ok(ShellOutput {
            status: output.status,
            stdout: output.stdout,
            stderr: output.stderr,
            command: rendered,
        })
    }

    /// Builds the `Command` for `limactl shell --tty=false [--workdir=DIR] NAME -- ARGV...`
    /// for callers that stream, such as an image import fed through stdin.
    ///
    /// Program, arguments, environment, working directory and a process group of its own are
    /// set; stdin, stdout and stderr are left to the caller. The caller owns the deadline and
    /// must drain stdout and stderr. The root check does not run here, but limactl itself
    /// rejects root.
    pub fn shell_command(
        &self,
        name: &InstanceName,
        argv: &[&str],
        workdir: Option<&str>,
    ) -> Command {
        let mut command = self.interactive_shell_command(name, argv, workdir);
        command.process_group(0);
        command
    }

    /// Builds the same `Command` as [`Limactl::shell_command`], but in the caller's process
    /// group, for a caller that hands its own terminal to the guest command.
    ///
    /// In the caller's group, Ctrl-C and Ctrl-Z at the terminal reach limactl (and the `ssh`
    /// it runs) as they would if the user ran `limactl shell` directly, and limactl may read
    /// the terminal. A process in another group that reads its terminal is stopped with
    /// SIGTTIN. The caller owns the deadline and the signal handling.
    pub fn interactive_shell_command(
        &self,
        name: &InstanceName,
        argv: &[&str],
        workdir: Option<&str>,
    ) -> Command {
        let work_dir = self.work_dir();
        if let Err(error) =
            preflight::ensure_work_dir(&work_dir, preflight::current_effective_uid())
        {
            tracing::warn!(%error, "limactl's working directory is unusable; spawning will fail");
        }
        self.base_command(&shell_args(name, argv, workdir), &work_dir)
    }

    /// Renders the command line of [`Limactl::shell_command`], shell-quoted.
    pub fn render_shell_command(
        &self,
        name: &InstanceName,
        argv: &[&str],
        workdir: Option<&str>,
    ) -> String {
        let command = self.base_command(&shell_args(name, argv, workdir), &self.work_dir());
        command::render(&command)
    }

    fn work_dir(&self) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| preflight::default_work_dir(preflight::current_effective_uid()))
    }

    fn base_command(&self, args: &[String], work_dir: &Path) -> Command {
        let mut command = Command::new(&self.program);
        command.args(args).current_dir(work_dir);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        // Forces pretty, coloured `list --json` output even through a pipe (a Lima test hook).
        command.env_remove("_LIMA_OUTPUT_IS_TTY");
        command.env("LIMA_HOME", &self.lima_home);
        command
    }

    fn run(&self, args: &[String], deadline: Duration) -> Result<(String, Output)> {
        self.run_with_stdin(args, deadline, command::Stdin::Null)
    }

    fn run_with_stdin(
        &self,
        args: &[String],
        deadline: Duration,
        stdin: command::Stdin,
    ) -> Result<(String, Output)> {
        self.run_observed(args, deadline, stdin, |_| {}, &[])
    }

    /// Runs limactl with `args` after the preflight checks and passes its pid to `on_spawn` once
    /// it runs. Returns the rendered command line, with `secrets` redacted, and the output.
    fn run_observed(
        &self,
        args: &[String],
        deadline: Duration,
        stdin: command::Stdin,
        on_spawn: impl FnOnce(u32),
        secrets: &[String],
    ) -> Result<(String, Output)> {
        preflight::reject_root((self.effective_uid)())?;
        if self.lima_home.as_os_str().is_empty() {
            return Err(Error::LimaHomeUnknown);
        }
        let work_dir = self.work_dir();
        preflight::ensure_work_dir(&work_dir, preflight::current_effective_uid())?;

        let command = self.base_command(args, &work_dir);
        let rendered = command::redact(command::render(&command), secrets);
        match command::run_observed(command, deadline, stdin, on_spawn, secrets) {
            Ok(output) => Ok((rendered, output)),
            Err(Error::Spawn { command, error, .. }) => Err(Error::Spawn {
                program_hint: (error.kind() == std::io::ErrorKind::NotFound)
                    .then(|| PROGRAM_HINT.to_owned()),
                command,
                error,
            }),
            Err(other) => Err(other),
        }
    }

    fn start_error(&self, name: &InstanceName, rendered: String, output: &Output) -> Error {
        let failure = CommandFailure::new(rendered, output.status, &output.stdout, &output.stderr);
        if is_root_refusal(&failure) {
            return Error::RunningAsRoot;
        }
        let stderr_text = strip_ansi(&String::from_utf8_lossy(&output.stderr));
        let kind = StartFailure::classify(failure.reason.as_deref(), &stderr_text);
        let host_agent_log =
            read_log_tail(&self.lima_home.join(name.as_str()).join("ha.stderr.log"));
        Error::StartFailed {
            name: name.to_string(),
            kind,
            failure: Box::new(failure),
            host_agent_log,
        }
    }
}

/// Turns a failed command into [`Error::CommandFailed`], or [`Error::RunningAsRoot`] when
/// limactl rejected the root user.
pub(crate) fn failure_error(failure: CommandFailure) -> Error {
    if is_root_refusal(&failure) {
        Error::RunningAsRoot
    } else {
        Error::CommandFailed(Box::new(failure))
    }
}

fn is_root_refusal(failure: &CommandFailure) -> bool {
    failure
        .stderr_tail
        .contains("must not run as the root user")
}

fn check(rendered: String, output: Output) -> Result<Output> {
    if output.status.success() {
        return Ok(output);
    }
    Err(failure_error(CommandFailure::new(
        rendered,
        output.status,
        &output.stdout,
        &output.stderr,
    )))
}

/// Checks whether stderr reports that a listed name does not exist.
fn reports_unmatched(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    text.contains("unmatched instances") || text.contains("No instance matching")
}

/// Checks whether a graceful stop failed only because the instance is not running. Lima ≤ 2.1
/// prints `expected status "Running", got "Stopped"`, and Lima 2.2 uses backticks.
fn reports_already_stopped(stderr: &[u8]) -> bool {
    let text = strip_ansi(&String::from_utf8_lossy(stderr)).replace(['"', '`', '\\'], "");
    text.contains("expected status Running, got Stopped")
}

fn validate_spec(spec: &LimaSpec) -> Result<()> {
    if let Some(user) = &spec.ssh_user
        && !is_valid_guest_user(user)
    {
        return Err(Error::InvalidSpec {
            field: "ssh_user",
            value: user.clone(),
            problem: GUEST_USER_RULE.to_owned(),
        });
    }
    if !is_usable_template(&spec.template) {
        return Err(Error::InvalidSpec {
            field: "template",
            value: spec.template.clone(),
            problem: TEMPLATE_RULE.to_owned(),
        });
    }
    Ok(())
}

/// Reads the last lines of a log file, rendering Lima's JSON log lines; `None` when the file
/// cannot be read or is empty.
fn read_log_tail(path: &Path) -> Option<String> {
    const MAX_BYTES: u64 = 64 * 1024;
    let mut file = fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let tail = tail_lines(&render_host_agent_log(&text), TAIL_LINES);
    (!tail.is_empty()).then_some(tail)
}

fn non_empty(value: Option<OsString>) -> Option<OsString> {
    value.filter(|value| !value.is_empty())
}

fn default_lima_home(lookup: &impl Fn(&str) -> Option<OsString>) -> Option<OsString> {
    if let Some(lima_home) = non_empty(lookup("LIMA_HOME")) {
        return Some(lima_home);
    }
    let home = non_empty(lookup("HOME"))?;
    Some(Path::new(&home).join(".lima").into_os_string())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Returns the keys of a YAML mapping printed in block style (`key: value` at column 0); `null`
/// or `{}` has none.
fn top_level_keys(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter(|line| !line.starts_with([' ', '\t', '#', '-']))
        .filter_map(|line| line.split_once(':'))
        .map(|(key, _)| key.trim().trim_matches('"').to_owned())
        .filter(|key| !key.is_empty())
        .collect()
}

/// Makes a program path with a directory part (`./bin/limactl`) absolute, and leaves a bare
/// name (`limactl`) for the `PATH` lookup.
fn program_path(program: PathBuf) -> PathBuf {
    if program.components().count() > 1 {
        absolute(&program)
    } else {
        program
    }
}

fn strings<const N: usize>(args: [&str; N]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

pub(crate) fn version_args() -> Vec<String> {
    strings(["--tty=false", "--version"])
}

pub(crate) fn list_args(names: &[&InstanceName]) -> Vec<String> {
    let mut args = strings(["list", "--tty=false", "--json"]);
    args.extend(names.iter().map(|name| name.to_string()));
    args
}

pub(crate) fn start_existing_args(name: &InstanceName, timeout: Duration) -> Vec<String> {
    vec![
        "start".to_owned(),
        "--tty=false".to_owned(),
        format!("--timeout={}", go_duration(timeout)),
        name.to_string(),
    ]
}

pub(crate) fn stop_args(name: &InstanceName, force: bool) -> Vec<String> {
    let mut args = strings(["stop", "--tty=false"]);
    if force {
        args.push("-f".to_owned());
    }
    args.push(name.to_string());
    args
}

pub(crate) fn delete_args(name: &InstanceName) -> Vec<String> {
    let mut args = strings(["delete", "--tty=false", "-f"]);
    args.push(name.to_string());
    args
}

/// `shell` flags must precede the instance name. Lima drops a `--` right after the name, so
/// this is the documented `limactl shell NAME -- COMMAND` form.
pub(crate) fn shell_args(name: &InstanceName, argv: &[&str], workdir: Option<&str>) -> Vec<String> {
    let mut args = strings(["shell", "--tty=false"]);
    if let Some(workdir) = workdir {
        args.push(format!("--workdir={workdir}"));
    }
    args.push(name.to_string());
    args.push("--".to_owned());
    args.extend(argv.iter().map(|arg| (*arg).to_owned()));
    args
}

#[cfg(test)]
mod tests;
