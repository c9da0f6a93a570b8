//! Attach benchmark for `Cluster::shared` against the fake `limactl`.
//!
//! ```sh
//! cargo bench -p k3s-harness-tests --bench attach
//! ```
//!
//! It prints, next to the targets:
//!
//! - attach latency with the VM up. Fresh test processes each attach, list nodes and exit: the
//!   `shared-suite` fixture's `many` binary filtered to one test, with `K3S_HARNESS_REUSE=1` so
//!   every process finds the VM running. It reports p50 and p95 of `Cluster::shared` inside the
//!   process and of the whole process;
//! - `limactl` invocations per attach, from the fake's invocation log;
//! - suite wall time for 1, 8 and 32 tests of one `cargo nextest run` (8 test processes at a
//!   time) with `FAKE_LIMACTL_BOOT_DELAY_MS=5000`, next to 1, 8 and 32 separate boots
//!   (`Cluster::start` in this process, 8 at a time, each deleted after listing its nodes);
//! - the wall time of a 3-node cluster (its two agents boot in parallel) next to three
//!   single-node boots one after the other, with the same simulated boot time.
//!
//! The numbers depend on the machine; the output names its CPU count. Everything runs in the
//! profile the benchmark was built with (`release` under `cargo bench`), which it builds first.

#[path = "../tests/run_scope/nested.rs"]
mod nested;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k3s_harness::Cluster;
use k3s_harness_tests::{SimulatedLima, wait_until};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;

use nested::{
    NestedProcess, RUN_TIMEOUT, build_suite, cargo, cargo_profile, listed, nextest_args,
    read_results, suite_command,
};

/// Fresh processes that attach to the running VM.
const ATTACH_SAMPLES: usize = 40;

/// Simulated boot time for the wall-time comparison.
const BOOT_DELAY_MS: u64 = 5000;

/// Suite sizes for the wall-time comparison.
const SUITE_SIZES: [usize; 3] = [1, 8, 32];

/// Test processes nextest runs at a time, and separate boots in flight at a time.
const PARALLELISM: usize = 8;

/// Target for the median attach latency inside a test process.
const ATTACH_P50_TARGET_MS: f64 = 25.0;

/// Target for `limactl` invocations per attach.
const LIMACTL_CALLS_TARGET: f64 = 1.0;

fn main() {
    let scratch = tempfile::Builder::new()
        .prefix("attach-bench")
        .tempdir()
        .expect("a scratch directory can be created");
    build_fake_limactl(scratch.path());
    let lima = SimulatedLima::new();
    let binaries = build_suite(&lima, scratch.path(), &["many"]);
    let many = binaries
        .get("many")
        .expect("the build reported the `many` test binary")
        .clone();

    let cpus = std::thread::available_parallelism().map_or(0, |count| count.get());
    println!(
        "attach benchmark: fake limactl, cargo profile {}, {cpus} CPUs",
        cargo_profile()
    );
    println!();

    attach_latency(&lima, scratch.path(), &many);
    println!();
    suite_wall_times(scratch.path());
}

/// Bound on building the fake `limactl`.
const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Builds the fake `limactl` in this benchmark's profile, where [`SimulatedLima`] looks for it.
fn build_fake_limactl(scratch: &Path) {
    let mut command = nested::scrubbed_command(cargo());
    command
        .args([
            "build",
            "-p",
            "fake-limactl",
            "--bins",
            "--profile",
            &cargo_profile(),
        ])
        .env(nested::RESULTS_ENV, scratch.join("build-limactl"));
    let limactl = k3s_harness_tests::target_bin_dir().join("limactl");
    let mut build = NestedProcess::spawn_beside("build-limactl", command, scratch, &limactl);
    let finished = build.wait(BUILD_TIMEOUT);
    assert!(
        finished.status.success(),
        "building the fake limactl failed:\n{}",
        build.stderr()
    );
}

/// Measures attaching to a VM that is already up, from fresh test processes.
fn attach_latency(lima: &SimulatedLima, scratch: &Path, many: &Path) {
    let warm_up = run_one_test(lima, scratch, many, "warm-up", "test_01");
    let instance = warm_up.instance.clone();
    let starts_after_boot = lima.count("start");

    let mut in_process = Vec::new();
    let mut whole_process = Vec::new();
    let mut limactl_calls = Vec::new();
    let mut subcommands = std::collections::BTreeMap::<String, usize>::new();
    for sample in 0..ATTACH_SAMPLES {
        let test = format!("test_{:02}", sample % 32 + 1);
        let logged_before = lima.invocations().len();
        let started = Instant::now();
        let line = run_one_test(lima, scratch, many, &format!("attach-{sample}"), &test);
        whole_process.push(started.elapsed().as_secs_f64() * 1000.0);
        in_process.push(line.attach_ms);
        assert_eq!(
            line.instance, instance,
            "every process attached to the warm VM"
        );

        let invocations = lima.invocations();
        let new = &invocations[logged_before..];
        limactl_calls.push(new.len() as f64);
        for argv in new {
            let subcommand = argv
                .iter()
                .find(|arg| !arg.starts_with('-'))
                .cloned()
                .unwrap_or_default();
            *subcommands.entry(subcommand).or_default() += 1;
        }
    }
    assert_eq!(
        lima.count("start"),
        starts_after_boot,
        "attaching never booted"
    );
    delete_reused(lima, &instance);

    println!(
        "attach to a running VM: {ATTACH_SAMPLES} fresh test processes, one test each \
         (K3S_HARNESS_REUSE=1)"
    );
    println!(
        "  Cluster::shared in the process  p50 {:7.1} ms  p95 {:7.1} ms   target p50 <= {ATTACH_P50_TARGET_MS} ms",
        percentile(&in_process, 50.0),
        percentile(&in_process, 95.0),
    );
    println!(
        "  whole test process              p50 {:7.1} ms  p95 {:7.1} ms   (spawn to exit: attach, list nodes, exit)",
        percentile(&whole_process, 50.0),
        percentile(&whole_process, 95.0),
    );
    println!(
        "  limactl invocations per attach  mean {:5.2}  max {:3}         target <= {LIMACTL_CALLS_TARGET}",
        mean(&limactl_calls),
        limactl_calls.iter().copied().fold(0.0, f64::max),
    );
    println!("  by subcommand over all attaches: {subcommands:?}");
}

/// Runs one test of the `many` binary directly with `K3S_HARNESS_REUSE=1` and returns its
/// result line.
fn run_one_test(
    lima: &SimulatedLima,
    scratch: &Path,
    many: &Path,
    label: &str,
    test: &str,
) -> nested::ResultLine {
    let results = scratch.join(format!("{label}.results.jsonl"));
    let mut command = suite_command(many, lima, &results);
    command
        .args(["--ignored", "--exact", test])
        .env("K3S_HARNESS_REUSE", "1");
    let mut process = NestedProcess::spawn(label, command, scratch, lima);
    let finished = process.wait(RUN_TIMEOUT);
    assert!(
        finished.status.success(),
        "{label} failed:\n{}",
        process.output()
    );
    let mut lines = read_results(&results);
    assert_eq!(lines.len(), 1, "{label} recorded one result: {lines:?}");
    lines.remove(0)
}

/// Deletes the reused VM with `k3s-harness down`'s equivalent: `limactl delete -f` and the
/// state directory.
fn delete_reused(lima: &SimulatedLima, instance: &str) {
    let status = lima
        .command()
        .args(["delete", "--tty=false", "-f", instance])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the fake limactl runs");
    assert!(status.success(), "limactl delete -f {instance} failed");
    let _ = std::fs::remove_dir_all(lima.state_dir().join(instance));
}

/// Measures one shared-VM nextest run per suite size against separate boots.
fn suite_wall_times(scratch: &Path) {
    let overhead = nextest_overhead(scratch);
    println!(
        "suite wall time, FAKE_LIMACTL_BOOT_DELAY_MS={BOOT_DELAY_MS}, {PARALLELISM} at a time"
    );
    println!(
        "  `cargo nextest run` with no tests selected (cargo, listing): {:.2} s",
        overhead.as_secs_f64()
    );
    println!("  tests  one shared VM (nextest)  VM deleted after  separate boots (Cluster::start)");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts");
    for size in SUITE_SIZES {
        let (shared, deleted_after) = shared_run(scratch, size);
        let separate = runtime.block_on(separate_boots(size));
        println!(
            "  {size:5}  {:22.2} s  {:14.2} s  {:28.2} s",
            shared.as_secs_f64(),
            deleted_after.as_secs_f64(),
            separate.as_secs_f64(),
        );
    }
    println!(
        "  target: shared wall ~ nextest overhead + one boot ({:.1} s) + N attaches",
        BOOT_DELAY_MS as f64 / 1000.0
    );

    let (multi_node, sequential) = runtime.block_on(multi_node_boot());
    println!(
        "  3-node cluster (server, then 2 agents in parallel): {:.2} s; 3 single-node boots one \
         after the other: {:.2} s",
        multi_node.as_secs_f64(),
        sequential.as_secs_f64()
    );
}

/// Boots a 3-node cluster, then three single-node clusters one after the other, each with
/// the simulated boot time and deleted after listing its nodes. Returns both wall times.
async fn multi_node_boot() -> (Duration, Duration) {
    let lima = SimulatedLima::new();
    let spec = lima
        .spec()
        .limactl_env("FAKE_LIMACTL_BOOT_DELAY_MS", BOOT_DELAY_MS.to_string());

    let started = Instant::now();
    boot_list_delete(spec.clone().nodes(3), 3).await;
    let multi_node = started.elapsed();

    let started = Instant::now();
    for _ in 0..3 {
        boot_list_delete(spec.clone(), 1).await;
    }
    (multi_node, started.elapsed())
}

/// Boots a cluster from `spec`, checks that it lists `nodes` nodes, and deletes it.
async fn boot_list_delete(spec: k3s_harness::ClusterSpec, nodes: usize) {
    let cluster = Cluster::start(spec)
        .await
        .unwrap_or_else(|error| panic!("a boot failed: {error}"));
    let client = cluster
        .client()
        .await
        .unwrap_or_else(|error| panic!("building a client failed: {error}"));
    let listed = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|error| panic!("listing nodes failed: {error}"));
    assert_eq!(listed.items.len(), nodes, "the cluster lists its nodes");
    cluster
        .shutdown()
        .await
        .unwrap_or_else(|error| panic!("deleting a cluster failed: {error}"));
}

/// Wall time of the nested `cargo nextest run` when its filter selects no test.
///
/// The first run is a warm-up, so that a rebuild (the workspace's sources changed since the
/// suite was built) lands there and not in the measured runs.
fn nextest_overhead(scratch: &Path) -> Duration {
    let lima = SimulatedLima::new();
    let mut elapsed = Duration::ZERO;
    for label in ["overhead-warm-up", "overhead"] {
        let results = scratch.join(format!("{label}.results.jsonl"));
        let mut command = suite_command(cargo(), &lima, &results);
        command.args(nextest_args()).args([
            "--features",
            "many",
            "-E",
            "none()",
            "--no-tests=pass",
        ]);
        let mut run = NestedProcess::spawn(label, command, scratch, &lima);
        let finished = run.wait(nested::BUILD_TIMEOUT);
        assert!(
            finished.status.success(),
            "the empty run failed:\n{}",
            run.output()
        );
        elapsed = finished.elapsed;
    }
    elapsed
}

/// Runs `size` tests of the `many` binary in one nextest run. Returns its wall time and the
/// time from its exit until the VM was gone.
fn shared_run(scratch: &Path, size: usize) -> (Duration, Duration) {
    let lima = SimulatedLima::new();
    let label = format!("shared-{size}");
    let results = scratch.join(format!("{label}.results.jsonl"));
    let filter = (1..=size)
        .map(|index| format!("test(=test_{index:02})"))
        .collect::<Vec<_>>()
        .join(" or ");
    let mut command = suite_command(cargo(), &lima, &results);
    command
        .args(nextest_args())
        .args([
            "--features",
            "many",
            "-E",
            &format!("binary(many) and ({filter})"),
        ])
        .env("FAKE_LIMACTL_BOOT_DELAY_MS", BOOT_DELAY_MS.to_string());
    let mut run = NestedProcess::spawn(&label, command, scratch, &lima);
    let finished = run.wait(RUN_TIMEOUT);
    assert!(
        finished.status.success(),
        "{label} failed:\n{}",
        run.output()
    );

    let lines = read_results(&results);
    assert_eq!(lines.len(), size, "{label}: every test recorded a result");
    let (instance, _) = nested::one_cluster(&lines);
    assert_eq!(lima.count("start"), 1, "{label}: one boot");
    let deleted_after = wait_until(Duration::from_secs(30), || !listed(&lima, &instance))
        .unwrap_or_else(|| panic!("{label}: {instance} was not deleted within 30 s"));
    (finished.elapsed, deleted_after)
}

/// Boots `size` clusters with `Cluster::start`, [`PARALLELISM`] at a time, lists each one's
/// nodes and deletes it. Returns the wall time.
async fn separate_boots(size: usize) -> Duration {
    let lima = Arc::new(SimulatedLima::new());
    let slots = Arc::new(tokio::sync::Semaphore::new(PARALLELISM));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..size {
        let lima = Arc::clone(&lima);
        let slots = Arc::clone(&slots);
        tasks.spawn(async move {
            let _slot = slots.acquire().await.expect("the semaphore stays open");
            let spec = lima
                .spec()
                .limactl_env("FAKE_LIMACTL_BOOT_DELAY_MS", BOOT_DELAY_MS.to_string());
            let cluster = Cluster::start(spec)
                .await
                .unwrap_or_else(|error| panic!("a separate boot failed: {error}"));
            let client = cluster
                .client()
                .await
                .unwrap_or_else(|error| panic!("building a client failed: {error}"));
            let nodes: Api<Node> = Api::all(client);
            nodes
                .list(&ListParams::default())
                .await
                .unwrap_or_else(|error| panic!("listing nodes failed: {error}"));
            cluster
                .shutdown()
                .await
                .unwrap_or_else(|error| panic!("deleting a cluster failed: {error}"));
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a separate boot task panicked");
    }
    assert_eq!(lima.count("start"), size, "one boot per cluster");
    started.elapsed()
}

/// Nearest-rank percentile of `samples`.
fn percentile(samples: &[f64], percent: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean(samples: &[f64]) -> f64 {
    samples.iter().sum::<f64>() / samples.len() as f64
}
