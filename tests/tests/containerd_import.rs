//! Imports test archives into a private containerd with
//! `ctr -n k8s.io images import --platform linux/amd64 -`, the command the harness runs in the
//! VM, and checks that `inspect_archive` predicts the image names that containerd stores.
//!
//! The tests need `containerd` and `ctr` on `PATH`, and root, either directly or through
//! passwordless `sudo`. Without them each test prints why it skipped and passes, unless
//! `K3S_HARNESS_REQUIRE_TOOLS=1` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use k3s_harness::image::{
    ArchiveFormat, Compression, ImageError, carries_platform, inspect_archive, open_for_import,
};
use k3s_harness::testing::{
    TestImage, gzip_file, write_docker_archive, write_multiplatform_oci_archive, write_oci_archive,
    write_oci_archive_with_annotations,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, geteuid};
use tempfile::TempDir;

/// Platform that the imports request, as the harness does for an x86_64 guest.
const PLATFORM: &str = "linux/amd64";
/// Maximum wait for a new containerd to respond to `ctr version`. containerd 1.6.20 logged a
/// boot time of 0.04 s on an idle 2-core Debian 12 VM, and the margin covers a loaded CI host.
const CONTAINERD_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Maximum wait for containerd to exit after SIGTERM before it gets SIGKILL.
const CONTAINERD_STOP_GRACE: Duration = Duration::from_secs(10);
/// Deadline of one `ctr images import` of a test archive (a few KiB).
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of `ctr version`, `ctr images ls` and `sudo -n true`.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between polls of a child process.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

#[test]
fn oci_and_docker_archives_import() {
    let Some(privilege) = check_preconditions() else {
        return;
    };
    let containerd = Containerd::start(privilege);
    let archives = TempDir::new().unwrap();

    let oci = archives.path().join("oci.tar");
    write_oci_archive(
        &oci,
        &[
            test_image("example.test/op:1.0", "amd64"),
            test_image("docker.io/library/helper:2.1", "amd64"),
        ],
    )
    .unwrap();
    let docker = archives.path().join("docker.tar");
    write_docker_archive(
        &docker,
        &[
            test_image("op-docker:1.0", "amd64"),
            test_image("ghcr.io/team/sidecar:0.3", "amd64"),
        ],
    )
    .unwrap();
    let gzipped = archives.path().join("gzipped.tar");
    let gzipped_source = archives.path().join("gzipped-source.tar");
    write_oci_archive(
        &gzipped_source,
        &[test_image("example.test/zipped:3", "amd64")],
    )
    .unwrap();
    gzip_file(&gzipped_source, &gzipped).unwrap();

    let cases = [
        (&oci, ArchiveFormat::Oci, Compression::None),
        (&docker, ArchiveFormat::DockerArchive, Compression::None),
        (&gzipped, ArchiveFormat::Oci, Compression::Gzip),
    ];
    for (path, format, compression) in cases {
        let info = inspect_archive(path).unwrap();
        assert_eq!(info.format, format, "format of {}", path.display());
        assert_eq!(
            info.compression,
            compression,
            "compression of {}",
            path.display()
        );
        assert!(
            carries_platform(&info, PLATFORM),
            "{} carries {PLATFORM}",
            path.display()
        );

        let before = containerd.image_names();
        let import = containerd.import(open_for_import(path, info.compression).unwrap());
        import.assert_success();
        let added: BTreeSet<String> = containerd
            .image_names()
            .difference(&before)
            .cloned()
            .collect();

        let expected: BTreeSet<String> = info
            .images
            .iter()
            .map(|image| image.reference.as_str().to_owned())
            .collect();
        assert_eq!(
            added,
            expected,
            "names that ctr stored for {}",
            path.display()
        );
    }
}

#[test]
fn ctr_rejects_gzip_stream() {
    let Some(privilege) = check_preconditions() else {
        return;
    };
    let containerd = Containerd::start(privilege);
    let archives = TempDir::new().unwrap();
    let plain = archives.path().join("oci.tar");
    let gzipped = archives.path().join("oci.tar.gz");
    write_oci_archive(&plain, &[test_image("example.test/op:1.0", "amd64")]).unwrap();
    gzip_file(&plain, &gzipped).unwrap();

    // Streaming the compressed bytes as they are is what `open_for_import` avoids.
    let import = containerd.import(Box::new(File::open(&gzipped).unwrap()));

    assert!(
        !import.status.success(),
        "ctr accepted a gzip stream: {}",
        import.describe()
    );
    assert!(
        import.stderr.contains("invalid tar header"),
        "unexpected ctr error: {}",
        import.describe()
    );
}

#[test]
fn multiplatform_archive_imports_for_amd64() {
    let Some(privilege) = check_preconditions() else {
        return;
    };
    let containerd = Containerd::start(privilege);
    let archives = TempDir::new().unwrap();
    let path = archives.path().join("multi.tar");
    write_multiplatform_oci_archive(
        &path,
        "example.test/multi:1.0",
        &[("linux", "amd64"), ("linux", "arm64")],
    )
    .unwrap();

    let info = inspect_archive(&path).unwrap();
    assert_eq!(info.images.len(), 1);
    assert_eq!(info.images[0].platforms, ["linux/amd64", "linux/arm64"]);
    assert!(carries_platform(&info, PLATFORM));

    let import = containerd.import(open_for_import(&path, info.compression).unwrap());
    import.assert_success();

    assert!(
        containerd.image_names().contains("example.test/multi:1.0"),
        "ctr images ls lacks example.test/multi:1.0: {:?}",
        containerd.image_names()
    );
}

#[test]
fn oci_naming_rules_match_ctr() {
    let Some(privilege) = check_preconditions() else {
        return;
    };
    let containerd = Containerd::start(privilege);
    let archives = TempDir::new().unwrap();
    let ref_name_only = |name: &str| {
        let name = name.to_owned();
        move |_: &TestImage| {
            BTreeMap::from([("org.opencontainers.image.ref.name".to_owned(), name.clone())])
        }
    };

    // A full reference in `org.opencontainers.image.ref.name` is the image name.
    let full = archives.path().join("full-ref-name.tar");
    write_oci_archive_with_annotations(
        &full,
        &[test_image("example.test/refname:1.0", "amd64")],
        ref_name_only("example.test/refname:1.0"),
    )
    .unwrap();
    let info = inspect_archive(&full).unwrap();
    assert_eq!(
        info.images[0].reference.as_str(),
        "example.test/refname:1.0"
    );
    let added = containerd.import_and_list_added(&full);
    assert_eq!(
        added,
        BTreeSet::from(["example.test/refname:1.0".to_owned()])
    );

    // A bare tag becomes `import-<date>:<tag>`, a name no pod refers to.
    let bare = archives.path().join("bare-tag.tar");
    write_oci_archive_with_annotations(
        &bare,
        &[test_image("example.test/bare:7.7", "amd64")],
        ref_name_only("7.7"),
    )
    .unwrap();
    let error = inspect_archive(&bare).unwrap_err();
    assert!(matches!(error, ImageError::BareTagName { .. }), "{error:?}");
    let added = containerd.import_and_list_added(&bare);
    assert_eq!(added.len(), 1, "names added for a bare tag: {added:?}");
    let name = added.first().unwrap();
    assert!(
        name.starts_with("import-") && name.ends_with(":7.7"),
        "ctr named a bare-tag image `{name}`"
    );

    // A short name in `io.containerd.image.name` is stored verbatim, not normalised.
    let short = archives.path().join("short-name.tar");
    write_oci_archive_with_annotations(&short, &[test_image("short:1.0", "amd64")], |_| {
        BTreeMap::from([(
            "io.containerd.image.name".to_owned(),
            "short:1.0".to_owned(),
        )])
    })
    .unwrap();
    let error = inspect_archive(&short).unwrap_err();
    assert!(
        matches!(error, ImageError::NonCanonicalName { .. }),
        "{error:?}"
    );
    let added = containerd.import_and_list_added(&short);
    assert_eq!(added, BTreeSet::from(["short:1.0".to_owned()]));
}

#[test]
fn wrong_platform_archives() {
    let Some(privilege) = check_preconditions() else {
        return;
    };
    let containerd = Containerd::start(privilege);
    let archives = TempDir::new().unwrap();

    // containerd reads the platform of a docker-archive image from its config and filters the
    // image out, so the import fails.
    let docker = archives.path().join("docker-arm64.tar");
    write_docker_archive(
        &docker,
        &[test_image("example.test/docker-arm:1.0", "arm64")],
    )
    .unwrap();
    let info = inspect_archive(&docker).unwrap();
    assert!(!carries_platform(&info, PLATFORM));
    let import = containerd.import(open_for_import(&docker, info.compression).unwrap());
    assert!(
        !import.status.success(),
        "ctr imported an arm64 docker archive for {PLATFORM}: {}",
        import.describe()
    );

    // containerd 1.6 does not check the platform of a manifest that `index.json` names
    // directly, so it imports the arm64 image for amd64. Only the inspection catches it.
    let oci = archives.path().join("oci-arm64.tar");
    write_oci_archive(&oci, &[test_image("example.test/oci-arm:1.0", "arm64")]).unwrap();
    let info = inspect_archive(&oci).unwrap();
    assert_eq!(info.images[0].platforms, ["linux/arm64"]);
    assert!(!carries_platform(&info, PLATFORM));
    let added = containerd.import_and_list_added(&oci);
    assert_eq!(
        added,
        BTreeSet::from(["example.test/oci-arm:1.0".to_owned()])
    );
}

fn test_image(reference: &str, architecture: &'static str) -> TestImage {
    TestImage {
        reference: reference.to_owned(),
        platform: ("linux", architecture),
        files: vec![
            (
                "etc/operator/config.yaml".to_owned(),
                b"level: debug\n".to_vec(),
            ),
            (
                "usr/local/bin/operator".to_owned(),
                b"#!/bin/sh\nexit 0\n".to_vec(),
            ),
        ],
    }
}

/// How commands that need root run.
#[derive(Debug, Clone, Copy)]
enum Privilege {
    /// The test runs as root.
    Root,
    /// Through `sudo -n`, which fails instead of prompting for a password.
    Sudo,
}

/// Returns how to run containerd, or `None` after printing why the test is skipped.
///
/// Panics instead of skipping when `K3S_HARNESS_REQUIRE_TOOLS=1`.
fn check_preconditions() -> Option<Privilege> {
    for tool in ["containerd", "ctr"] {
        if find_on_path(tool).is_none() {
            return skip(&format!("`{tool}` is not on PATH"));
        }
    }
    if geteuid().is_root() {
        return Some(Privilege::Root);
    }
    let mut probe = Command::new("sudo");
    probe.args(["-n", "true"]);
    let finished = run(probe, None, QUERY_TIMEOUT);
    if finished.status.success() {
        Some(Privilege::Sudo)
    } else {
        skip("the test does not run as root and `sudo -n true` failed (no passwordless sudo)")
    }
}

fn skip(reason: &str) -> Option<Privilege> {
    if env::var("K3S_HARNESS_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{reason}, but K3S_HARNESS_REQUIRE_TOOLS=1 requires the containerd import tests");
    }
    eprintln!("skipping containerd import test: {reason}");
    None
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| {
            fs::metadata(candidate).is_ok_and(|metadata| {
                metadata.is_file() && metadata.permissions().mode() & 0o111 != 0
            })
        })
}

/// A containerd started for one test, with its own root, state, socket and `opt` directory
/// under a temporary directory. Dropping it stops the process and removes the directory.
struct Containerd {
    privilege: Privilege,
    process: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    /// Kept last so that it is removed after the process has stopped.
    directory: TempDir,
}

impl Containerd {
    fn start(privilege: Privilege) -> Self {
        // A short directory keeps the socket path far below the 108-byte limit of Unix sockets.
        let directory = tempfile::Builder::new()
            .prefix("kti-")
            .tempdir_in("/tmp")
            .unwrap();
        let base = directory.path();
        let socket = base.join("c.sock");
        let config = base.join("config.toml");
        let log = base.join("containerd.log");
        fs::write(&config, containerd_config(base, &socket)).unwrap();

        let log_file = File::create(&log).unwrap();
        let mut command = privileged(privilege, "containerd");
        command
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let rendered = render(&command);
        let process = command
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start `{rendered}`: {error}"));

        // The guard exists before the readiness wait, so a failed start still stops the process.
        let mut containerd = Self {
            privilege,
            process: Some(process),
            socket,
            log,
            directory,
        };
        containerd.wait_until_ready();
        containerd
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + CONTAINERD_READY_TIMEOUT;
        loop {
            let process = self.process.as_mut().unwrap();
            if let Some(status) = process.try_wait().unwrap() {
                panic!(
                    "containerd exited with {status} before it was ready. Log tail:\n{}",
                    self.log_tail()
                );
            }
            if self.socket.exists() && self.ctr(&["version"], None, QUERY_TIMEOUT).status.success()
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "containerd did not respond to `ctr version` within {CONTAINERD_READY_TIMEOUT:?}. \
                     Log tail:\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn ctr(
        &self,
        args: &[&str],
        stdin: Option<Box<dyn Read + Send>>,
        timeout: Duration,
    ) -> Finished {
        let mut command = privileged(self.privilege, "ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .args(["--connect-timeout", "5s"])
            .args(args);
        run(command, stdin, timeout)
    }

    /// Runs `ctr -n k8s.io images import --platform linux/amd64 -` with `archive` on stdin.
    fn import(&self, archive: Box<dyn Read + Send>) -> Finished {
        let args = [
            "-n",
            "k8s.io",
            "images",
            "import",
            "--platform",
            PLATFORM,
            "-",
        ];
        self.ctr(&args, Some(archive), IMPORT_TIMEOUT)
    }

    /// Imports the plain tar at `path` and returns the image names that the import added.
    fn import_and_list_added(&self, path: &Path) -> BTreeSet<String> {
        let before = self.image_names();
        self.import(Box::new(File::open(path).unwrap()))
            .assert_success();
        self.image_names().difference(&before).cloned().collect()
    }

    /// Returns the names that `ctr -n k8s.io images ls -q` prints.
    fn image_names(&self) -> BTreeSet<String> {
        let listed = self.ctr(&["-n", "k8s.io", "images", "ls", "-q"], None, QUERY_TIMEOUT);
        listed.assert_success();
        listed
            .stdout
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            // Under sudo this is sudo's pid, and sudo relays SIGTERM to containerd.
            let pid = Pid::from_raw(process.id() as i32);
            if let Err(error) = kill(pid, Signal::SIGTERM) {
                eprintln!("failed to send SIGTERM to containerd (pid {pid}): {error}");
            }
            if wait_with_deadline(&mut process, CONTAINERD_STOP_GRACE).is_none() {
                // NOTE: under sudo, SIGKILL reaches only sudo, and containerd keeps running.
                eprintln!("containerd (pid {pid}) ignored SIGTERM; sending SIGKILL");
                let _ = process.kill();
                let _ = process.wait();
            }
        }

        // Files that a containerd started through sudo wrote belong to root, so the temporary
        // directory's own cleanup cannot remove them.
        if let Privilege::Sudo = self.privilege {
            let mut remove = privileged(Privilege::Sudo, "rm");
            remove.arg("-rf").arg("--").arg(self.directory.path());
            let finished = run(remove, None, QUERY_TIMEOUT);
            if !finished.status.success() {
                eprintln!(
                    "failed to remove the containerd directory: {}",
                    finished.describe()
                );
            }
        }
    }
}

fn containerd_config(base: &Path, socket: &Path) -> String {
    let base = base.display();
    let socket = socket.display();
    // The CRI plugin is disabled because these tests need only the image store, and it would
    // otherwise set up networking and stream servers.
    format!(
        r#"version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
"#
    )
}

/// Builds a command that runs `program` as root, clearing the `CONTAINERD_*` variables that
/// would redirect `ctr` to another socket, namespace or snapshotter.
fn privileged(privilege: Privilege, program: &str) -> Command {
    let mut command = match privilege {
        Privilege::Root => Command::new(program),
        Privilege::Sudo => {
            let mut command = Command::new("sudo");
            command.args(["-n", "--", program]);
            command
        }
    };
    for variable in [
        "CONTAINERD_ADDRESS",
        "CONTAINERD_NAMESPACE",
        "CONTAINERD_SNAPSHOTTER",
    ] {
        command.env_remove(variable);
    }
    command
}

/// The result of a command that ran to completion.
struct Finished {
    command: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn assert_success(&self) {
        assert!(self.status.success(), "{}", self.describe());
    }

    fn describe(&self) -> String {
        format!(
            "`{}` exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `command` to completion, streaming `stdin` into it (or giving it no stdin), draining
/// stdout and stderr, and killing it after `timeout`.
fn run(mut command: Command, stdin: Option<Box<dyn Read + Send>>, timeout: Duration) -> Finished {
    let rendered = render(&command);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start `{rendered}`: {error}"));

    let feeder = stdin.map(|mut input| {
        let mut pipe = child.stdin.take().unwrap();
        thread::spawn(move || io::copy(&mut input, &mut pipe).map(|_| ()))
    });
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());

    let Some(status) = wait_with_deadline(&mut child, timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`{rendered}` timed out after {timeout:?}");
    };
    if let Some(feeder) = feeder {
        match feeder.join().unwrap() {
            Ok(()) => {}
            // The command may exit before reading all of its input, for example on an error.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {}
            Err(error) => panic!("failed to stream stdin into `{rendered}`: {error}"),
        }
    }
    Finished {
        command: rendered,
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn drain(mut stream: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().ok()? {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Renders a command line shell-quoted, for messages.
fn render(command: &Command) -> String {
    let words = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy().into_owned());
    shell_words::join(words)
}
