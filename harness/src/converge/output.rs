//! Reading jetp's console output: colour codes, per-task result markers and failure markers.
//!
//! jetporch 0.1.1 (crates.io `jetp`) and the Jetpack fork print the same markers from
//! `src/playbooks/visitor.rs`: `> begin task: NAME` before each task, then one line per host
//! such as `✓ HOST => created`. A task that ran a command prints `=> complete`, not
//! `=> executed`.

/// Result words after `=> ` that mean a task changed the host.
///
/// `executed` is not printed by jetp 0.1.1 or the fork (they print `complete`), and is accepted
/// in case a later release names the state after its `TaskStatus::IsExecuted`.
const CHANGED_RESULTS: [&str; 5] = ["created", "modified", "removed", "complete", "executed"];

/// Result word after `=> ` that means a task found the host already as declared.
const UNCHANGED_RESULT: &str = "matched";

/// Lines that jetp prints when a host failed, even if its exit status were 0. `occured` is
/// jetp's spelling; the corrected spelling is accepted too.
const FAILURE_MARKERS: [&str; 3] = [
    "Failures have occured",
    "Failures have occurred",
    "connection failed to host:",
];

/// Removes ANSI CSI escape sequences (colours, as `\x1b[0;31m`, and cursor controls) from `text`.
///
/// This covers the `\x1b\[[0-9;]*m` colour codes jetp prints and the other CSI sequences its
/// Markdown table renderer may emit.
pub(crate) fn strip_ansi(text: &str) -> String {
    if !text.contains('\x1b') {
        return text.to_owned();
    }
    let mut stripped = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            stripped.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // A CSI sequence ends with a final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    stripped
}

/// Changed and unchanged task results counted from jetp's output, one line at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Task results that changed a host.
    pub changed: usize,
    /// Task results that found a host as declared.
    pub unchanged: usize,
    /// Names of the tasks that changed a host, in output order, each once.
    pub changed_tasks: Vec<String>,
    /// Whether a failure marker was seen.
    pub failure_marker: Option<String>,
    current_task: Option<String>,
}

impl Tally {
    /// Counts one output line, already stripped of ANSI codes.
    pub(crate) fn record(&mut self, line: &str) {
        let line = line.trim();
        if let Some(task) = begun_task(line) {
            self.current_task = Some(task.to_owned());
            return;
        }
        if self.failure_marker.is_none()
            && let Some(marker) = FAILURE_MARKERS.iter().find(|m| line.contains(*m))
        {
            self.failure_marker = Some((*marker).to_owned());
        }
        let Some(result) = task_result(line) else {
            return;
        };
        if CHANGED_RESULTS.contains(&result) {
            self.changed += 1;
            let task = self
                .current_task
                .clone()
                .unwrap_or_else(|| "(unnamed task)".to_owned());
            if !self.changed_tasks.contains(&task) {
                self.changed_tasks.push(task);
            }
        } else if result == UNCHANGED_RESULT {
            self.unchanged += 1;
        }
    }
}

/// Returns the task or handler name of a `> begin task: NAME` or `> (ROLE) begin handler: NAME`
/// line.
fn begun_task(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("> ")?;
    let rest = match rest.strip_prefix('(') {
        Some(role_and_rest) => role_and_rest.split_once(") ")?.1,
        None => rest,
    };
    rest.strip_prefix("begin task: ")
        .or_else(|| rest.strip_prefix("begin handler: "))
        .map(str::trim)
}

/// Returns the result word of a successful per-host line, `✓ HOST => WORD ...`.
///
/// Failed results start with `!` and are not task results here; `✓ HOST => failed (ignored)`
/// returns `failed`, which neither counter takes.
fn task_result(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('✓')?;
    let (_, result) = rest.split_once("=> ")?;
    result.split_whitespace().next()
}

/// Returns the last `count` lines of `lines`, joined with newlines.
pub(crate) fn tail(lines: &[String], count: usize) -> String {
    let start = lines.len().saturating_sub(count);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of `jetp ssh` 0.1.1 converging `fixtures/playbooks/node-prep.yml` for the first
    /// time, as captured from a terminal (colours included).
    const FIRST_RUN: &str = include_str!("testdata/jetp-first-run.txt");
    /// The same playbook converged a second time.
    const SECOND_RUN: &str = include_str!("testdata/jetp-second-run.txt");
    /// A playbook whose `!shell` task exits 3.
    const FAILED_RUN: &str = include_str!("testdata/jetp-failed-task.txt");

    fn tally(output: &str) -> Tally {
        let mut tally = Tally::default();
        for line in output.lines() {
            tally.record(&strip_ansi(line));
        }
        tally
    }

    #[test]
    fn strip_ansi_removes_colour_codes() {
        assert_eq!(
            strip_ansi("\x1b[34m✓ node => created\x1b[0m"),
            "✓ node => created"
        );
        assert_eq!(strip_ansi("\x1b[1;31mred\x1b[m plain"), "red plain");
        assert_eq!(strip_ansi("a\x1b[2Kb"), "ab");
        assert_eq!(strip_ansi("no codes"), "no codes");
    }

    #[test]
    fn strip_ansi_keeps_text_after_lone_escape() {
        assert_eq!(strip_ansi("x\x1bdone"), "xdone");
        assert_eq!(strip_ansi("end\x1b"), "end");
    }

    #[test]
    fn first_run_counts_changes() {
        let tally = tally(FIRST_RUN);

        assert_eq!(tally.changed, 2, "{tally:?}");
        assert_eq!(tally.unchanged, 0, "{tally:?}");
        assert_eq!(
            tally.changed_tasks,
            ["create the marker file", "copy the node configuration"]
        );
        assert_eq!(tally.failure_marker, None);
    }

    #[test]
    fn second_run_counts_matches() {
        let tally = tally(SECOND_RUN);

        assert_eq!(tally.changed, 0, "{tally:?}");
        assert_eq!(tally.unchanged, 2, "{tally:?}");
        assert!(tally.changed_tasks.is_empty());
        assert_eq!(tally.failure_marker, None);
    }

    #[test]
    fn failed_run_shows_failure_marker() {
        let tally = tally(FAILED_RUN);

        assert_eq!(
            tally.failure_marker.as_deref(),
            Some("Failures have occured")
        );
    }

    #[test]
    fn shell_task_counts_as_changed() {
        let mut tally = Tally::default();
        for line in [
            "> (prep) begin task: run a command",
            "… node => running",
            "✓ node => complete",
            "> begin handler: restart",
            "✓ node => modified (Mode)",
            "> begin task: skipped one",
            "✓ node => skipped ",
            "✓ node => failed (ignored)",
        ] {
            tally.record(line);
        }

        assert_eq!(tally.changed, 2);
        assert_eq!(tally.unchanged, 0);
        assert_eq!(tally.changed_tasks, ["run a command", "restart"]);
    }

    #[test]
    fn connection_failure_is_marker() {
        let mut tally = Tally::default();
        tally.record("! connection failed to host: k3sh-abc");

        assert_eq!(
            tally.failure_marker.as_deref(),
            Some("connection failed to host:")
        );
        assert_eq!(tally.changed, 0);
    }

    #[test]
    fn tail_keeps_last_lines() {
        let lines: Vec<String> = (1..=5).map(|i| i.to_string()).collect();

        assert_eq!(tail(&lines, 2), "4\n5");
        assert_eq!(tail(&lines, 10), "1\n2\n3\n4\n5");
        assert_eq!(tail(&[], 3), "");
    }
}
