//! Evidence attached to errors when a cluster fails to come up.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Lines kept from the end of each log.
const TAIL_LINES: usize = 20;

/// Bytes read from the end of each log, enough for [`TAIL_LINES`] long JSON lines.
const TAIL_BYTES: u64 = 16 * 1024;

/// Formats the last lines of the instance's `ha.stderr.log` and `serial*.log` files.
///
/// Lima's host agent logs why it could not reach the guest to `ha.stderr.log`, and the serial
/// logs show how far the guest booted. Missing files are skipped: a start can fail before they
/// exist.
pub(crate) fn log_tail(instance_dir: &Path) -> String {
    let mut logs = vec![instance_dir.join("ha.stderr.log")];
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
    fn tail_includes_host_agent_and_serial_logs() {
        let dir = tempfile::tempdir().unwrap();
        let stderr_log: String = (1..=30)
            .map(|i| format!("{{\"msg\":\"line {i}\"}}\n"))
            .collect();
        fs::write(dir.path().join("ha.stderr.log"), stderr_log).unwrap();
        fs::write(dir.path().join("serial.log"), "Booting Linux\n").unwrap();
        fs::write(dir.path().join("serialv.log"), "").unwrap();

        let text = log_tail(dir.path());

        assert!(text.contains("line 30"), "{text}");
        assert!(text.contains("line 11"), "{text}");
        assert!(!text.contains("line 10\""), "{text}");
        assert!(text.contains("Booting Linux"), "{text}");
        assert!(
            !text.contains("serialv.log"),
            "empty logs are skipped: {text}"
        );
    }

    #[test]
    fn missing_directory_gives_empty_tail() {
        assert_eq!(log_tail(Path::new("/nonexistent/k3sh-x")), "");
    }
}
