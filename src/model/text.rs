//! Text from outside (database rows, store keys, error messages) made safe for a terminal.

use std::borrow::Cow;

/// Text from the store (DAG ids, environment names, any manifest string) made safe for a
/// terminal: every control character — C0 (newline and tab included), DEL, C1 — and the
/// Unicode bidirectional overrides become a visible escape (`\x1b`, `\u{9b}`), so an escape
/// sequence in a manifest is shown, not executed, and cannot forge a line or reorder text.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    Cow::Owned(out)
}

pub fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}
