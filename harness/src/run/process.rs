//! Process identity (pid plus start time) and the facts needed to walk the process tree.
//!
//! Linux reads `/proc/<pid>/stat` (see proc(5)), and macOS calls `proc_pidinfo` with
//! `PROC_PIDTBSDINFO`.

use std::sync::OnceLock;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
compile_error!("run identity supports only Linux and macOS, the hosts Lima runs on");

/// Maximum number of ancestors `ancestors` visits, a guard against a cycle from pid reuse
/// while walking.
const MAX_ANCESTORS: usize = 1024;

/// A process identified by pid and start time, so a recycled pid is not mistaken for it.
///
/// `start_time` is in clock ticks since boot on Linux (field 22 of `/proc/<pid>/stat`) and in
/// seconds since the Unix epoch on macOS. Compare it only with values from the same host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    /// Process id.
    pub pid: u32,
    /// Start time of the process, in the platform unit described on the type.
    pub start_time: u64,
}

impl ProcessId {
    /// Returns the identity of the current process, read once and cached.
    ///
    /// # Panics
    ///
    /// Panics when the platform does not describe the current process, which happens on Linux
    /// only when procfs is not mounted at `/proc`.
    pub fn current() -> ProcessId {
        static CURRENT: OnceLock<ProcessId> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            match ProcessId::of(pid) {
                Some(id) => id,
                None => panic!(
                    "failed to read the start time of the current process {pid}: \
                     on Linux, check that procfs is mounted at /proc"
                ),
            }
        })
    }

    /// Returns the identity of process `pid`, or `None` when no such process runs (a zombie
    /// counts as not running).
    pub fn of(pid: u32) -> Option<ProcessId> {
        let status = sys::read_status(pid)?;
        if status.zombie {
            return None;
        }
        Some(ProcessId {
            pid,
            start_time: status.start_time,
        })
    }

    /// Returns true when process `pid` exists, started at `start_time` and is not a zombie.
    ///
    /// On Linux this reads one procfs file, so it is cheap enough for a polling loop.
    pub fn is_alive(&self) -> bool {
        ProcessId::of(self.pid) == Some(*self)
    }
}

/// Facts about a live process needed to walk the process tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Identity of the process.
    pub id: ProcessId,
    /// Parent pid, `None` for a process whose parent is outside its pid namespace (ppid 0),
    /// such as pid 1.
    pub parent: Option<u32>,
    /// Base name of the executable, for example `cargo-nextest` or `cargo`.
    pub name: String,
}

/// Returns the facts about process `pid`, or `None` when no such process runs or it is a
/// zombie.
pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    let status = sys::read_status(pid)?;
    if status.zombie {
        return None;
    }
    let name = sys::executable_name(pid, &status);
    Some(ProcessInfo {
        id: ProcessId {
            pid,
            start_time: status.start_time,
        },
        parent: status.parent,
        name,
    })
}

/// Returns the ancestors of the current process, from its parent upwards, ending with pid 1.
///
/// The walk also ends early when an ancestor exits while it is read, or at a process whose
/// parent is outside the pid namespace.
pub fn ancestors() -> Vec<ProcessInfo> {
    let mut result = Vec::new();
    let mut next = std::os::unix::process::parent_id();

    while next != 0 && result.len() < MAX_ANCESTORS {
        let Some(info) = process_info(next) else {
            tracing::debug!(pid = next, "ancestor exited while walking the process tree");
            break;
        };
        let parent = info.parent;
        let reached_init = info.id.pid == 1;
        result.push(info);
        match parent {
            Some(parent) if !reached_init => next = parent,
            _ => break,
        }
    }
    result
}

/// Fields of one process read from the platform.
#[derive(Debug, PartialEq, Eq)]
struct Status {
    /// Command name as the kernel stores it, truncated (to 15 bytes on Linux).
    comm: String,
    zombie: bool,
    parent: Option<u32>,
    start_time: u64,
}

#[cfg(target_os = "linux")]
use linux as sys;
#[cfg(target_os = "macos")]
use macos as sys;

#[cfg(target_os = "linux")]
mod linux {
    use super::Status;
    use std::io;
    use std::path::Path;

    /// Failure to parse a `/proc/<pid>/stat` line. Field numbers follow proc(5), starting at 1.
    #[derive(Debug, PartialEq, Eq, thiserror::Error)]
    pub(super) enum StatParseError {
        #[error("missing `(` before the command name (field 2)")]
        MissingOpenParen,
        #[error("missing `)` after the command name (field 2)")]
        MissingCloseParen,
        #[error("missing field {0}")]
        MissingField(usize),
        #[error("invalid field {field}: {value:?}")]
        InvalidField { field: usize, value: String },
    }

    /// Parses one `/proc/<pid>/stat` line.
    ///
    /// The command name (field 2) is in parentheses and may itself contain spaces and `)`, so
    /// the fields after it are split from the last `)` in the line.
    pub(super) fn parse_stat(line: &str) -> Result<Status, StatParseError> {
        let open = line.find('(').ok_or(StatParseError::MissingOpenParen)?;
        let close = line.rfind(')').ok_or(StatParseError::MissingCloseParen)?;
        if close < open {
            return Err(StatParseError::MissingCloseParen);
        }
        let comm = line[open + 1..close].to_owned();

        // `rest[0]` is field 3 (state), so field N is `rest[N - 3]`.
        let rest: Vec<&str> = line[close + 1..].split_ascii_whitespace().collect();
        let field = |number: usize| -> Result<&str, StatParseError> {
            rest.get(number - 3)
                .copied()
                .ok_or(StatParseError::MissingField(number))
        };
        let invalid = |number: usize, value: &str| StatParseError::InvalidField {
            field: number,
            value: value.to_owned(),
        };

        let state = field(3)?;
        if state.len() != 1 {
            return Err(invalid(3, state));
        }
        let ppid = field(4)?;
        let ppid: u32 = ppid.parse().map_err(|_| invalid(4, ppid))?;
        let start_time = field(22)?;
        let start_time: u64 = start_time.parse().map_err(|_| invalid(22, start_time))?;

        Ok(Status {
            comm,
            // `X` (dead) is only reported while the kernel tears the process down.
            zombie: matches!(state, "Z" | "X"),
            parent: (ppid != 0).then_some(ppid),
            start_time,
        })
    }

    pub(super) fn read_status(pid: u32) -> Option<Status> {
        let path = format!("/proc/{pid}/stat");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // Reading a procfs file can fail with ESRCH when the process exits after open.
            Err(error)
                if error.kind() == io::ErrorKind::NotFound
                    || error.raw_os_error() == Some(nix::libc::ESRCH) =>
            {
                return None;
            }
            Err(error) => {
                tracing::debug!(%error, path, "failed to read process status");
                return None;
            }
        };
        let line = String::from_utf8_lossy(&bytes);
        match parse_stat(&line) {
            Ok(status) => Some(status),
            Err(error) => {
                tracing::warn!(%error, path, "invalid process status line");
                None
            }
        }
    }

    /// Returns the base name of `/proc/<pid>/exe`, or the command name when the link cannot
    /// be read (a process of another user, or a kernel thread).
    pub(super) fn executable_name(pid: u32, status: &Status) -> String {
        let Ok(target) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            return status.comm.clone();
        };
        let base = Path::new(&target)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        match base {
            // The kernel appends " (deleted)" when the executable file was removed or
            // replaced while the process runs, for example by a rebuild.
            Some(name) => name
                .strip_suffix(" (deleted)")
                .map(str::to_owned)
                .unwrap_or(name),
            None => status.comm.clone(),
        }
    }
}

// NOTE: untested on macOS, where this module has never been compiled or run.
#[cfg(target_os = "macos")]
mod macos {
    use super::Status;
    use nix::libc;
    use std::mem::{MaybeUninit, size_of};

    /// `pbi_status` value of a zombie, `SZOMB` in `sys/proc.h`.
    const ZOMBIE_STATUS: u32 = libc::SZOMB;

    pub(super) fn read_status(pid: u32) -> Option<Status> {
        let raw_pid = libc::c_int::try_from(pid).ok()?;
        let size = libc::c_int::try_from(size_of::<libc::proc_bsdinfo>()).ok()?;
        let mut info = MaybeUninit::<libc::proc_bsdinfo>::zeroed();

        // SAFETY: `info` is a writable buffer of `size` bytes, the size of `proc_bsdinfo`,
        // which is the struct that `PROC_PIDTBSDINFO` fills.
        let written = unsafe {
            libc::proc_pidinfo(
                raw_pid,
                libc::PROC_PIDTBSDINFO,
                0,
                info.as_mut_ptr().cast(),
                size,
            )
        };
        if written != size {
            // proc_pidinfo returns 0 and sets errno when the process is missing or unreadable.
            tracing::trace!(pid, written, "proc_pidinfo returned no process information");
            return None;
        }
        // SAFETY: the buffer was zero-initialized, which is a valid `proc_bsdinfo` (plain
        // integers and arrays), and proc_pidinfo wrote all of it.
        let info = unsafe { info.assume_init() };

        let name = c_chars_to_string(&info.pbi_name);
        let comm = if name.is_empty() {
            c_chars_to_string(&info.pbi_comm)
        } else {
            name
        };
        Some(Status {
            comm,
            zombie: info.pbi_status == ZOMBIE_STATUS,
            parent: (info.pbi_ppid != 0).then_some(info.pbi_ppid),
            start_time: info.pbi_start_tvsec,
        })
    }

    /// Returns the name from `proc_bsdinfo`: the executable's base name, truncated to the
    /// 32-byte `pbi_name` field.
    pub(super) fn executable_name(_pid: u32, status: &Status) -> String {
        status.comm.clone()
    }

    fn c_chars_to_string(chars: &[libc::c_char]) -> String {
        let bytes: Vec<u8> = chars
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::time::{Duration, Instant};

    /// Waits for `child` to exit, killing it after `deadline`.
    fn wait_with_deadline(child: &mut Child, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait failed") {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = child.kill();
                let status = child.wait().expect("wait after kill failed");
                panic!(
                    "child {} exceeded {deadline:?}, killed: {status}",
                    child.id()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn spawn_quiet(program: &str, args: &[&str]) -> Child {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("failed to spawn {program} {args:?}: {error}"))
    }

    #[test]
    fn current_is_alive() {
        let me = ProcessId::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_alive());
        assert_eq!(ProcessId::of(me.pid), Some(me));
    }

    #[test]
    fn other_start_time_is_not_alive() {
        let me = ProcessId::current();
        let recycled = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!recycled.is_alive());
        let earlier = ProcessId {
            pid: me.pid,
            start_time: me.start_time.wrapping_sub(1),
        };
        assert!(!earlier.is_alive());
    }

    #[test]
    fn reaped_child_is_not_alive() {
        let mut child = spawn_quiet("sleep", &["0.1"]);
        let id = ProcessId::of(child.id()).expect("running child has no ProcessId");
        assert!(id.is_alive());

        let status = wait_with_deadline(&mut child, Duration::from_secs(5));
        assert!(status.success(), "sleep 0.1 failed: {status}");
        assert!(!id.is_alive());
    }

    #[test]
    fn killed_child_is_not_alive() {
        let mut child = spawn_quiet("sh", &["-c", "sleep 5"]);
        let id = ProcessId::of(child.id()).expect("running child has no ProcessId");
        assert!(id.is_alive());

        let pid = nix::unistd::Pid::from_raw(i32::try_from(id.pid).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill failed");
        let status = wait_with_deadline(&mut child, Duration::from_secs(5));
        assert!(!status.success(), "killed child reported success: {status}");
        assert!(!id.is_alive());
        assert_eq!(ProcessId::of(id.pid).filter(|other| *other == id), None);
    }

    #[test]
    fn zombie_child_is_not_alive() {
        let mut child = spawn_quiet("sleep", &["5"]);
        let id = ProcessId::of(child.id()).expect("running child has no ProcessId");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(id.pid).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill failed");

        // The killed child stays a zombie until it is reaped, so wait for that state.
        let start = Instant::now();
        while sys::read_status(id.pid).is_some_and(|status| !status.zombie) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "child {} did not become a zombie",
                id.pid
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = sys::read_status(id.pid).expect("zombie has no status before reaping");
        assert!(status.zombie);
        assert!(!id.is_alive());
        assert_eq!(ProcessId::of(id.pid), None);
        assert_eq!(process_info(id.pid), None);

        wait_with_deadline(&mut child, Duration::from_secs(5));
    }

    #[test]
    fn ancestors_start_with_parent() {
        let list = ancestors();
        let parent = std::os::unix::process::parent_id();
        let first = list.first().expect("test process has no ancestors");
        assert_eq!(first.id.pid, parent);
        assert!(first.id.is_alive());
        assert!(!first.name.is_empty());
    }

    #[test]
    fn ancestors_are_linked() {
        let list = ancestors();
        for pair in list.windows(2) {
            assert_eq!(
                pair[0].parent,
                Some(pair[1].id.pid),
                "broken link in {list:?}"
            );
        }
        let last = list.last().expect("test process has no ancestors");
        assert!(
            last.id.pid == 1 || last.parent.is_none(),
            "walk ended early at {last:?}"
        );
    }

    #[test]
    fn process_info_of_child_names_executable() {
        let mut child = spawn_quiet("sleep", &["5"]);
        let info = process_info(child.id()).expect("running child has no ProcessInfo");
        child.kill().expect("kill failed");
        wait_with_deadline(&mut child, Duration::from_secs(5));

        assert_eq!(info.name, "sleep");
        assert_eq!(info.parent, Some(std::process::id()));
        assert_eq!(info.id.pid, child.id());
    }

    #[test]
    fn missing_pid_has_no_info() {
        // Linux caps pids at 2^22 (PID_MAX_LIMIT) and macOS at 99999, so this pid never runs.
        let pid = u32::MAX - 1;
        assert_eq!(ProcessId::of(pid), None);
        assert_eq!(process_info(pid), None);
    }

    #[test]
    fn is_alive_is_fast() {
        let me = ProcessId::current();
        let calls: u32 = 200;
        let start = Instant::now();
        for _ in 0..calls {
            assert!(me.is_alive());
        }
        let per_call = start.elapsed() / calls;
        assert!(
            per_call < Duration::from_millis(1),
            "is_alive took {per_call:?} per call"
        );
    }

    #[cfg(target_os = "linux")]
    mod stat {
        use super::super::linux::{StatParseError, parse_stat};

        /// Builds a stat line in the kernel's layout with the given fields 1 to 4 and 22.
        fn stat_line(pid: u32, comm: &str, state: char, ppid: u32, start_time: u64) -> String {
            // Fields 5 to 21 (pgrp .. itrealvalue), then 22 (starttime) and a few more.
            let middle = "12 12 34816 12 4194560 1 0 0 0 3 1 0 0 20 0 1 0";
            format!(
                "{pid} ({comm}) {state} {ppid} {middle} {start_time} 8192000 100 \
                 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"
            )
        }

        #[test]
        fn parses_plain_line() {
            let line = stat_line(4242, "cargo-nextest", 'S', 17, 123456);
            let status = parse_stat(&line).unwrap();
            assert_eq!(status.comm, "cargo-nextest");
            assert!(!status.zombie);
            assert_eq!(status.parent, Some(17));
            assert_eq!(status.start_time, 123456);
        }

        #[test]
        fn parses_real_kernel_line() {
            // Output of `cat /proc/self/stat` on Linux 6.18.
            let line = "15916 (cat) R 15913 15913 11764 0 -1 4194304 99 0 0 0 0 0 0 0 20 0 1 0 \
                        358934 3133440 359 18446744073709551615 94674704732160 94674704752041 \
                        140736209321632 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94674704768048 \
                        94674704769664 94675534352384 140736209324739 140736209324759 \
                        140736209324759 140736209326059 0\n";
            let status = parse_stat(line).unwrap();
            assert_eq!(status.comm, "cat");
            assert!(!status.zombie);
            assert_eq!(status.parent, Some(15913));
            assert_eq!(status.start_time, 358934);
        }

        #[test]
        fn comm_with_spaces_and_parens() {
            let line = stat_line(7, "a) b (c) Z 9", 'R', 3, 99);
            let status = parse_stat(&line).unwrap();
            assert_eq!(status.comm, "a) b (c) Z 9");
            assert!(!status.zombie);
            assert_eq!(status.parent, Some(3));
            assert_eq!(status.start_time, 99);
        }

        #[test]
        fn zombie_state() {
            let status = parse_stat(&stat_line(8, "sleep", 'Z', 1, 5)).unwrap();
            assert!(status.zombie);
            let status = parse_stat(&stat_line(8, "sleep", 'X', 1, 5)).unwrap();
            assert!(status.zombie);
            let status = parse_stat(&stat_line(8, "sleep", 'D', 1, 5)).unwrap();
            assert!(!status.zombie);
        }

        #[test]
        fn ppid_zero_has_no_parent() {
            let status = parse_stat(&stat_line(1, "systemd", 'S', 0, 1)).unwrap();
            assert_eq!(status.parent, None);
        }

        #[test]
        fn rejects_malformed_lines() {
            assert_eq!(
                parse_stat("12 cargo S 1"),
                Err(StatParseError::MissingOpenParen)
            );
            assert_eq!(
                parse_stat("12 (cargo S 1"),
                Err(StatParseError::MissingCloseParen)
            );
            assert_eq!(
                parse_stat("12 )cargo( S 1"),
                Err(StatParseError::MissingCloseParen)
            );
            assert_eq!(
                parse_stat("12 (cargo) S 1 2 3"),
                Err(StatParseError::MissingField(22))
            );
            assert_eq!(
                parse_stat("12 (cargo)"),
                Err(StatParseError::MissingField(3))
            );

            let bad_ppid = stat_line(12, "cargo", 'S', 1, 5).replacen(" 1 ", " x ", 1);
            assert_eq!(
                parse_stat(&bad_ppid),
                Err(StatParseError::InvalidField {
                    field: 4,
                    value: "x".to_owned()
                })
            );
            let bad_state = stat_line(12, "cargo", 'S', 1, 5).replacen(" S ", " SS ", 1);
            assert!(matches!(
                parse_stat(&bad_state),
                Err(StatParseError::InvalidField { field: 3, .. })
            ));
            let bad_start = stat_line(12, "cargo", 'S', 1, 5).replacen(" 0 5 ", " 0 -5 ", 1);
            assert!(matches!(
                parse_stat(&bad_start),
                Err(StatParseError::InvalidField { field: 22, .. })
            ));
        }
    }
}
