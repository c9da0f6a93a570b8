//! Image import figures against the simulated tier: throughput next to a plain `cat` of the
//! same bytes through `limactl shell`, the time of a skipped re-import, and the benchmark
//! process's peak memory while importing.
//!
//! Run with `cargo bench -p k3s-harness-tests --bench import` as a user that limactl accepts
//! (not root), on a machine with containerd and passwordless sudo. The archive size is
//! `K3S_HARNESS_BENCH_MIB` MiB (default 256; the memory target is stated for 1024). The guest is
//! the fake limactl's, so `ctr` runs on this host: the figures measure the harness's streaming,
//! not a VM's disk. Each figure is the median of `K3S_HARNESS_BENCH_ROUNDS` rounds (default 3).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use k3s_harness::Cluster;
use k3s_harness_tests::{Component, SimulatedLima, components_present};
use lima_provisioner::{InstanceName, Limactl, ShellOptions};
use sha2::{Digest, Sha256};

fn main() {
    if !components_present(
        "import benchmark",
        &[Component::Containerd, Component::Sudo],
    ) {
        return;
    }
    let mib: u64 = std::env::var("K3S_HARNESS_BENCH_MIB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(256);

    let scratch = tempfile::Builder::new()
        .prefix("khb")
        .tempdir_in("/var/tmp")
        .unwrap();
    let archive = scratch.path().join("big.tar");
    let started = Instant::now();
    write_large_docker_archive(&archive, REFERENCE, mib * 1024 * 1024).unwrap();
    let size = std::fs::metadata(&archive).unwrap().len();
    println!(
        "archive: {:.0} MiB written in {:.1} s",
        size as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let lima = SimulatedLima::new();
    let cluster = runtime
        .block_on(Cluster::start(lima.spec()))
        .unwrap_or_else(|error| panic!("the cluster starts: {error}"));

    // Each round times a plain `cat`, the host-side inspection pass, `ctr images import` through
    // `limactl shell` on its own (the guest-side work of every import), and `import_image`. The
    // image and the harness's import record are removed after each import, so every round
    // imports again.
    let rounds: usize = std::env::var("K3S_HARNESS_BENCH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    let import_records = lima.state_dir().join(cluster.name()).join("imported");
    let mut cat_times = Vec::new();
    let mut inspect_times = Vec::new();
    let mut ctr_times = Vec::new();
    let mut import_times = Vec::new();
    reset_peak_memory();
    let before = peak_memory_kib();
    for round in 0..rounds {
        cat_times.push(time_shell(
            &lima,
            cluster.name(),
            &archive,
            &["sh", "-c", "cat >/dev/null"],
        ));

        let started = Instant::now();
        k3s_harness::image::inspect_archive(&archive)
            .unwrap_or_else(|error| panic!("the archive is valid: {error}"));
        inspect_times.push(started.elapsed());

        ctr_times.push(time_shell(&lima, cluster.name(), &archive, &CTR_IMPORT));
        remove_image(&lima, cluster.name(), REFERENCE);

        let started = Instant::now();
        runtime
            .block_on(cluster.import_image(&archive))
            .unwrap_or_else(|error| panic!("the import succeeds: {error}"));
        import_times.push(started.elapsed());
        if round + 1 < rounds {
            remove_image(&lima, cluster.name(), REFERENCE);
            std::fs::remove_dir_all(&import_records).unwrap();
        }
    }
    let peak = peak_memory_kib();
    let cat_time = median(cat_times);
    let inspect_time = median(inspect_times);
    let ctr_time = median(ctr_times);
    let import_time = median(import_times);

    let started = Instant::now();
    runtime
        .block_on(cluster.import_image(&archive))
        .unwrap_or_else(|error| panic!("the re-import succeeds: {error}"));
    let skip_time = started.elapsed();

    let mib_size = size as f64 / 1048576.0;
    let rate = |time: Duration| mib_size / time.as_secs_f64();
    println!(
        "cat through limactl shell: {:.0} MiB/s ({:.2} s)",
        rate(cat_time),
        cat_time.as_secs_f64()
    );
    println!(
        "ctr images import through limactl shell, alone: {:.0} MiB/s ({:.2} s), {:.0} % of cat",
        rate(ctr_time),
        ctr_time.as_secs_f64(),
        100.0 * rate(ctr_time) / rate(cat_time)
    );
    println!(
        "inspection pass (digests, tar walk, metadata): {:.0} MiB/s ({:.2} s)",
        rate(inspect_time),
        inspect_time.as_secs_f64()
    );
    println!(
        "import (inspect, stream, ctr import, verify): {:.0} MiB/s ({:.2} s), {:.0} % of cat \
         (target: at least 80 %), {:.0} % of ctr import alone",
        rate(import_time),
        import_time.as_secs_f64(),
        100.0 * rate(import_time) / rate(cat_time),
        100.0 * rate(import_time) / rate(ctr_time)
    );
    println!(
        "skipped re-import: {:.2} ms (target: at most 10 ms)",
        skip_time.as_secs_f64() * 1000.0
    );
    match (before, peak) {
        (Some(before), Some(peak)) => println!(
            "peak resident memory of this process during the rounds: {:.1} MiB (before: {:.1} MiB; target: under 64 MiB for a 1024 MiB archive)",
            peak as f64 / 1024.0,
            before as f64 / 1024.0
        ),
        _ => println!("peak resident memory: unavailable on this platform"),
    }

    runtime
        .block_on(cluster.shutdown())
        .unwrap_or_else(|error| panic!("the cluster shuts down: {error}"));
}

/// The reference of the benchmark's image, as containerd names it.
const REFERENCE: &str = "docker.io/bench/big:1.0";

/// Returns the median of `times`, the upper one of an even count.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The guest command the harness streams an archive into.
const CTR_IMPORT: [&str; 10] = [
    "sudo",
    "k3s",
    "ctr",
    "-n",
    "k8s.io",
    "images",
    "import",
    "--platform",
    "linux/amd64",
    "-",
];

/// Streams the archive into `limactl shell NAME -- ARGV` and returns how long that took.
fn time_shell(lima: &SimulatedLima, instance: &str, archive: &Path, argv: &[&str]) -> Duration {
    let limactl = Limactl::new(lima.limactl()).with_lima_home(lima.home());
    let name = InstanceName::new(instance, lima.home()).unwrap();
    let options = ShellOptions::with_timeout(Duration::from_secs(600));
    let reader: Box<dyn Read + Send> = Box::new(File::open(archive).unwrap());
    let started = Instant::now();
    limactl
        .shell_streaming(&name, argv, reader, &options)
        .and_then(|output| output.check())
        .unwrap_or_else(|error| panic!("`{}` runs: {error}", argv.join(" ")));
    started.elapsed()
}

/// Removes `reference` from the guest's image store with a synchronous garbage collection, so
/// that the next import writes its content and unpacks its layers again.
fn remove_image(lima: &SimulatedLima, instance: &str, reference: &str) {
    let limactl = Limactl::new(lima.limactl()).with_lima_home(lima.home());
    let name = InstanceName::new(instance, lima.home()).unwrap();
    let options = ShellOptions::with_timeout(Duration::from_secs(120));
    let argv = [
        "sudo", "k3s", "ctr", "-n", "k8s.io", "images", "rm", "--sync", reference,
    ];
    limactl
        .shell(&name, &argv, &options)
        .and_then(|output| output.check())
        .unwrap_or_else(|error| panic!("`{}` runs: {error}", argv.join(" ")));
}

/// Writes a docker archive whose one layer holds a file of `bytes` pseudo-random bytes, without
/// holding the layer in memory: the layer tar goes to a temporary file first, hashed on the way.
fn write_large_docker_archive(path: &Path, reference: &str, bytes: u64) -> io::Result<()> {
    let layer_path = path.with_extension("layer");
    let diff_id = {
        let file = HashingWriter::new(BufWriter::new(File::create(&layer_path)?));
        let mut layer = tar::Builder::new(file);
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        layer.append_data(&mut header, "data/blob", PseudoRandom::new(bytes))?;
        let mut file = layer.into_inner()?;
        file.flush()?;
        hex::encode(file.hasher.finalize())
    };

    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "config": {},
    }))?;
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [reference],
        "Layers": [layer_name],
    }]))?;

    let mut archive = tar::Builder::new(BufWriter::new(File::create(path)?));
    archive.append_path_with_name(&layer_path, &layer_name)?;
    append_bytes(&mut archive, &config_name, &config)?;
    append_bytes(&mut archive, "manifest.json", &manifest)?;
    archive.into_inner()?.flush()?;
    std::fs::remove_file(&layer_path)
}

fn append_bytes<W: Write>(
    archive: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    archive.append_data(&mut header, name, bytes)
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `remaining` bytes from xorshift64, so the layer does not compress or deduplicate.
struct PseudoRandom {
    state: u64,
    remaining: u64,
}

impl PseudoRandom {
    fn new(bytes: u64) -> Self {
        PseudoRandom {
            state: 0x9e37_79b9_7f4a_7c15,
            remaining: bytes,
        }
    }
}

impl Read for PseudoRandom {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = buffer.len().min(self.remaining as usize) & !7;
        let count = if count == 0 {
            buffer.len().min(self.remaining as usize)
        } else {
            count
        };
        for chunk in buffer[..count].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        self.remaining -= count as u64;
        Ok(count)
    }
}

/// Resets the kernel's peak resident set counter of this process (Linux 4.0 and later).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident set size of this process in KiB (`VmHWM`), where the platform reports it.
fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}
