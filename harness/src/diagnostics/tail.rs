//! The ends of Lima's host-side logs: a short tail for error messages, and longer ones for the
//! diagnostics directory.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Lines kept from the end of each log.
const TAIL_LINES: usize = 20;

/// Bytes read from the end of each log, enough for [`TAIL_LINES`] long JSON lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// Formats the last lines of the instance's `serial*.log` files, which show how far the guest
/// booted.
///
/// The provisioner's start error already carries limactl's stderr and the tail of the host
/// agent's `ha.stderr.log`, so they are not repeated here. Missing and empty files are skipped:
/// a start can fail before they exist.
pub(crate) fn serial_log_tail(instance_dir: &Path) -> String {
    let mut text = String::new();
    for log in serial_logs(instance_dir) {
        if let Some(tail) = tail(&log) {
            text.push_str(&format!("\n--- last lines of {}:\n{tail}", log.display()));
        }
    }
    text
}

/// Lists the instance's `serial*.log` files (one per console of the VM driver), sorted by name.
/// A missing directory has none.
pub(crate) fn serial_logs(instance_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(instance_dir) else {
        return Vec::new();
    };
    let mut serial: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("serial") && name.ends_with(".log"))
        })
        .collect();
    serial.sort();
    serial
}

/// Reads at most the last `max_lines` lines of `path` from its last `max_bytes` bytes, blank
/// lines included. A line cut by the byte limit is dropped, and invalid UTF-8 is replaced.
pub(crate) fn read_tail(path: &Path, max_lines: usize, max_bytes: u64) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let length = file.metadata()?.len();
    let start = length.saturating_sub(max_bytes);
    // One byte more than the limit shows whether the first line starts at the limit.
    file.seek(SeekFrom::Start(start.saturating_sub(1)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;

    let whole_lines = match start {
        0 => &bytes[..],
        _ => match bytes.iter().position(|byte| *byte == b'\n') {
            Some(newline) => &bytes[newline + 1..],
            None => &[],
        },
    };
    let text = String::from_utf8_lossy(whole_lines);
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.len().saturating_sub(max_lines);
    let mut tail = lines[first..].join("\n");
    if !tail.is_empty() {
        tail.push('\n');
    }
    Ok(tail)
}

fn tail(path: &Path) -> Option<String> {
    let mut file = fs::File::open(path).ok()?;
    let length = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;

    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return None;
    }
    let start = lines.len().saturating_sub(TAIL_LINES);
    Some(lines[start..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_of_serial_logs() {
        let dir = tempfile::tempdir().unwrap();
        let serial: String = (1..=30).map(|i| format!("boot line {i}\n")).collect();
        fs::write(dir.path().join("serial.log"), serial).unwrap();
        fs::write(dir.path().join("serialp.log"), "Booting Linux\n").unwrap();
        fs::write(dir.path().join("serialv.log"), "").unwrap();
        fs::write(dir.path().join("ha.stderr.log"), "host agent\n").unwrap();

        let text = serial_log_tail(dir.path());

        assert!(text.contains("boot line 30"), "{text}");
        assert!(text.contains("boot line 11"), "{text}");
        assert!(!text.contains("boot line 10\n"), "{text}");
        assert!(text.contains("Booting Linux"), "{text}");
        assert!(
            !text.contains("serialv.log"),
            "empty logs are skipped: {text}"
        );
        assert!(
            !text.contains("host agent"),
            "the host agent log is not repeated: {text}"
        );
    }

    #[test]
    fn read_tail_drops_cut_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ha.stderr.log");
        fs::write(&path, "first line\nsecond\n\nfourth\n").unwrap();

        assert_eq!(
            read_tail(&path, 10, 1024).unwrap(),
            "first line\nsecond\n\nfourth\n"
        );
        assert_eq!(read_tail(&path, 2, 1024).unwrap(), "\nfourth\n");
        assert_eq!(
            read_tail(&path, 10, 15).unwrap(),
            "second\n\nfourth\n",
            "a line that starts at the byte limit is kept"
        );
        assert_eq!(
            read_tail(&path, 10, 14).unwrap(),
            "\nfourth\n",
            "the line cut by the byte limit is dropped"
        );
    }

    #[test]
    fn read_tail_of_missing_file_is_not_found() {
        let error = read_tail(Path::new("/nonexistent/ha.stderr.log"), 10, 1024).unwrap_err();

        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn missing_directory_gives_empty_tail() {
        assert_eq!(serial_log_tail(Path::new("/nonexistent/k3sh-x")), "");
    }
}
