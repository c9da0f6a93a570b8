//! Tests of the limactl client against `#!/bin/sh` fakes that record their argv.
//!
//! The effective user id is injected, so these tests also run as root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::list::InstanceStatus;

fn unprivileged() -> u32 {
    1000
}

fn root() -> u32 {
    0
}

/// A fake limactl in a temporary directory that appends each argv (one argument per line,
/// then `--end--`) to `calls` and then runs `body`. `LIMA_HOME` is `<dir>/lima`.
struct Fake {
    dir: tempfile::TempDir,
    limactl: Limactl,
}

impl Fake {
    fn new(body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("limactl");
        let calls = dir.path().join("calls");
        let script = format!(
            "#!/bin/sh\n\
             {{ for arg in \"$@\"; do printf '%s\\n' \"$arg\"; done; echo --end--; }} >> '{}'\n\
             {body}\n",
            calls.display()
        );
        fs::write(&program, script).unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        let lima_home = dir.path().join("lima");
        fs::create_dir(&lima_home).unwrap();

        let limactl = Limactl::new(&program)
            .with_lima_home(&lima_home)
            .with_work_dir(dir.path().join("work"))
            .with_effective_uid(unprivileged);
        Self { dir, limactl }
    }

    fn name(&self, name: &str) -> InstanceName {
        InstanceName::new(name, self.limactl.lima_home()).unwrap()
    }

    /// Returns the argv of every call so far, without the program.
    fn calls(&self) -> Vec<Vec<String>> {
        let text = fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default();
        let mut calls = Vec::new();
        let mut current = Vec::new();
        for line in text.lines() {
            if line == "--end--" {
                calls.push(std::mem::take(&mut current));
            } else {
                current.push(line.to_owned());
            }
        }
        calls
    }

    fn lima_home(&self) -> &Path {
        self.limactl.lima_home()
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

const UNMATCHED: &str = "echo 'time=\"2026-01-01T00:00:00Z\" level=warning msg=\"No instance matching kt-a found.\"' >&2\n\
                         echo 'time=\"2026-01-01T00:00:00Z\" level=fatal msg=\"unmatched instances\"' >&2\n\
                         exit 1";

#[test]
fn argv_builders() {
    let lima_home = Path::new("/l");
    let name = InstanceName::new("kt-a", lima_home).unwrap();
    let other = InstanceName::new("kt-b", lima_home).unwrap();

    assert_eq!(version_args(), strings(&["--tty=false", "--version"]));
    assert_eq!(list_args(&[]), strings(&["list", "--tty=false", "--json"]));
    assert_eq!(
        list_args(&[&name, &other]),
        strings(&["list", "--tty=false", "--json", "kt-a", "kt-b"])
    );
    assert_eq!(
        start_existing_args(&name, Duration::from_secs(480)),
        strings(&["start", "--tty=false", "--timeout=8m0s", "kt-a"])
    );
    assert_eq!(
        stop_args(&name, false),
        strings(&["stop", "--tty=false", "kt-a"])
    );
    assert_eq!(
        stop_args(&name, true),
        strings(&["stop", "--tty=false", "-f", "kt-a"])
    );
    assert_eq!(
        delete_args(&name),
        strings(&["delete", "--tty=false", "-f", "kt-a"])
    );
    assert_eq!(
        shell_args(&name, &["sudo", "sh", "-c", "a && b"], None),
        strings(&[
            "shell",
            "--tty=false",
            "kt-a",
            "--",
            "sudo",
            "sh",
            "-c",
            "a && b"
        ])
    );
    assert_eq!(
        shell_args(&name, &["true"], Some("/")),
        strings(&["shell", "--tty=false", "--workdir=/", "kt-a", "--", "true"])
    );
}

#[test]
fn lima_home_env_and_work_dir_passed() {
    let fake = Fake::new(
        "printf '%s\\n' \"$LIMA_HOME\" \"$PWD\" \"${_LIMA_OUTPUT_IS_TTY-unset}\" \"$EXTRA\"",
    );
    let limactl = fake
        .limactl
        .clone()
        .with_env("_LIMA_OUTPUT_IS_TTY", "1")
        .with_env("EXTRA", "extra value")
        .with_env("LIMA_HOME", "/must/not/win");
    let name = fake.name("kt-a");

    let output = limactl
        .shell(&name, &["true"], &ShellOptions::default())
        .unwrap();

    let stdout = output.stdout_lossy();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], fake.lima_home().to_str().unwrap());
    assert_eq!(
        Path::new(lines[1]).canonicalize().unwrap(),
        fake.dir.path().join("work").canonicalize().unwrap()
    );
    assert_eq!(lines[2], "unset");
    assert_eq!(lines[3], "extra value");
}

#[test]
fn relative_program_path_made_absolute() {
    let limactl = Limactl::new("limactl").with_program("bin/limactl");

    assert!(limactl.program().is_absolute());
    assert!(limactl.program().ends_with("bin/limactl"));
}

#[test]
fn bare_program_name_left_for_path_lookup() {
    let limactl = Limactl::new("/opt/lima/limactl").with_program("limactl");

    assert_eq!(limactl.program(), Path::new("limactl"));
}

#[test]
fn relative_lima_home_made_absolute() {
    let limactl = Limactl::new("limactl").with_lima_home("relative/lima");
    assert!(limactl.lima_home().is_absolute());
    assert!(limactl.lima_home().ends_with("relative/lima"));
}

#[test]
fn from_env_reads_variables() {
    let lookup = |key: &str| match key {
        "LIMACTL" => Some(OsString::from("/opt/lima/bin/limactl")),
        "LIMA_HOME" => Some(OsString::from("/tmp/lima")),
        "HOME" => Some(OsString::from("/home/dev")),
        _ => None,
    };
    let limactl = Limactl::from_env_with(lookup, unprivileged).unwrap();

    assert_eq!(limactl.program(), Path::new("/opt/lima/bin/limactl"));
    assert_eq!(limactl.lima_home(), Path::new("/tmp/lima"));
    assert_eq!(limactl.ssh_key_path(), Path::new("/tmp/lima/_config/user"));
}

#[test]
fn from_env_defaults() {
    let lookup = |key: &str| match key {
        "LIMACTL" | "LIMA_HOME" => Some(OsString::new()),
        "HOME" => Some(OsString::from("/home/dev")),
        _ => None,
    };
    let limactl = Limactl::from_env_with(lookup, unprivileged).unwrap();

    assert_eq!(limactl.program(), Path::new("limactl"));
    assert_eq!(limactl.lima_home(), Path::new("/home/dev/.lima"));
}

#[test]
fn from_env_without_home_fails() {
    let error = Limactl::from_env_with(|_| None, unprivileged).unwrap_err();
    assert!(matches!(error, Error::LimaHomeUnknown), "{error:?}");
}

#[test]
fn from_env_as_root_fails() {
    let lookup = |key: &str| (key == "HOME").then(|| OsString::from("/root"));
    let error = Limactl::from_env_with(lookup, root).unwrap_err();

    assert!(matches!(error, Error::RunningAsRoot), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("run the tests as an unprivileged user"),
        "{error}"
    );
}

#[test]
fn root_rejected_before_running() {
    let fake = Fake::new("exit 0");
    let limactl = fake.limactl.clone().with_effective_uid(root);
    let name = fake.name("kt-a");

    let error = limactl.delete(&name).unwrap_err();

    assert!(matches!(error, Error::RunningAsRoot), "{error:?}");
    assert!(fake.calls().is_empty());
}

#[test]
fn root_refusal_from_limactl_mapped() {
    let fake = Fake::new(
        "echo 'time=\"t\" level=fatal msg=\"must not run as the root user\"' >&2; exit 1",
    );
    let name = fake.name("kt-a");

    let error = fake.limactl.delete(&name).unwrap_err();
    assert!(matches!(error, Error::RunningAsRoot), "{error:?}");

    let output = fake
        .limactl
        .shell(&name, &["true"], &ShellOptions::default())
        .unwrap();
    assert!(matches!(output.check(), Err(Error::RunningAsRoot)));
}

#[test]
fn missing_program_hints_at_limactl_variable() {
    let limactl = Limactl::new("/nonexistent/bin/limactl")
        .with_lima_home("/tmp/lima-provisioner-test-home")
        .with_work_dir(tempfile::tempdir().unwrap().path().join("work"))
        .with_effective_uid(unprivileged);

    let error = limactl.version().unwrap_err();

    assert!(matches!(error, Error::Spawn { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with(
            "Failed to start the command `/nonexistent/bin/limactl '--tty=false' --version`: "
        ),
        "{text}"
    );
    assert!(
        text.ends_with("set LIMACTL to the path of the limactl binary."),
        "{text}"
    );
}

#[test]
fn version_supported() {
    let fake = Fake::new("echo 'limactl version 2.2.0-153-g183a60d7'");

    let version = fake.limactl.version().unwrap();

    assert_eq!((version.major, version.minor, version.patch), (2, 2, 0));
    assert_eq!(fake.calls(), vec![strings(&["--tty=false", "--version"])]);
}

#[test]
fn version_too_old() {
    let fake = Fake::new("echo 'limactl version 1.2.1'");

    let error = fake.limactl.version().unwrap_err();

    match &error {
        Error::UnsupportedLimaVersion { found, required } => {
            assert_eq!(found, "1.2.1");
            assert_eq!(required, "2.0.0");
        }
        other => panic!("expected UnsupportedLimaVersion, got {other:?}"),
    }
    assert!(error.to_string().contains("upgrade Lima"), "{error}");
}

#[test]
fn version_unrecognized() {
    let fake = Fake::new("echo 'limactl version unknown'");
    let error = fake.limactl.version().unwrap_err();
    assert!(
        matches!(error, Error::UnrecognizedVersion { .. }),
        "{error:?}"
    );
}

#[test]
fn instance_absent_on_unmatched() {
    let fake = Fake::new(UNMATCHED);
    let name = fake.name("kt-a");

    assert!(fake.limactl.instance(&name).unwrap().is_none());
    assert_eq!(
        fake.calls(),
        vec![strings(&["list", "--tty=false", "--json", "kt-a"])]
    );
}

#[test]
fn instance_found() {
    let fake = Fake::new(
        "echo '{\"name\":\"kt-a\",\"status\":\"Running\",\"sshLocalPort\":51022,\"futureKey\":{\"x\":1}}'",
    );
    let name = fake.name("kt-a");

    let instance = fake.limactl.instance(&name).unwrap().unwrap();

    assert_eq!(instance.status, Some(InstanceStatus::Running));
    assert_eq!(instance.ssh_local_port, Some(51022));
}

#[test]
fn instance_other_failure_is_error() {
    let fake = Fake::new("echo 'time=\"t\" level=fatal msg=\"permission denied\"' >&2; exit 1");
    let name = fake.name("kt-a");

    let error = fake.limactl.instance(&name).unwrap_err();

    let Error::CommandFailed(failure) = &error else {
        panic!("expected CommandFailed, got {error:?}");
    };
    assert_eq!(failure.reason.as_deref(), Some("permission denied"));
    assert!(
        failure
            .command
            .ends_with("/limactl list '--tty=false' --json kt-a"),
        "{}",
        failure.command
    );
}

#[test]
fn instance_zero_or_two_entries_is_error() {
    for (body, count) in [
        ("exit 0", 0),
        ("echo '{\"name\":\"other\"}'", 0),
        ("echo '{\"name\":\"kt-a\"}'; echo '{\"name\":\"kt-a\"}'", 2),
    ] {
        let fake = Fake::new(body);
        let name = fake.name("kt-a");

        match fake.limactl.instance(&name) {
            Err(Error::UnexpectedListOutput {
                count: reported, ..
            }) => assert_eq!(reported, count, "{body}"),
            other => panic!("{body}: expected UnexpectedListOutput, got {other:?}"),
        }
    }
}

#[test]
fn list_all_and_parse_error() {
    let fake = Fake::new("echo '{\"name\":\"a\"}'; echo '[{\"name\":\"b\"}]'");
    let names: Vec<String> = fake
        .limactl
        .list(&[])
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        fake.calls(),
        vec![strings(&["list", "--tty=false", "--json"])]
    );

    let broken = Fake::new("echo '{\"name\":\"a\"}'; echo 'NAME STATUS'");
    let error = broken.limactl.list(&[]).unwrap_err();
    let Error::ListParse {
        error: parse_error, ..
    } = &error
    else {
        panic!("expected ListParse, got {error:?}");
    };
    assert_eq!(parse_error.line, 2);
    assert!(
        error.to_string().starts_with("Parsing the output of `"),
        "{error}"
    );
}

#[test]
fn list_unknown_name_is_error() {
    let fake = Fake::new(UNMATCHED);
    let name = fake.name("kt-a");
    assert!(matches!(
        fake.limactl.list(&[&name]),
        Err(Error::CommandFailed(_))
    ));
}

#[test]
fn delete_absent_is_ok() {
    let fake = Fake::new(
        "echo 'time=\"t\" level=warning msg=\"Ignoring non-existent instance `kt-a`\"' >&2; exit 0",
    );
    let name = fake.name("kt-a");

    fake.limactl.delete(&name).unwrap();

    assert_eq!(
        fake.calls(),
        vec![strings(&["delete", "--tty=false", "-f", "kt-a"])]
    );
}

#[test]
fn delete_protected_fails() {
    let fake = Fake::new(
        "echo 'time=\"t\" level=fatal msg=\"failed to delete instance \\\"kt-a\\\": instance is protected to prohibit accidental removal (Hint: use `limactl unprotect`)\"' >&2; exit 1",
    );
    let name = fake.name("kt-a");

    let error = fake.limactl.delete(&name).unwrap_err();

    assert!(
        error.to_string().contains("instance is protected"),
        "{error}"
    );
}

#[test]
fn stop_of_stopped_is_ok() {
    for line in [
        r#"time="t" level=fatal msg="expected status \"Running\", got \"Stopped\" (maybe use `limactl stop -f`?)""#,
        r#"time="t" level=fatal msg="expected status `Running`, got `Stopped` (maybe use `limactl stop -f`?)""#,
        r#"FATA[0000] expected status "Running", got "Stopped" (maybe use `limactl stop -f`?)"#,
    ] {
        let fake = Fake::new(&format!("cat >&2 <<'EOF'\n{line}\nEOF\nexit 1"));
        let name = fake.name("kt-a");

        fake.limactl
            .stop(&name, false)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(
            fake.calls(),
            vec![strings(&["stop", "--tty=false", "kt-a"])]
        );
    }
}

#[test]
fn stop_other_failure_is_error() {
    let fake = Fake::new(
        r#"echo 'time="t" level=fatal msg="expected status `Running`, got `Broken`"' >&2; exit 1"#,
    );
    let name = fake.name("kt-a");

    assert!(matches!(
        fake.limactl.stop(&name, false),
        Err(Error::CommandFailed(_))
    ));
    assert!(matches!(
        fake.limactl.stop(&name, true),
        Err(Error::CommandFailed(_))
    ));
    assert_eq!(
        fake.calls()[1],
        strings(&["stop", "--tty=false", "-f", "kt-a"])
    );
}

#[test]
fn create_and_start_argv() {
    let fake = Fake::new("exit 0");
    let spec = LimaSpec::new(fake.name("kt-0a1b2c3d"))
        .with_memory_mib(4096)
        .with_api_server_port(16443)
        .with_start_timeout(Duration::from_secs(480));

    fake.limactl.create_and_start(&spec).unwrap();

    assert_eq!(
        fake.calls(),
        vec![strings(&[
            "start",
            "--tty=false",
            "--name=kt-0a1b2c3d",
            "--memory=4",
            "--set=.portForwards = [{\"guestPort\":6443,\"hostPort\":16443},{\"guestIP\":\"0.0.0.0\",\"guestIPMustBeZero\":false,\"proto\":\"any\",\"ignore\":true}]",
            "--timeout=8m0s",
            "template:k3s",
        ])]
    );
}

#[test]
fn create_params_flag_on_2_2() {
    let fake = Fake::new("if [ \"$2\" = --version ]; then echo 'limactl version 2.2.0'; fi");
    let spec = LimaSpec::new(fake.name("kt-a")).with_param("token", "t0k");

    fake.limactl.create_and_start(&spec).unwrap();

    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], strings(&["--tty=false", "--version"]));
    assert_eq!(
        calls[1],
        strings(&[
            "start",
            "--tty=false",
            "--name=kt-a",
            "--param=token=t0k",
            "--timeout=10m0s",
            "template:k3s"
        ])
    );
}

#[test]
fn create_params_set_on_2_1() {
    let fake = Fake::new("if [ \"$2\" = --version ]; then echo 'limactl version 2.1.1'; fi");
    let spec = LimaSpec::new(fake.name("kt-a")).with_param("token", "t0k");

    fake.limactl.create_and_start(&spec).unwrap();

    assert_eq!(
        fake.calls()[1],
        strings(&[
            "start",
            "--tty=false",
            "--name=kt-a",
            "--set=.param[\"token\"] = \"t0k\"",
            "--timeout=10m0s",
            "template:k3s"
        ])
    );
}

#[test]
fn create_rejects_insecure_key_before_running() {
    let fake = Fake::new("exit 0");
    let key = fake.lima_home().join("_config/user");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    fs::write(&key, "key").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let spec = LimaSpec::new(fake.name("kt-a"));

    let error = fake.limactl.create_and_start(&spec).unwrap_err();

    assert!(
        matches!(error, Error::InsecureSshKey { mode: 0o644, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("chmod 600 {}", key.display())),
        "{error}"
    );
    assert!(fake.calls().is_empty());
}

#[test]
fn create_rejects_invalid_ssh_user() {
    let fake = Fake::new("exit 0");
    let spec = LimaSpec::new(fake.name("kt-a")).with_ssh_user("Dev User");

    let error = fake.limactl.create_and_start(&spec).unwrap_err();

    assert!(
        matches!(
            error,
            Error::InvalidSpec {
                field: "ssh_user",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(fake.calls().is_empty());
}

#[test]
fn create_rechecks_socket_budget_for_own_lima_home() {
    let fake = Fake::new("exit 0");
    let spec = LimaSpec::new(InstanceName::new("kt-a", Path::new("/l")).unwrap());
    let long_home = fake.dir.path().join("h".repeat(100));
    let limactl = fake.limactl.clone().with_lima_home(long_home);

    let error = limactl.create_and_start(&spec).unwrap_err();

    assert!(
        matches!(error, Error::InvalidInstanceName { .. }),
        "{error:?}"
    );
    assert!(fake.calls().is_empty());
}

#[test]
fn start_timeout_classified_with_host_agent_log() {
    let fake = Fake::new(
        "echo 'time=\"t\" level=info msg=\"[hostagent] Waiting for the essential requirement 1 of 2: \\\"ssh\\\"\"' >&2\n\
         echo 'time=\"t\" level=fatal msg=\"did not receive an event with the `running` status\"' >&2\n\
         exit 1",
    );
    let instance_dir = fake.lima_home().join("kt-a");
    fs::create_dir(&instance_dir).unwrap();
    fs::write(
        instance_dir.join("ha.stderr.log"),
        "{\"level\":\"info\",\"msg\":\"Waiting for the essential requirement 1 of 2: \\\"ssh\\\"\",\"time\":\"t\"}\n",
    )
    .unwrap();
    let spec = LimaSpec::new(fake.name("kt-a"));

    let error = fake.limactl.create_and_start(&spec).unwrap_err();

    let Error::StartFailed {
        name,
        kind,
        failure,
        host_agent_log,
    } = &error
    else {
        panic!("expected StartFailed, got {error:?}");
    };
    assert_eq!(name, "kt-a");
    assert_eq!(*kind, StartFailure::Timeout);
    assert_eq!(
        failure.reason.as_deref(),
        Some("did not receive an event with the `running` status")
    );
    assert_eq!(
        host_agent_log.as_deref(),
        Some("info: Waiting for the essential requirement 1 of 2: \"ssh\"")
    );
}

#[test]
fn start_failures_from_sample_stderr() {
    // The captured `limactl start` stderr sample: its log lines, then one of its fatal lines.
    let sample = include_str!("../../tests/data/limactl-start-stderr.txt");
    let (fatal_lines, log_lines): (Vec<&str>, Vec<&str>) = sample
        .lines()
        .filter(|line| !line.starts_with('#'))
        .partition(|line| line.starts_with("FATA["));
    let log = log_lines.join("\n");
    assert_eq!(fatal_lines.len(), 3);

    let expected = [
        StartFailure::Timeout,
        StartFailure::Other,
        StartFailure::Other,
    ];
    for (line, expected) in fatal_lines.iter().zip(expected) {
        let fake = Fake::new(&format!("cat >&2 <<'EOF'\n{log}\n{line}\nEOF\nexit 1"));
        let spec = LimaSpec::new(fake.name("colima"));

        match fake.limactl.create_and_start(&spec) {
            Err(Error::StartFailed { kind, .. }) => assert_eq!(kind, expected, "{line}"),
            other => panic!("{line}: expected StartFailed, got {other:?}"),
        }
    }
}

#[test]
fn template_params_lists_declared_keys() {
    let fake =
        Fake::new("printf 'internal_netplanOptional: \"true\"\\ntoken: \"\"\\nurl: \"\"\\n'");

    let params = fake.limactl.template_params("template:k3s").unwrap();

    assert_eq!(params, ["internal_netplanOptional", "token", "url"]);
    assert_eq!(
        fake.calls(),
        [strings(&[
            "--tty=false",
            "template",
            "yq",
            "template:k3s",
            ".param"
        ])]
    );
}

#[test]
fn template_without_params_has_none() {
    let fake = Fake::new("echo null");

    assert!(
        fake.limactl
            .template_params("template:k3s")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn secret_param_redacted_from_start_error() {
    let token = "K10abc::server:s3cr3t";
    let body = format!(
        "case \"$1\" in --tty=false) echo 'limactl version 2.2.0'; exit 0;; esac\n\
         echo 'level=fatal msg=\"join with token {token} failed\"' >&2\nexit 1"
    );
    let fake = Fake::new(&body);
    let mut spec = LimaSpec::new(fake.name("agent"));
    spec.params.insert("token".to_owned(), token.to_owned());
    spec.params.insert(
        "url".to_owned(),
        "https://lima-server.internal:6443".to_owned(),
    );
    spec.secret_params.insert("token".to_owned());

    let error = fake
        .limactl
        .create_and_start(&spec)
        .unwrap_err()
        .to_string();

    assert!(!error.contains("s3cr3t"), "{error}");
    assert!(error.contains("token=<redacted>"), "{error}");
    assert!(
        error.contains("https://lima-server.internal:6443"),
        "{error}"
    );
    let start = fake.calls().pop().unwrap();
    assert!(
        start.contains(&format!("--param=token={token}")),
        "limactl still gets the token: {start:?}"
    );
}

#[test]
fn start_existing_refuses_unknown_name() {
    let fake = Fake::new(UNMATCHED);
    let name = fake.name("kt-a");

    let error = fake
        .limactl
        .start_existing(&name, Duration::from_secs(60))
        .unwrap_err();

    assert!(matches!(error, Error::InstanceNotFound { .. }), "{error:?}");
    assert_eq!(fake.calls().len(), 1, "only the list call may run");
}

#[test]
fn start_existing_argv() {
    let fake = Fake::new(
        "if [ \"$1\" = list ]; then echo '{\"name\":\"kt-a\",\"status\":\"Stopped\"}'; fi",
    );
    let name = fake.name("kt-a");

    fake.limactl
        .start_existing(&name, Duration::from_secs(300))
        .unwrap();

    assert_eq!(
        fake.calls()[1],
        strings(&["start", "--tty=false", "--timeout=5m0s", "kt-a"])
    );
}

#[test]
fn shell_passes_argv_workdir_and_stdin() {
    let fake = Fake::new("cat; echo \"args:$*\" >&2; exit 7");
    let name = fake.name("kt-a");
    let options = ShellOptions {
        workdir: Some("/".into()),
        timeout: Duration::from_secs(10),
        stdin: Some(b"image bytes".to_vec()),
    };

    let output = fake
        .limactl
        .shell(&name, &["sudo", "sh", "-c", "echo 'a b' && true"], &options)
        .unwrap();

    assert_eq!(output.status.code(), Some(7));
    assert_eq!(output.stdout, b"image bytes");
    assert_eq!(
        fake.calls(),
        vec![strings(&[
            "shell",
            "--tty=false",
            "--workdir=/",
            "kt-a",
            "--",
            "sudo",
            "sh",
            "-c",
            "echo 'a b' && true"
        ])]
    );
    let rendered = output.command().to_owned();
    assert!(
        rendered.ends_with("/limactl shell '--tty=false' '--workdir=/' kt-a -- sudo sh -c 'echo '\\''a b'\\'' && true'"),
        "{rendered}"
    );

    let error = output.check().unwrap_err();
    let text = error.to_string();
    assert!(text.contains("failed with exit code 7."), "{text}");
    assert!(
        text.contains("stderr (last 1 line):\n  args:shell --tty=false"),
        "{text}"
    );
    assert!(
        text.contains("stdout (last 1 line):\n  image bytes"),
        "{text}"
    );
}

#[test]
fn shell_timeout_kills() {
    let fake = Fake::new("sleep 300");
    let name = fake.name("kt-a");

    let error = fake
        .limactl
        .shell(
            &name,
            &["true"],
            &ShellOptions::with_timeout(Duration::from_millis(300)),
        )
        .unwrap_err();

    assert!(matches!(error, Error::TimedOut(_)), "{error:?}");
}

#[test]
fn shell_command_for_streaming() {
    let fake = Fake::new("cat");
    let name = fake.name("kt-a");

    let mut command = fake.limactl.shell_command(
        &name,
        &["sudo", "k3s", "ctr", "images", "import", "-"],
        Some("/"),
    );
    let args: Vec<String> = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        strings(&[
            "shell",
            "--tty=false",
            "--workdir=/",
            "kt-a",
            "--",
            "sudo",
            "k3s",
            "ctr",
            "images",
            "import",
            "-"
        ])
    );
    let lima_home = command
        .get_envs()
        .find(|(key, _)| *key == "LIMA_HOME")
        .and_then(|(_, value)| value)
        .map(|value| value.to_owned());
    assert_eq!(lima_home.as_deref(), Some(fake.lima_home().as_os_str()));

    let output = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"streamed")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(output.stdout, b"streamed");

    assert_eq!(
        fake.limactl
            .render_shell_command(&name, &["sh", "-c", "echo $HOME"], None),
        format!(
            "{}/limactl shell '--tty=false' kt-a -- sh -c 'echo $HOME'",
            fake.dir.path().display()
        )
    );
}

#[test]
fn debug_hides_env_values() {
    let limactl =
        Limactl::new("limactl").with_env("HTTPS_PROXY", "http://user:secret@127.0.0.1:3128");
    let text = format!("{limactl:?}");

    assert!(text.contains("HTTPS_PROXY"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}

#[test]
fn client_and_errors_cross_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Limactl>();
    assert_send_sync::<Error>();
    assert_send_sync::<crate::provisioner::Provisioner>();
}
