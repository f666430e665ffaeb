//! Results on stdout, as text for people or JSON documents for scripts; errors on stderr.

use std::borrow::Cow;
use std::io::Write;

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::error::Error;
pub use crate::model::escape_control;
use crate::model::needs_escape;

/// Writes one result: `text` renders it for people, `doc` is the JSON document.
pub fn emit<T: Serialize>(format: OutputFormat, doc: &T, text: impl FnOnce() -> String) {
    let rendered = match format {
        OutputFormat::Json => serde_json::to_string_pretty(doc)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot render result: {e}\"}}")),
        // The renderers escape what they print from the store; this catches any string
        // they missed, keeping the renderer's own line breaks.
        OutputFormat::Text => escape_lines(&text()).into_owned(),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not worth a panic.
    let _ = writeln!(stdout, "{}", rendered.trim_end_matches('\n'));
}

/// Writes an error to stderr: one line (plus a hint) as text, or a JSON document.
pub fn emit_error(format: OutputFormat, err: &Error) {
    let mut stderr = std::io::stderr().lock();
    match format {
        OutputFormat::Json => {
            let _ = writeln!(stderr, "{}", err.to_json());
        }
        OutputFormat::Text => {
            let _ = writeln!(stderr, "error: {}", escape_lines(&err.to_string()));
            if let Some(hint) = err.hint() {
                let _ = writeln!(stderr, "hint: {}", escape_lines(&hint.to_string()));
            }
        }
    }
}

/// [`escape_control`] line by line: a whole rendered text, whose line breaks (and tabs) are
/// the renderer's own.
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c != '\n' && c != '\t' && needs_escape(c))
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.split('\n')
            .map(|line| {
                line.split('\t')
                    .map(escape_control)
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Renders rows as left-aligned columns separated by two spaces; cells are escaped with
/// [`escape_control`] (a control character would break the alignment, or worse).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| escape_control(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Human-readable byte size.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long".into(), "x".into()],
                vec!["s".into(), "y".into()],
            ],
        );
        assert_eq!(t, "A     BB\nlong  x\ns     y");
    }

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(escape_control("plain dag_id-1 é ✓"), "plain dag_id-1 é ✓");
        assert_eq!(
            escape_control("a\u{1b}[2Jb\u{7}c\u{0}d"),
            "a\\x1b[2Jb\\x07c\\x00d"
        );
        assert_eq!(escape_control("x\ny\tz\rw"), "x\\x0ay\\x09z\\x0dw");
        assert_eq!(escape_control("del\u{7f}"), "del\\x7f");
        assert_eq!(escape_control("csi\u{9b}31m"), "csi\\u{9b}31m");
        assert_eq!(escape_control("\u{202e}txt"), "\\u{202e}txt");
        // Line by line: the renderer's breaks and tabs stay, everything else is escaped.
        assert_eq!(
            escape_lines("one\u{1b}]0;x\u{7}\ntwo\tthree"),
            "one\\x1b]0;x\\x07\ntwo\tthree"
        );
    }

    #[test]
    fn table_cells_are_escaped() {
        let t = table(&["ID"], &[vec!["evil\u{1b}[31m".into()]]);
        assert_eq!(t, "ID\nevil\\x1b[31m");
    }
}
