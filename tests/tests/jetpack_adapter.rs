//! The Jetpack adapter example (`provisioner/examples/jetpack_adapter.rs`) against the fake
//! `limactl`: `ensure_exists` boots the instance and adds the connection variables to the
//! host's `host_vars` file, `destroy` deletes both, and a bad config creates nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k3s_harness_tests::{SimulatedLima, workspace_example};
use lima_provisioner::pick_free_port;
use serde_json::Value;

/// Upper bound for one adapter run. A fake boot takes about a second; the config below gives
/// `limactl start` two minutes.
const RUN_DEADLINE: Duration = Duration::from_secs(240);

const HOST: &str = "web1";

/// The fake Lima host, a scratch inventory directory and the example binary.
struct Fixture {
    lima: SimulatedLima,
    scratch: tempfile::TempDir,
    program: PathBuf,
}

/// What one adapter run printed.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Fixture {
    fn new(provision_block: &str) -> Self {
        let scratch = tempfile::tempdir().expect("a scratch directory can be created");
        let fixture = Fixture {
            lima: SimulatedLima::new(),
            scratch,
            program: workspace_example("jetpack_adapter"),
        };
        fs::create_dir_all(fixture.inventory().join("host_vars")).unwrap();
        fs::write(
            fixture.host_vars_path(),
            format!("# web tier\nenv_name: demo\nprovision:\n{provision_block}"),
        )
        .unwrap();
        fixture
    }

    fn inventory(&self) -> PathBuf {
        self.scratch.path().join("inventory")
    }

    fn host_vars_path(&self) -> PathBuf {
        self.inventory().join("host_vars").join(HOST)
    }

    fn host_vars_text(&self) -> String {
        fs::read_to_string(self.host_vars_path()).unwrap()
    }

    fn host_vars(&self) -> BTreeMap<String, Value> {
        serde_saphyr::from_str(&self.host_vars_text()).expect("host_vars is a YAML mapping")
    }

    /// Runs the example with `action`, killing it after [`RUN_DEADLINE`].
    fn run(&self, action: &str) -> Run {
        let stdout_path = self.scratch.path().join("stdout");
        let stderr_path = self.scratch.path().join("stderr");
        let mut child = Command::new(&self.program)
            .args([action, &self.inventory().to_string_lossy(), HOST])
            .env("LIMACTL", self.lima.limactl())
            .env("LIMA_HOME", self.lima.home())
            .env("FAKE_LIMACTL_LOG", self.lima.log_path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("the example runs");

        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > RUN_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "jetpack_adapter {action} ran longer than {RUN_DEADLINE:?}; stderr: {}",
                    fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };

        Run {
            success: status.success(),
            stdout: fs::read_to_string(&stdout_path).unwrap().trim().to_owned(),
            stderr: fs::read_to_string(&stderr_path).unwrap(),
        }
    }

    /// Runs `action` and returns its stdout, panicking with stderr when it fails.
    fn run_ok(&self, action: &str) -> String {
        let run = self.run(action);
        assert!(
            run.success,
            "jetpack_adapter {action} failed: {}",
            run.stderr
        );
        run.stdout
    }

    /// Returns the instance's entry in `limactl list --json`.
    fn listed_instance(&self) -> Value {
        let output = self
            .lima
            .command()
            .args(["list", "--json", HOST])
            .output()
            .expect("the fake limactl runs");
        assert!(
            output.status.success(),
            "limactl list failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("limactl list prints one JSON object")
    }

    /// Returns the argv of every `limactl start`.
    fn start_invocations(&self) -> Vec<Vec<String>> {
        self.lima
            .invocations()
            .into_iter()
            .filter(|argv| argv.first().map(String::as_str) == Some("start"))
            .collect()
    }
}

fn provision_block(api_port: u16) -> String {
    format!(
        "  type: lima\n  cluster: local\n  memory: \"2048\"\n  cores: \"2\"\n  \
         wait_for_host: false\n  wait_timeout: 60\n  start_timeout: 2m\n  \
         port_forwards: \"{api_port}:6443\"\n"
    )
}

#[test]
fn adapter_creates_writes_vars_and_destroys() {
    let api_port = pick_free_port().unwrap();
    let fixture = Fixture::new(&provision_block(api_port));
    let original = fixture.host_vars_text();

    assert_eq!(fixture.run_ok("exists"), "false");
    assert_eq!(fixture.run_ok("ensure_exists"), "Created");

    assert_eq!(fixture.lima.instance_names(), [HOST]);
    let starts = fixture.start_invocations();
    assert_eq!(starts.len(), 1, "{starts:?}");
    let start = &starts[0];
    for expected in [
        "--name=web1".to_owned(),
        "--cpus=2".to_owned(),
        "--memory=2".to_owned(),
        format!("--set=.portForwards = [{{\"guestPort\":6443,\"hostPort\":{api_port}}}]"),
        "--timeout=2m0s".to_owned(),
    ] {
        assert!(start.contains(&expected), "{expected} missing in {start:?}");
    }

    let listed = fixture.listed_instance();
    let vars = fixture.host_vars();
    assert_eq!(vars["jet_ssh_hostname"], "127.0.0.1");
    assert!(vars["jet_ssh_port"].is_u64(), "{vars:?}");
    assert_eq!(vars["jet_ssh_port"], listed["sshLocalPort"]);
    assert_eq!(vars["jet_ssh_user"], listed["config"]["user"]["name"]);
    assert_eq!(
        vars["jet_ssh_private_key_file"],
        fixture
            .lima
            .home()
            .join("_config/user")
            .to_string_lossy()
            .as_ref()
    );
    assert_eq!(vars["env_name"], "demo");
    assert_eq!(vars["provision"]["memory"], "2048");
    assert!(
        fixture.host_vars_text().starts_with(&original),
        "the user's lines are kept as written: {}",
        fixture.host_vars_text()
    );

    assert_eq!(fixture.run_ok("get_ip"), "127.0.0.1");
    assert_eq!(fixture.run_ok("ensure_exists"), "AlreadyExists");
    assert_eq!(fixture.start_invocations().len(), 1, "no second create");
    let rewritten = fixture.host_vars_text();
    assert_eq!(
        rewritten.matches("jet_ssh_port:").count(),
        1,
        "the variables are replaced, not appended again: {rewritten}"
    );

    assert_eq!(fixture.run_ok("destroy"), "Destroyed");
    assert_eq!(fixture.lima.instance_names(), Vec::<String>::new());
    assert_eq!(fixture.host_vars_text(), original);
    assert_eq!(fixture.run_ok("exists"), "false");
    assert_eq!(fixture.run_ok("get_ip"), "none");
}

#[test]
fn absent_state_keeps_running_instance() {
    let fixture = Fixture::new(&provision_block(pick_free_port().unwrap()));
    assert_eq!(fixture.run_ok("apply"), "Created");
    let text = fixture.host_vars_text();
    fs::write(
        fixture.host_vars_path(),
        text.replace("  type: lima\n", "  type: lima\n  state: absent\n"),
    )
    .unwrap();

    let refused = fixture.run("apply");

    assert!(!refused.success, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("set `state: stopped` first"),
        "{}",
        refused.stderr
    );
    assert_eq!(fixture.lima.instance_names(), [HOST]);

    assert_eq!(fixture.run_ok("stop"), "Stopped");
    assert_eq!(fixture.run_ok("stop"), "AlreadyExists");
    assert_eq!(fixture.run_ok("apply"), "Destroyed");
    assert_eq!(fixture.lima.instance_names(), Vec::<String>::new());
}

#[test]
fn invalid_config_creates_nothing() {
    let block = provision_block(pick_free_port().unwrap()).replace("\"2048\"", "\"2G\"");
    let fixture = Fixture::new(&block);
    let original = fixture.host_vars_text();

    let run = fixture.run("ensure_exists");

    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("The provision setting `memory` has the invalid value \"2G\""),
        "{}",
        run.stderr
    );
    assert!(fixture.start_invocations().is_empty());
    assert_eq!(fixture.lima.instance_names(), Vec::<String>::new());
    assert_eq!(fixture.host_vars_text(), original);
}

#[test]
fn unknown_key_names_key() {
    let block = format!(
        "{}  templte: template:k3s\n",
        provision_block(pick_free_port().unwrap())
    );
    let fixture = Fixture::new(&block);

    let run = fixture.run("ensure_exists");

    assert!(!run.success, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("The provision setting `templte` is unknown"),
        "{}",
        run.stderr
    );
    assert!(fixture.start_invocations().is_empty());
}
