//! Detection of the current test run: its key and the process whose exit ends it.

use super::process::{self, ProcessId, ProcessInfo};
use sha2::{Digest, Sha256};

/// Environment variable that cargo-nextest (0.9.31 and later) sets to a UUID for every test
/// process and setup script of one run.
const NEXTEST_RUN_ID: &str = "NEXTEST_RUN_ID";

/// Executable name of the nextest runner.
const NEXTEST_EXECUTABLE: &str = "cargo-nextest";

/// Executable name of Cargo, the parent of every test binary under `cargo test`.
const CARGO_EXECUTABLE: &str = "cargo";

/// Runner that started the current test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunKind {
    /// cargo-nextest, detected from `NEXTEST_RUN_ID`.
    Nextest,
    /// `cargo test` or another Cargo command, detected from a `cargo` ancestor.
    Cargo,
    /// A test binary run directly, which owns its run.
    Standalone,
}

/// Current test run: a key shared by all of its processes and the process whose exit ends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Key shared by every process of the run: `nextest-<run id>`, `cargo-<pid>-<start>` or
    /// `process-<pid>-<start>`.
    pub key: String,
    /// Process whose exit ends the run.
    pub owner: ProcessId,
    /// Runner that started the run.
    pub kind: RunKind,
}

impl Run {
    /// Detects the current run from the environment and the process tree.
    ///
    /// With `NEXTEST_RUN_ID` set, the key is `nextest-<id>` and the owner is the nearest
    /// ancestor named `cargo-nextest`, or the parent when none is found (nextest installed
    /// under another name). Otherwise the nearest ancestor named `cargo` owns the run, with key
    /// `cargo-<pid>-<start>`. Otherwise the current process owns it, with key
    /// `process-<pid>-<start>`.
    ///
    /// # Panics
    ///
    /// Panics when the current process cannot be read, as [`ProcessId::current`] does.
    pub fn detect() -> Run {
        let pid = std::process::id();
        let Some(me) = process::process_info(pid) else {
            panic!(
                "failed to read the current process {pid}: \
                 on Linux, check that procfs is mounted at /proc"
            );
        };
        let run = Run::detect_with(|name| std::env::var(name).ok(), me, &process::ancestors());
        tracing::debug!(
            key = run.key,
            kind = ?run.kind,
            owner_pid = run.owner.pid,
            owner_start_time = run.owner.start_time,
            "detected test run"
        );
        run
    }

    /// Detects the run as [`Run::detect`] does, from the injected environment lookup, current
    /// process and its ancestors (parent first).
    pub fn detect_with(
        env: impl Fn(&str) -> Option<String>,
        me: ProcessInfo,
        ancestors: &[ProcessInfo],
    ) -> Run {
        let run_id = env(NEXTEST_RUN_ID).filter(|id| !id.trim().is_empty());
        if let Some(run_id) = run_id {
            let owner = find_ancestor(ancestors, NEXTEST_EXECUTABLE)
                .or_else(|| ancestors.first())
                .map_or(me.id, |info| info.id);
            return Run {
                key: format!("nextest-{}", sanitize_run_id(run_id.trim())),
                owner,
                kind: RunKind::Nextest,
            };
        }

        // Only a direct parent counts: `cargo test` runs test binaries as its children, while a
        // binary started by a script that itself runs under cargo (an xtask, a test) is a run
        // of its own and must not wait for that outer cargo to exit.
        if let Some(cargo) = ancestors
            .first()
            .filter(|parent| parent.name == CARGO_EXECUTABLE)
        {
            return Run {
                key: format!("cargo-{}-{}", cargo.id.pid, cargo.id.start_time),
                owner: cargo.id,
                kind: RunKind::Cargo,
            };
        }

        Run {
            key: format!("process-{}-{}", me.id.pid, me.id.start_time),
            owner: me.id,
            kind: RunKind::Standalone,
        }
    }

    /// Returns 6 lowercase hex characters of the SHA-256 of the key, for instance names.
    pub fn short_id(&self) -> String {
        let digest = Sha256::digest(self.key.as_bytes());
        let mut id = hex::encode(&digest[..3]);
        id.truncate(6);
        id
    }
}

fn find_ancestor<'a>(ancestors: &'a [ProcessInfo], name: &str) -> Option<&'a ProcessInfo> {
    ancestors.iter().find(|info| info.name == name)
}

/// Replaces every character outside `[A-Za-z0-9-]` with `_`, so the key is safe in file
/// names. nextest sets a UUID, which passes unchanged.
fn sanitize_run_id(run_id: &str) -> String {
    run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0190b4a2-6a1e-7c3d-9f00-5b2d6e7f8a91";

    fn info(pid: u32, start_time: u64, parent: u32, name: &str) -> ProcessInfo {
        ProcessInfo {
            id: ProcessId { pid, start_time },
            parent: Some(parent),
            name: name.to_owned(),
        }
    }

    fn env_with_run_id(run_id: Option<&str>) -> impl Fn(&str) -> Option<String> {
        let run_id = run_id.map(str::to_owned);
        move |name| match name {
            NEXTEST_RUN_ID => run_id.clone(),
            _ => None,
        }
    }

    #[test]
    fn detect_with_cases() {
        let me = info(500, 5000, 400, "e2e-5f3c2a");
        let shell = info(300, 3000, 200, "sh");
        let nextest = info(400, 4000, 300, "cargo-nextest");
        let nextest_renamed = info(400, 4000, 300, "nextest");
        let nextest_parent_of_script = info(400, 4000, 300, "cargo-nextest");
        let cargo = info(200, 2000, 100, "cargo");
        let login = info(100, 1000, 1, "bash");
        let init = ProcessInfo {
            id: ProcessId {
                pid: 1,
                start_time: 1,
            },
            parent: None,
            name: "systemd".to_owned(),
        };

        struct Case<'a> {
            name: &'a str,
            run_id: Option<&'a str>,
            ancestors: Vec<ProcessInfo>,
            expected_key: String,
            expected_owner: ProcessId,
            expected_kind: RunKind,
        }
        let cases = [
            Case {
                name: "nextest with cargo-nextest parent",
                run_id: Some(UUID),
                ancestors: vec![nextest.clone(), shell.clone(), login.clone(), init.clone()],
                expected_key: format!("nextest-{UUID}"),
                expected_owner: nextest.id,
                expected_kind: RunKind::Nextest,
            },
            Case {
                name: "nextest setup script below a shell",
                run_id: Some(UUID),
                ancestors: vec![
                    shell.clone(),
                    nextest_parent_of_script.clone(),
                    cargo.clone(),
                    init.clone(),
                ],
                expected_key: format!("nextest-{UUID}"),
                expected_owner: nextest_parent_of_script.id,
                expected_kind: RunKind::Nextest,
            },
            Case {
                name: "nextest without cargo-nextest ancestor",
                run_id: Some(UUID),
                ancestors: vec![nextest_renamed.clone(), cargo.clone(), init.clone()],
                expected_key: format!("nextest-{UUID}"),
                expected_owner: nextest_renamed.id,
                expected_kind: RunKind::Nextest,
            },
            Case {
                name: "nextest without any ancestor",
                run_id: Some(UUID),
                ancestors: vec![],
                expected_key: format!("nextest-{UUID}"),
                expected_owner: me.id,
                expected_kind: RunKind::Nextest,
            },
            Case {
                name: "cargo test",
                run_id: None,
                ancestors: vec![cargo.clone(), login.clone(), init.clone()],
                expected_key: "cargo-200-2000".to_owned(),
                expected_owner: cargo.id,
                expected_kind: RunKind::Cargo,
            },
            Case {
                name: "cargo test with blank run id",
                run_id: Some("  "),
                ancestors: vec![cargo.clone(), init.clone()],
                expected_key: "cargo-200-2000".to_owned(),
                expected_owner: cargo.id,
                expected_kind: RunKind::Cargo,
            },
            Case {
                name: "binary started by a shell under cargo is its own run",
                run_id: None,
                ancestors: vec![shell.clone(), cargo.clone(), init.clone()],
                expected_key: "process-500-5000".to_owned(),
                expected_owner: me.id,
                expected_kind: RunKind::Standalone,
            },
            Case {
                name: "standalone",
                run_id: None,
                ancestors: vec![login.clone(), init.clone()],
                expected_key: "process-500-5000".to_owned(),
                expected_owner: me.id,
                expected_kind: RunKind::Standalone,
            },
            Case {
                name: "standalone without ancestors",
                run_id: None,
                ancestors: vec![],
                expected_key: "process-500-5000".to_owned(),
                expected_owner: me.id,
                expected_kind: RunKind::Standalone,
            },
        ];

        for case in cases {
            let run = Run::detect_with(env_with_run_id(case.run_id), me.clone(), &case.ancestors);
            assert_eq!(run.key, case.expected_key, "key for case {:?}", case.name);
            assert_eq!(
                run.owner, case.expected_owner,
                "owner for case {:?}",
                case.name
            );
            assert_eq!(
                run.kind, case.expected_kind,
                "kind for case {:?}",
                case.name
            );
        }
    }

    #[test]
    fn nearest_nextest_ancestor_wins() {
        let me = info(500, 5000, 400, "test");
        let inner = info(400, 4000, 300, "cargo-nextest");
        let outer = info(300, 3000, 1, "cargo-nextest");
        let run = Run::detect_with(env_with_run_id(Some(UUID)), me, &[inner.clone(), outer]);
        assert_eq!(run.owner, inner.id);
    }

    #[test]
    fn run_id_is_sanitized() {
        let me = info(500, 5000, 400, "test");
        let run = Run::detect_with(env_with_run_id(Some(" ../a b/ ")), me, &[]);
        assert_eq!(run.key, "nextest-___a_b_");
    }

    #[test]
    fn short_id_is_stable_hex() {
        let run = Run {
            key: format!("nextest-{UUID}"),
            owner: ProcessId {
                pid: 1,
                start_time: 1,
            },
            kind: RunKind::Nextest,
        };
        let id = run.short_id();
        assert_eq!(id.len(), 6);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "short id {id:?} is not lowercase hex"
        );
        assert_eq!(run.short_id(), id);

        // SHA-256("abc") starts with ba7816bf, the standard test vector.
        let abc = Run {
            key: "abc".to_owned(),
            ..run.clone()
        };
        assert_eq!(abc.short_id(), "ba7816");

        let other = Run {
            key: "cargo-200-2000".to_owned(),
            ..run
        };
        assert_ne!(other.short_id(), id);
    }

    #[test]
    fn detect_in_test_process() {
        let run = Run::detect();
        assert!(run.owner.is_alive(), "owner of {run:?} is not alive");
        match run.kind {
            RunKind::Nextest => assert!(run.key.starts_with("nextest-")),
            RunKind::Cargo => {
                assert_eq!(
                    run.key,
                    format!("cargo-{}-{}", run.owner.pid, run.owner.start_time)
                );
                assert_ne!(run.owner, ProcessId::current());
            }
            RunKind::Standalone => assert_eq!(run.owner, ProcessId::current()),
        }
        assert_eq!(Run::detect(), run, "two detections in one process differ");
    }
}
