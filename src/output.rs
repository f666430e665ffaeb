//! Results on stdout, as text for people or JSON documents for scripts; errors on stderr.

use std::io::Write;

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::error::Error;

/// Writes one result: `text` renders it for people, `doc` is the JSON document.
pub fn emit<T: Serialize>(format: OutputFormat, doc: &T, text: impl FnOnce() -> String) {
    let rendered = match format {
        OutputFormat::Json => serde_json::to_string_pretty(doc)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot render result: {e}\"}}")),
        OutputFormat::Text => text(),
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
            let _ = writeln!(stderr, "error: {err}");
            if let Some(hint) = err.hint() {
                let _ = writeln!(stderr, "hint: {hint}");
            }
        }
    }
}

/// Renders rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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
}
