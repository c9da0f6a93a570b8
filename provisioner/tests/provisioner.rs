//! The Provisioner operations end to end against a stateful `#!/bin/sh` fake limactl.
//!
//! The fake keeps one file per instance holding its status, prints Lima 2.2's stderr wording
//! for absent and stopped instances, and records every argv. limactl rejects root, and so does
//! this crate: run these tests as an unprivileged user. As root, each test checks that the
//! crate rejects root and stops there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lima_provisioner::{
    EnsureOutcome, Error, InstanceName, LimaSpec, Limactl, Provisioner, SshEndpoint,
};

const FAKE_LIMACTL: &str = r#"#!/bin/sh
state="$FAKE_STATE"
{ for arg in "$@"; do printf '%s\n' "$arg"; done; echo --end--; } >> "$state/calls"
command="$1"
shift

# The last argument that is not a flag.
last_operand() {
    operand=""
    for arg in "$@"; do
        case "$arg" in
            -*) ;;
            *) operand="$arg" ;;
        esac
    done
    printf '%s' "$operand"
}

print_instance() {
    printf '{"name":"%s","status":"%s","dir":"%s/%s","sshLocalPort":51022,"sshAddress":"127.0.0.1","config":{"user":{"name":"dev","uid":1000,"home":"/home/dev.guest"}},"errors":[],"HostOS":"linux"}\n' \
        "$1" "$(cat "$state/$1")" "$LIMA_HOME" "$1"
}

case "$command" in
list)
    name=$(last_operand "$@")
    if [ -z "$name" ]; then
        for file in "$state"/*; do
            base=$(basename "$file")
            case "$base" in
                calls|*.*|created-from-default-template) continue ;;
            esac
            print_instance "$base"
        done
        exit 0
    fi
    if [ ! -f "$state/$name" ]; then
        echo "time=\"t\" level=warning msg=\"No instance matching $name found.\"" >&2
        echo 'time="t" level=fatal msg="unmatched instances"' >&2
        exit 1
    fi
    print_instance "$name"
    ;;
start)
    name=""
    for arg in "$@"; do
        case "$arg" in
            --name=*) name="${arg#--name=}" ;;
        esac
    done
    if [ -n "$name" ]; then
        if [ -f "$state/$name" ]; then
            echo "time=\"t\" level=fatal msg=\"instance \`$name\` already exists\"" >&2
            exit 1
        fi
        echo Running > "$state/$name"
        exit 0
    fi
    name=$(last_operand "$@")
    if [ ! -f "$state/$name" ]; then
        # Lima creates a default Ubuntu instance here; the provisioner must never get here.
        touch "$state/created-from-default-template"
    fi
    echo Running > "$state/$name"
    ;;
stop)
    force=no
    for arg in "$@"; do
        case "$arg" in
            -f|--force) force=yes ;;
        esac
    done
    name=$(last_operand "$@")
    if [ ! -f "$state/$name" ]; then
        echo "time=\"t\" level=fatal msg=\"instance \`$name\` does not exist\"" >&2
        exit 1
    fi
    if [ "$force" = no ] && [ "$(cat "$state/$name")" != Running ]; then
        echo "time=\"t\" level=fatal msg=\"expected status \`Running\`, got \`$(cat "$state/$name")\` (maybe use \`limactl stop -f\`?)\"" >&2
        exit 1
    fi
    if [ "$force" = no ] && [ -f "$state/$name.graceful-stop-fails" ]; then
        echo 'time="t" level=fatal msg="did not receive an event with the `exiting` status"' >&2
        exit 1
    fi
    echo Stopped > "$state/$name"
    ;;
delete)
    name=$(last_operand "$@")
    if [ ! -f "$state/$name" ]; then
        echo "time=\"t\" level=warning msg=\"Ignoring non-existent instance \`$name\`\"" >&2
        exit 0
    fi
    rm -f "$state/$name"
    ;;
shell)
    name=""
    for arg in "$@"; do
        case "$arg" in
            -*) ;;
            *) name="$arg"; break ;;
        esac
    done
    if [ ! -f "$state/$name" ]; then
        echo "time=\"t\" level=fatal msg=\"instance \\\"$name\\\" does not exist, run \`limactl create $name\` to create a new instance\"" >&2
        exit 1
    fi
    if [ "$(cat "$state/$name")" != Running ]; then
        echo "time=\"t\" level=fatal msg=\"instance \\\"$name\\\" is stopped, run \`limactl start $name\` to start the instance\"" >&2
        exit 1
    fi
    failures_file="$state/$name.shell-failures"
    if [ -f "$failures_file" ]; then
        failures=$(cat "$failures_file")
        if [ "$failures" -gt 0 ]; then
            echo $((failures - 1)) > "$failures_file"
            echo "ssh: connect to host 127.0.0.1 port 51022: Connection refused" >&2
            exit 255
        fi
    fi
    exit 0
    ;;
*)
    echo "time=\"t\" level=fatal msg=\"unknown command $command\"" >&2
    exit 1
    ;;
esac
"#;

struct Fake {
    dir: tempfile::TempDir,
    provisioner: Provisioner,
}

impl Fake {
    /// Sets up the fake, or returns `None` as root after checking that root is rejected.
    fn new() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("limactl");
        fs::write(&program, FAKE_LIMACTL).unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        let lima_home = dir.path().join("lima");
        fs::create_dir(&lima_home).unwrap();

        let limactl = Limactl::new(&program)
            .with_lima_home(&lima_home)
            .with_work_dir(dir.path().join("work"))
            .with_env("FAKE_STATE", &state);
        let provisioner = Provisioner::new(limactl);

        if nix::unistd::geteuid().is_root() {
            let name = InstanceName::new("kt-root", &lima_home).unwrap();
            let error = provisioner.exists(&name).unwrap_err();
            assert!(matches!(error, Error::RunningAsRoot), "{error:?}");
            assert!(!state.join("calls").exists(), "limactl ran as root");
            eprintln!(
                "running as root: checked that root is rejected; run as an unprivileged user for the rest"
            );
            return None;
        }
        Some(Self { dir, provisioner })
    }

    fn name(&self, name: &str) -> InstanceName {
        InstanceName::new(name, self.provisioner.limactl().lima_home()).unwrap()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn set_status(&self, name: &str, status: &str) {
        fs::write(self.state().join(name), format!("{status}\n")).unwrap();
    }

    fn status(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.state().join(name))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Returns each recorded call as its argv joined with spaces, without the program.
    fn calls(&self) -> Vec<String> {
        let text = fs::read_to_string(self.state().join("calls")).unwrap_or_default();
        text.split("--end--\n")
            .filter(|call| !call.is_empty())
            .map(|call| call.lines().collect::<Vec<_>>().join(" "))
            .collect()
    }
}

#[test]
fn lifecycle_create_stop_start_destroy() {
    let Some(fake) = Fake::new() else { return };
    let provisioner = &fake.provisioner;
    let name = fake.name("kt-0a1b2c3d");
    let spec = LimaSpec::new(name.clone())
        .with_cpus(2)
        .with_api_server_port(16443)
        .with_start_timeout(Duration::from_secs(480));

    assert!(!provisioner.exists(&name).unwrap());
    assert_eq!(provisioner.get_ip(&name).unwrap(), None);

    assert_eq!(
        provisioner.ensure_exists(&spec).unwrap(),
        EnsureOutcome::Created
    );
    assert_eq!(fake.status("kt-0a1b2c3d").as_deref(), Some("Running"));
    assert!(provisioner.exists(&name).unwrap());
    assert_eq!(
        provisioner.ensure_exists(&spec).unwrap(),
        EnsureOutcome::AlreadyRunning
    );
    assert_eq!(
        provisioner.get_ip(&name).unwrap(),
        Some(SshEndpoint {
            address: "127.0.0.1".into(),
            port: 51022
        })
    );

    provisioner.stop(&name).unwrap();
    assert_eq!(fake.status("kt-0a1b2c3d").as_deref(), Some("Stopped"));
    assert_eq!(provisioner.get_ip(&name).unwrap(), None);

    assert_eq!(
        provisioner.ensure_exists(&spec).unwrap(),
        EnsureOutcome::Started
    );
    assert_eq!(fake.status("kt-0a1b2c3d").as_deref(), Some("Running"));

    provisioner.destroy(&name).unwrap();
    assert!(!provisioner.exists(&name).unwrap());
    provisioner.destroy(&name).unwrap();

    let starts: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("start"))
        .collect();
    assert_eq!(
        starts,
        [
            "start --tty=false --name=kt-0a1b2c3d --cpus=2 --set=.portForwards = \
             [{\"guestPort\":6443,\"hostPort\":16443},{\"guestIP\":\"0.0.0.0\",\
             \"guestIPMustBeZero\":false,\"proto\":\"any\",\"ignore\":true}] --timeout=8m0s template:k3s",
            "start --tty=false --timeout=8m0s kt-0a1b2c3d",
        ]
    );
    assert!(!fake.state().join("created-from-default-template").exists());
}

#[test]
fn stop_of_stopped_instance_is_noop() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");
    fake.set_status("kt-a", "Stopped");

    fake.provisioner.stop(&name).unwrap();
    fake.provisioner.limactl().stop(&name, false).unwrap();

    let stops: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("stop"))
        .collect();
    assert_eq!(
        stops,
        ["stop --tty=false kt-a"],
        "only the direct limactl call may stop"
    );
}

#[test]
fn stop_forces_after_graceful_failure() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");
    fake.set_status("kt-a", "Running");
    fs::write(fake.state().join("kt-a.graceful-stop-fails"), "").unwrap();

    fake.provisioner.stop(&name).unwrap();

    assert_eq!(fake.status("kt-a").as_deref(), Some("Stopped"));
    let stops: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("stop"))
        .collect();
    assert_eq!(stops, ["stop --tty=false kt-a", "stop --tty=false -f kt-a"]);
}

#[test]
fn stop_of_absent_instance_fails() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");

    let error = fake.provisioner.stop(&name).unwrap_err();

    assert!(matches!(error, Error::InstanceNotFound { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("The Lima instance \"kt-a\" does not exist in LIMA_HOME /"),
        "{error}"
    );
}

#[test]
fn ensure_exists_rejects_broken_instance() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");
    fake.set_status("kt-a", "Broken");

    let error = fake
        .provisioner
        .ensure_exists(&LimaSpec::new(name))
        .unwrap_err();

    assert!(matches!(error, Error::UnusableInstance { .. }), "{error:?}");
    assert!(
        error.to_string().contains("limactl delete -f kt-a"),
        "{error}"
    );
    assert!(!fake.calls().iter().any(|call| call.starts_with("start")));
}

#[test]
fn host_vars_of_running_instance() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");
    fake.set_status("kt-a", "Running");

    let vars = fake.provisioner.host_vars(&name).unwrap();

    assert_eq!(vars.ssh_hostname, "127.0.0.1");
    assert_eq!(vars.ssh_port, 51022);
    assert_eq!(vars.ssh_user, "dev");
    let lima_home: &Path = fake.provisioner.limactl().lima_home();
    assert_eq!(vars.ssh_private_key_file, lima_home.join("_config/user"));
    let map = vars.to_map();
    assert_eq!(map["jet_ssh_port"], "51022");
}

#[test]
fn host_vars_of_stopped_instance_fails() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");
    fake.set_status("kt-a", "Stopped");

    let error = fake.provisioner.host_vars(&name).unwrap_err();

    assert!(
        matches!(error, Error::InstanceNotRunning { .. }),
        "{error:?}"
    );
}

#[test]
fn wait_ready_retries_until_shell_works() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");
    fake.set_status("kt-a", "Running");
    fs::write(fake.state().join("kt-a.shell-failures"), "3\n").unwrap();

    let started = Instant::now();
    fake.provisioner
        .wait_ready(&name, Duration::from_secs(30))
        .unwrap();
    let elapsed = started.elapsed();

    let shells: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("shell"))
        .collect();
    assert_eq!(shells.len(), 4);
    assert_eq!(shells[0], "shell --tty=false kt-a -- true");
    // Backoff 250 ms + 500 ms + 1 s between the four attempts.
    assert!(
        elapsed >= Duration::from_millis(1750),
        "retried too fast: {elapsed:?}"
    );
}

#[test]
fn wait_ready_times_out_with_last_failure() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");
    fake.set_status("kt-a", "Running");
    fs::write(fake.state().join("kt-a.shell-failures"), "1000\n").unwrap();

    let error = fake
        .provisioner
        .wait_ready(&name, Duration::from_millis(1200))
        .unwrap_err();

    let Error::WaitTimedOut {
        what,
        after,
        last_failure,
    } = &error
    else {
        panic!("expected WaitTimedOut, got {error:?}");
    };
    assert!(what.contains("shell '--tty=false' kt-a -- true"), "{what}");
    assert!(*after >= Duration::from_millis(1200), "{after:?}");
    assert!(*after < Duration::from_secs(5), "{after:?}");
    let last_failure = last_failure.as_deref().unwrap();
    assert!(last_failure.contains("exit code 255"), "{last_failure}");
    assert!(
        last_failure.contains("Connection refused"),
        "{last_failure}"
    );
}

#[test]
fn wait_ready_fails_fast_for_absent_instance() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");

    let started = Instant::now();
    let error = fake
        .provisioner
        .wait_ready(&name, Duration::from_secs(30))
        .unwrap_err();

    assert!(matches!(error, Error::InstanceNotFound { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn start_existing_never_creates() {
    let Some(fake) = Fake::new() else { return };
    let name = fake.name("kt-a");

    let error = fake
        .provisioner
        .limactl()
        .start_existing(&name, Duration::from_secs(60))
        .unwrap_err();

    assert!(matches!(error, Error::InstanceNotFound { .. }), "{error:?}");
    assert!(!fake.state().join("created-from-default-template").exists());
}

#[test]
fn list_all_instances() {
    let Some(fake) = Fake::new() else { return };
    fake.set_status("kt-a", "Running");
    fake.set_status("kt-b", "Stopped");

    let instances = fake.provisioner.limactl().list(&[]).unwrap();

    let names: Vec<&str> = instances
        .iter()
        .map(|instance| instance.name.as_str())
        .collect();
    assert_eq!(names, ["kt-a", "kt-b"]);
    assert_eq!(
        instances[1].kubeconfig_path(),
        Some(
            fake.provisioner
                .limactl()
                .lima_home()
                .join("kt-b/copied-from-guest/kubeconfig.yaml")
        )
    );
}
