//! Boot progress on stderr.
//!
//! On a terminal a spinner shows the current phase and how long it has run. Otherwise each
//! phase, and each new requirement the host agent waits for, is one line that starts with a
//! UTC timestamp. When the boot ends, a summary lists how long each phase took. The phases
//! arrive as the `tracing` events of [`crate::progress`], through [`PhaseLayer`]. Log lines go
//! through [`LogWriter`], which clears the spinner line first, so the two never share a line.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Pause between two frames of the spinner.
const TICK: Duration = Duration::from_millis(100);

/// The spinner's frames.
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Erases the terminal line the cursor is on and returns to its start.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// The end of a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The cluster is ready.
    Ready,
    /// The boot failed in its last phase.
    Failed,
}

/// The form in which phases are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// A spinner line that is redrawn in place, for a terminal.
    Spinner,
    /// One timestamped line per phase, for logs and pipes.
    Lines,
}

/// The boot progress display on stderr.
pub(super) struct BootProgress {
    style: Style,
    state: Mutex<State>,
    ticker: Mutex<Option<Ticker>>,
}

/// The thread that redraws the spinner.
struct Ticker {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    instance: String,
    /// Every phase seen, in the order each first started.
    phases: Vec<PhaseTime>,
    current: Option<Current>,
    started: Option<Instant>,
    /// Whether the spinner is on the terminal's current line.
    line_drawn: bool,
    frame: usize,
    ended: bool,
}

/// A phase and the time spent in it so far.
#[derive(Debug)]
struct PhaseTime {
    id: String,
    label: String,
    elapsed: Duration,
}

/// The phase under way.
struct Current {
    index: usize,
    since: Instant,
    detail: String,
}

impl BootProgress {
    /// Returns a display in the style stderr calls for: a spinner on a terminal (unless
    /// `TERM=dumb`), lines otherwise.
    pub(super) fn for_stderr() -> Arc<BootProgress> {
        let terminal = std::io::stderr().is_terminal()
            && std::env::var_os("TERM").is_none_or(|term| term != "dumb");
        let style = if terminal {
            Style::Spinner
        } else {
            Style::Lines
        };
        let progress = Arc::new(BootProgress {
            style,
            state: Mutex::default(),
            ticker: Mutex::new(None),
        });
        if style == Style::Spinner {
            let ticker = Ticker::start(Arc::downgrade(&progress));
            *progress
                .ticker
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()) = ticker;
        }
        progress
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records that phase `id` of `instance`'s boot started (or, for the phase under way, that
    /// it moved on to `detail`), and shows it.
    fn enter(&self, instance: &str, id: &str, label: &str, detail: &str) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.ended {
            return;
        }
        state.started.get_or_insert(now);
        if state.instance.is_empty() {
            state.instance = instance.to_owned();
        }

        let index = match state.phases.iter().position(|phase| phase.id == id) {
            Some(index) => index,
            None => {
                state.phases.push(PhaseTime {
                    id: id.to_owned(),
                    label: label.to_owned(),
                    elapsed: Duration::ZERO,
                });
                state.phases.len() - 1
            }
        };
        let continues = state
            .current
            .as_ref()
            .is_some_and(|current| current.index == index);
        if continues {
            if let Some(current) = &mut state.current {
                current.detail = detail.to_owned();
            }
        } else {
            close_current(&mut state, now);
            state.current = Some(Current {
                index,
                since: now,
                detail: detail.to_owned(),
            });
        }

        match self.style {
            Style::Lines => {
                let line = format!("{} {}", timestamp(), describe(label, detail));
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
            Style::Spinner => draw(&mut state),
        }
    }

    /// Advances the spinner by one frame.
    fn tick(&self) {
        let mut state = self.lock();
        if state.ended {
            return;
        }
        state.frame += 1;
        draw(&mut state);
    }

    /// Ends the display and prints how long each phase took; nothing when no phase started,
    /// as when `nextest-setup` attaches to a cluster that runs already.
    pub(super) fn finish(&self, outcome: Outcome) {
        self.stop_ticker();
        let now = Instant::now();
        let mut state = self.lock();
        if state.ended {
            return;
        }
        state.ended = true;
        let failed_index = match outcome {
            Outcome::Failed => state.current.as_ref().map(|current| current.index),
            Outcome::Ready => None,
        };
        close_current(&mut state, now);
        clear_line(&mut state);
        let Some(started) = state.started else {
            return;
        };
        let text = summary(&state.instance, &state.phases, failed_index, now - started);
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    /// Ends the display without a summary, for an interrupted boot.
    pub(super) fn abandon(&self) {
        self.stop_ticker();
        let mut state = self.lock();
        state.ended = true;
        clear_line(&mut state);
    }

    fn stop_ticker(&self) {
        let ticker = self
            .ticker
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(ticker) = ticker {
            drop(ticker.stop);
            let _ = ticker.thread.join();
        }
    }

    /// Writes a log line to stderr, above the spinner when one is drawn.
    fn write_log(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut state = self.lock();
        clear_line(&mut state);
        std::io::stderr().lock().write_all(bytes)
    }
}

impl Ticker {
    /// Starts the thread that redraws the spinner until stopped or the display is gone.
    /// Without the thread the spinner still moves at each phase, so a failed start is no error.
    fn start(progress: Weak<BootProgress>) -> Option<Ticker> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("k3sh-spinner".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    let Some(progress) = progress.upgrade() else {
                        return;
                    };
                    progress.tick();
                }
            })
            .ok()?;
        Some(Ticker { stop, thread })
    }
}

/// Adds the time since the current phase started to its total.
fn close_current(state: &mut State, now: Instant) {
    if let Some(current) = state.current.take() {
        state.phases[current.index].elapsed += now - current.since;
    }
}

/// Redraws the spinner line, cut to the terminal's width so it never wraps.
fn draw(state: &mut State) {
    let Some(current) = &state.current else {
        return;
    };
    let phase = &state.phases[current.index];
    let text = format!(
        "{} {:>6} {}",
        FRAMES[state.frame % FRAMES.len()],
        format_elapsed(current.since.elapsed()),
        describe(&phase.label, &current.detail),
    );
    let text: String = text
        .chars()
        .take(terminal_width().saturating_sub(1))
        .collect();
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{CLEAR_LINE}{text}");
    let _ = stderr.flush();
    state.line_drawn = true;
}

fn clear_line(state: &mut State) {
    if state.line_drawn {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "{CLEAR_LINE}");
        let _ = stderr.flush();
        state.line_drawn = false;
    }
}

/// Returns the width of the terminal on stderr, or 80 columns when it cannot be read.
fn terminal_width() -> usize {
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points to one that
    // lives for the whole call.
    let result = unsafe {
        nix::libc::ioctl(
            nix::libc::STDERR_FILENO,
            nix::libc::TIOCGWINSZ,
            &mut size as *mut nix::libc::winsize,
        )
    };
    if result == 0 && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

/// `label`, or `label (detail)`.
fn describe(label: &str, detail: &str) -> String {
    if detail.is_empty() {
        label.to_owned()
    } else {
        format!("{label} ({detail})")
    }
}

/// Returns the current time in UTC, to the second, in RFC 3339 form: `2025-09-18T07:52:43Z`.
fn timestamp() -> String {
    crate::diagnostics::rfc3339_utc(time::OffsetDateTime::now_utc())
}

/// `4.2s` below a minute, `3m05.0s` above.
fn format_elapsed(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let minutes = (seconds / 60.0).floor();
        format!("{minutes:.0}m{:04.1}s", seconds - minutes * 60.0)
    }
}

/// Builds the text printed when a boot ends: a header, then one line per phase with its
/// duration.
fn summary(
    instance: &str,
    phases: &[PhaseTime],
    failed_index: Option<usize>,
    total: Duration,
) -> String {
    let total = format_elapsed(total);
    let mut text = match failed_index {
        None => format!("k3s-harness: `{instance}` booted in {total}; time per phase:\n"),
        Some(_) => {
            format!("k3s-harness: the boot of `{instance}` failed after {total}; time per phase:\n")
        }
    };
    for (index, phase) in phases.iter().enumerate() {
        let mark = if failed_index == Some(index) {
            "  (failed)"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "  {:>8}  {}{mark}",
            format_elapsed(phase.elapsed),
            phase.label
        );
    }
    text
}

/// The `tracing` layer that feeds the progress events to a [`BootProgress`].
pub(super) struct PhaseLayer {
    progress: Arc<BootProgress>,
}

impl PhaseLayer {
    pub(super) fn new(progress: Arc<BootProgress>) -> Self {
        PhaseLayer { progress }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PhaseLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        if event.metadata().target() != crate::progress::TARGET {
            return;
        }
        let mut fields = PhaseFields::default();
        event.record(&mut fields);
        if fields.phase.is_empty() {
            return;
        }
        self.progress.enter(
            &fields.instance,
            &fields.phase,
            &fields.message,
            &fields.detail,
        );
    }
}

/// The fields of one progress event.
#[derive(Default)]
struct PhaseFields {
    instance: String,
    phase: String,
    detail: String,
    message: String,
}

impl Visit for PhaseFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "instance" => self.instance = value.to_owned(),
            "phase" => self.phase = value.to_owned(),
            "detail" => self.detail = value.to_owned(),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // The message of `info!("{}", label)` arrives as format arguments, whose Debug output
        // is the formatted text.
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

/// The writer of the log layer: stderr, cleared of the spinner line first.
pub(super) struct LogWriter {
    progress: Option<Arc<BootProgress>>,
}

impl LogWriter {
    pub(super) fn new(progress: Option<Arc<BootProgress>>) -> Self {
        LogWriter { progress }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            progress: self.progress.clone(),
        }
    }
}

/// One log line on its way to stderr.
pub(super) struct LogLine {
    progress: Option<Arc<BootProgress>>,
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &self.progress {
            Some(progress) => progress.write_log(bytes)?,
            None => std::io::stderr().lock().write_all(bytes)?,
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_shows_tenths_and_minutes() {
        assert_eq!(format_elapsed(Duration::from_millis(4_240)), "4.2s");
        assert_eq!(format_elapsed(Duration::from_millis(59_940)), "59.9s");
        assert_eq!(format_elapsed(Duration::from_secs(185)), "3m05.0s");
    }

    #[test]
    fn timestamp_is_utc_to_the_second() {
        let stamp = timestamp();

        assert_eq!(stamp.len(), "2025-09-18T07:52:43Z".len(), "{stamp}");
        assert!(stamp.ends_with('Z'), "{stamp}");
        assert_eq!(&stamp[10..11], "T", "{stamp}");
    }

    fn phase(id: &str, label: &str, seconds: u64) -> PhaseTime {
        PhaseTime {
            id: id.to_owned(),
            label: label.to_owned(),
            elapsed: Duration::from_secs(seconds),
        }
    }

    #[test]
    fn summary_lists_each_phase_and_marks_failure() {
        let phases = [
            phase("create", "creating the Lima instance", 2),
            phase("ssh", "waiting for SSH", 70),
        ];

        let ready = summary("k3sh-a", &phases, None, Duration::from_secs(72));
        let failed = summary("k3sh-a", &phases, Some(1), Duration::from_secs(72));

        assert_eq!(
            ready,
            "k3s-harness: `k3sh-a` booted in 1m12.0s; time per phase:\n\
             \x20     2.0s  creating the Lima instance\n\
             \x20  1m10.0s  waiting for SSH\n"
        );
        assert!(
            failed.starts_with("k3s-harness: the boot of `k3sh-a` failed after 1m12.0s"),
            "{failed}"
        );
        assert!(failed.ends_with("waiting for SSH  (failed)\n"), "{failed}");
    }

    #[test]
    fn phase_time_accumulates_until_the_next_phase() {
        let progress = BootProgress {
            style: Style::Lines,
            state: Mutex::default(),
            ticker: Mutex::new(None),
        };

        progress.enter(
            "k3sh-a",
            "ssh",
            "waiting for SSH",
            "essential requirement 1 of 2",
        );
        progress.enter(
            "k3sh-a",
            "ssh",
            "waiting for SSH",
            "essential requirement 2 of 2",
        );
        progress.enter("k3sh-a", "boot-scripts", "waiting for the boot scripts", "");

        let state = progress.lock();
        let ids: Vec<&str> = state.phases.iter().map(|phase| phase.id.as_str()).collect();
        assert_eq!(ids, ["ssh", "boot-scripts"]);
        assert_eq!(state.current.as_ref().map(|current| current.index), Some(1));
        assert_eq!(state.instance, "k3sh-a");
    }
}
