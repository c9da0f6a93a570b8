//! Reading limactl's stderr: ANSI colour removal, output tails and the fatal log message.
//!
//! limactl logs through logrus, which has three line formats. With stderr piped, lines are
//! logfmt, such as `time="…" level=fatal msg="unmatched instances"`, and values with spaces or
//! quotes are quoted Go-style. On a terminal, lines look like `FATA[0604] did not receive …`.
//! With `--log-format=json`, and in `ha.stderr.log`, lines are JSON objects with `level` and
//! `msg`.

/// Maximum length of one quoted output line; longer lines are cut, because one `limactl list`
/// line contains a whole instance config.
const MAX_LINE_CHARS: usize = 400;

/// Removes ANSI escape sequences (CSI sequences such as colour codes, and two-byte escapes).
pub(crate) fn strip_ansi(text: &str) -> String {
    if !text.contains('\x1b') {
        return text.to_owned();
    }
    let mut output = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            output.push(c);
            continue;
        }
        // A CSI sequence runs up to a final byte in '@'..='~'; any other escape is one more
        // character.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    output
}

/// Returns the last `count` non-blank lines of `text`, each cut to a readable length.
pub(crate) fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
        .collect();
    let start = lines.len().saturating_sub(count);
    lines[start..]
        .iter()
        .map(|line| shorten(line))
        .collect::<Vec<_>>()
        .join("\n")
}

fn shorten(line: &str) -> String {
    match line.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// Extracts the message of the last fatal log line, in any of logrus's three formats.
///
/// A logfmt line's `error` field is appended to the message, because Lima sometimes logs the
/// cause there rather than inside `msg`.
pub(crate) fn fatal_reason(stderr: &str) -> Option<String> {
    stderr.lines().rev().find_map(|line| {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("FATA[") {
            let (_, message) = rest.split_once(']')?;
            return Some(message.trim().to_owned());
        }
        if line.starts_with('{') {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            if value.get("level")?.as_str()? != "fatal" {
                return None;
            }
            return Some(value.get("msg")?.as_str()?.to_owned());
        }
        let fields = parse_logfmt(line);
        let is_fatal = fields
            .iter()
            .any(|(key, value)| key == "level" && value == "fatal");
        if !is_fatal {
            return None;
        }
        let message = fields
            .iter()
            .find(|(key, _)| key == "msg")
            .map(|(_, v)| v.clone())?;
        match fields.iter().find(|(key, _)| key == "error") {
            Some((_, error)) => Some(format!("{message}: {error}")),
            None => Some(message),
        }
    })
}

/// Renders the JSON lines of `ha.stderr.log` as `level: msg` lines; other lines pass unchanged.
pub(crate) fn render_host_agent_log(text: &str) -> String {
    text.lines()
        .map(|line| {
            let parsed: Option<(String, String)> = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|value| {
                    let level = value.get("level")?.as_str()?.to_owned();
                    let message = value.get("msg")?.as_str()?.to_owned();
                    Some((level, message))
                });
            match parsed {
                Some((level, message)) => format!("{level}: {message}"),
                None => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits a logfmt line into `key=value` pairs, unquoting Go-quoted values.
///
/// Tokens without `=` are skipped, so a line that is not logfmt yields no `level` field.
fn parse_logfmt(line: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        rest = &rest[key_end..];
        let Some(after_equals) = rest.strip_prefix('=') else {
            rest = rest.trim_start();
            continue;
        };
        let (value, remainder) = if after_equals.starts_with('"') {
            unquote_go(after_equals)
        } else {
            let end = after_equals
                .find(char::is_whitespace)
                .unwrap_or(after_equals.len());
            (after_equals[..end].to_owned(), &after_equals[end..])
        };
        if !key.is_empty() {
            fields.push((key.to_owned(), value));
        }
        rest = remainder.trim_start();
    }
    fields
}

/// Reads one Go double-quoted string literal from the start of `input` (which begins with `"`)
/// and returns its value and the text after the closing quote.
///
/// Handles the escapes Go's `strconv.Quote` produces. An unterminated literal yields everything
/// after the opening quote.
fn unquote_go(input: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = input.char_indices().skip(1);
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return (value, &input[index + 1..]),
            '\\' => {
                let Some((_, escape)) = chars.next() else {
                    break;
                };
                match escape {
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    'r' => value.push('\r'),
                    'a' => value.push('\x07'),
                    'b' => value.push('\x08'),
                    'f' => value.push('\x0c'),
                    'v' => value.push('\x0b'),
                    'x' | 'u' | 'U' => {
                        let digits = match escape {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = chars.by_ref().take(digits).map(|(_, c)| c).collect();
                        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                            Some(decoded) => value.push(decoded),
                            None => {
                                value.push('\\');
                                value.push(escape);
                                value.push_str(&hex);
                            }
                        }
                    }
                    other => value.push(other),
                }
            }
            other => value.push(other),
        }
    }
    (value, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_colour_codes() {
        assert_eq!(strip_ansi("\x1b[36mINFO\x1b[0m[0092] ok"), "INFO[0092] ok");
        assert_eq!(strip_ansi("\x1b[1;31mbold red\x1b[m"), "bold red");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn tail_skips_blank_lines_and_cuts_long_ones() {
        let long = "x".repeat(1000);
        let text = format!("a\n\n  \nb\n{long}\n");
        let tail = tail_lines(&text, 2);
        let lines: Vec<&str> = tail.lines().collect();

        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "b");
        assert_eq!(lines[1].chars().count(), MAX_LINE_CHARS + 1);
        assert!(lines[1].ends_with('…'));
    }

    #[test]
    fn fatal_reason_from_logfmt_with_go_escapes() {
        let line = r#"time="2026-01-01T00:00:00Z" level=fatal msg="instance \"kt\" already exists (\"/h/kt\")\tnext\u00e9""#;
        assert_eq!(
            fatal_reason(line).as_deref(),
            Some("instance \"kt\" already exists (\"/h/kt\")\tnexté")
        );
    }

    #[test]
    fn fatal_reason_appends_error_field() {
        let line = r#"time="t" level=fatal msg="failed to start" error="exit status 1""#;
        assert_eq!(
            fatal_reason(line).as_deref(),
            Some("failed to start: exit status 1")
        );
    }

    #[test]
    fn fatal_reason_takes_last_fatal_line() {
        let stderr = "time=\"t\" level=info msg=\"Starting\"\n\
                      time=\"t\" level=fatal msg=first\n\
                      time=\"t\" level=fatal msg=\"second one\"\n\
                      time=\"t\" level=info msg=\"trailing\"\n";
        assert_eq!(fatal_reason(stderr).as_deref(), Some("second one"));
    }

    #[test]
    fn fatal_reason_from_tty_and_json_lines() {
        assert_eq!(
            fatal_reason("FATA[0000] expected status \"Running\", got \"Stopped\"").as_deref(),
            Some("expected status \"Running\", got \"Stopped\"")
        );
        assert_eq!(
            fatal_reason(r#"{"level":"fatal","msg":"unmatched instances","time":"t"}"#).as_deref(),
            Some("unmatched instances")
        );
    }

    #[test]
    fn fatal_reason_absent_without_fatal_line() {
        assert_eq!(
            fatal_reason("time=\"t\" level=warning msg=\"careful\""),
            None
        );
        assert_eq!(fatal_reason("bash: foo: command not found"), None);
        assert_eq!(fatal_reason(""), None);
    }

    #[test]
    fn unterminated_quote_keeps_text() {
        assert_eq!(
            fatal_reason(r#"level=fatal msg="cut off"#).as_deref(),
            Some("cut off")
        );
    }

    #[test]
    fn host_agent_log_lines_rendered() {
        let log = include_str!("../tests/data/ha.stderr.log-lines.jsonl");
        let rendered = render_host_agent_log(log);
        let lines: Vec<&str> = rendered.lines().collect();

        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            "info: Forwarding TCP from 0.0.0.0:5053 to 127.0.0.1:5053"
        );
        assert_eq!(
            lines[3],
            "info: Waiting for the essential requirement 1 of 2: \"ssh\""
        );
        assert_eq!(render_host_agent_log("not json"), "not json");
    }
}
