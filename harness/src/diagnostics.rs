//! Evidence attached to errors when a cluster fails to come up.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

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
    let mut logs = Vec::new();
    if let Ok(entries) = fs::read_dir(instance_dir) {
        let mut serial: Vec<_> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("serial") && name.ends_with(".log"))
            })
            .collect();
        serial.sort();
        logs.extend(serial);
    }

    let mut text = String::new();
    for log in logs {
        if let Some(tail) = tail(&log) {
            text.push_str(&format!("\n--- last lines of {}:\n{tail}", log.display()));
        }
    }
    text
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
    fn missing_directory_gives_empty_tail() {
        assert_eq!(serial_log_tail(Path::new("/nonexistent/k3sh-x")), "");
    }
}
