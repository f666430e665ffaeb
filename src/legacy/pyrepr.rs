//! Python literals (`repr` of what `json.loads` returns) back to the JSON text `json.dumps`
//! wrote: the original library wrote json columns such as `task_instance.next_kwargs` with
//! `str()`, so `{"a": null}` arrived as `{'a': None}`.

/// Why a text is not a Python literal of JSON values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Python literal of JSON values at byte {at}: {problem}")]
pub struct ReprError {
    pub at: usize,
    pub problem: &'static str,
}

/// The JSON text of a Python literal made of dicts (string keys), lists, tuples, strings,
/// numbers, True, False and None; `None` alone is JSON `null`. Key order is kept, and the
/// separators are `json.dumps`'s defaults (`", "`, `": "`, non-ASCII escaped), so a value
/// comes back as Airflow stored it. Non-finite floats, bytes, sets and calls are refused.
pub fn to_json(text: &str) -> Result<String, ReprError> {
    let mut parser = Parser {
        src: text,
        text: text.as_bytes(),
        at: 0,
        out: String::with_capacity(text.len()),
    };
    parser.value(0)?;
    parser.skip_ws();
    if parser.at != parser.text.len() {
        return Err(parser.error("text after the value"));
    }
    Ok(parser.out)
}

const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    src: &'a str,
    text: &'a [u8],
    at: usize,
    out: String,
}

impl Parser<'_> {
    fn error(&self, problem: &'static str) -> ReprError {
        ReprError {
            at: self.at,
            problem,
        }
    }

    fn skip_ws(&mut self) {
        while self
            .text
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let end = self.at + word.len();
        let matches = self.text.get(self.at..end) == Some(word.as_bytes())
            && !self
                .text
                .get(end)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if matches {
            self.at = end;
        }
        matches
    }

    fn value(&mut self, depth: usize) -> Result<(), ReprError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.container(b'}', depth, true),
            Some(b'[') => self.container(b']', depth, false),
            Some(b'(') => self.container(b')', depth, false),
            Some(b'\'' | b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ if self.eat_word("None") => {
                self.out.push_str("null");
                Ok(())
            }
            _ if self.eat_word("True") => {
                self.out.push_str("true");
                Ok(())
            }
            _ if self.eat_word("False") => {
                self.out.push_str("false");
                Ok(())
            }
            None => Err(self.error("the text ends where a value should be")),
            _ => Err(self.error("not a JSON-compatible Python value")),
        }
    }

    /// A dict (`is_dict`), list or tuple; a trailing comma is allowed, as Python writes `(1,)`.
    fn container(&mut self, close: u8, depth: usize, is_dict: bool) -> Result<(), ReprError> {
        self.at += 1;
        self.out.push(if is_dict { '{' } else { '[' });
        let mut first = true;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.at += 1;
                break;
            }
            if !first {
                self.out.push_str(", ");
            }
            first = false;
            if is_dict {
                self.skip_ws();
                if !matches!(self.peek(), Some(b'\'' | b'"')) {
                    return Err(self.error("a dict key that is not a string"));
                }
                self.string()?;
                self.skip_ws();
                if self.peek() != Some(b':') {
                    return Err(self.error("a dict key without ':'"));
                }
                self.at += 1;
                self.out.push_str(": ");
            }
            self.value(depth + 1)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(c) if c == close => {}
                _ => return Err(self.error("a missing ',' or closing bracket")),
            }
        }
        self.out.push(if is_dict { '}' } else { ']' });
        Ok(())
    }

    fn number(&mut self) -> Result<(), ReprError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.peek().is_some_and(|b| b.is_ascii_digit()) {
                p.at += 1;
            }
            p.at > from
        };
        if !digits(self) {
            // `-inf` and the like have no JSON form.
            return Err(self.error("a number without digits (inf and nan have no JSON form)"));
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !digits(self) {
                return Err(self.error("a number without digits after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !digits(self) {
                return Err(self.error("an exponent without digits"));
            }
        }
        if self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(self.error("not a number"));
        }
        // Python's repr of an int or float is valid JSON as it is (json.dumps writes the same).
        let text = self.src.get(start..self.at).unwrap_or_default();
        self.out.push_str(text);
        Ok(())
    }

    fn hex(&mut self, len: usize) -> Result<u32, ReprError> {
        let digits = self
            .text
            .get(self.at..self.at + len)
            .and_then(|d| std::str::from_utf8(d).ok())
            .ok_or_else(|| self.error("a short escape sequence"))?;
        let value =
            u32::from_str_radix(digits, 16).map_err(|_| self.error("a bad escape sequence"))?;
        self.at += len;
        Ok(value)
    }

    fn string(&mut self) -> Result<(), ReprError> {
        let quote = self.text[self.at];
        self.at += 1;
        let mut value = String::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("a string that is not closed"));
            };
            match b {
                _ if b == quote => {
                    self.at += 1;
                    break;
                }
                b'\\' => {
                    self.at += 1;
                    value.push(self.escape()?);
                }
                _ => {
                    // `at` only ever moves by whole characters, so it is a char boundary.
                    let Some(c) = self.src.get(self.at..).and_then(|rest| rest.chars().next())
                    else {
                        return Err(self.error("not UTF-8"));
                    };
                    self.at += c.len_utf8();
                    value.push(c);
                }
            }
        }
        self.push_json_string(&value);
        Ok(())
    }

    /// The character of the escape sequence after a backslash (Python's string escapes).
    fn escape(&mut self) -> Result<char, ReprError> {
        let Some(esc) = self.peek() else {
            return Err(self.error("a string that is not closed"));
        };
        self.at += 1;
        Ok(match esc {
            b'\\' => '\\',
            b'\'' => '\'',
            b'"' => '"',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'a' => '\u{7}',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'v' => '\u{b}',
            b'x' => self.code_point(2)?,
            b'u' => self.code_point(4)?,
            b'U' => self.code_point(8)?,
            b'0'..=b'7' => {
                let mut n = u32::from(esc - b'0');
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ b'0'..=b'7') => {
                            n = n * 8 + u32::from(d - b'0');
                            self.at += 1;
                        }
                        _ => break,
                    }
                }
                char::from_u32(n).ok_or_else(|| self.error("a bad escape sequence"))?
            }
            _ => return Err(self.error("an unknown escape sequence")),
        })
    }

    /// `value` as json.dumps writes a string (ensure_ascii).
    fn push_json_string(&mut self, value: &str) {
        self.out.push('"');
        for c in value.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                ' '..='~' => self.out.push(c),
                // json.dumps's ensure_ascii: everything else as \uXXXX (UTF-16 units).
                _ => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
        }
        self.out.push('"');
    }

    fn code_point(&mut self, len: usize) -> Result<char, ReprError> {
        let n = self.hex(len)?;
        char::from_u32(n).ok_or_else(|| self.error("an escape that is not a character"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_repr_of_airflow_next_kwargs() {
        // str(json.loads(v)) for values Airflow 2.10.3 stored, and json.dumps of the same.
        let cases = [
            (
                "{'__var': {'event': {'__var': 1700000000.5, '__type': 'datetime'}, 'n': 3}, '__type': 'dict'}",
                r#"{"__var": {"event": {"__var": 1700000000.5, "__type": "datetime"}, "n": 3}, "__type": "dict"}"#,
            ),
            (
                r#"{'a': None, 'b': [True, False, -1, 1e-05], 'c': (1,), "it's": 'say "hi"'}"#,
                r#"{"a": null, "b": [true, false, -1, 1e-05], "c": [1], "it's": "say \"hi\""}"#,
            ),
            (
                r"{'s': 'caf\xe9 ☃ \n\t\\ \x00 \U0001f600'}",
                r#"{"s": "caf\u00e9 \u2603 \n\t\\ \u0000 \ud83d\ude00"}"#,
            ),
            ("None", "null"),
            ("{}", "{}"),
            ("  [ ]  ", "[]"),
        ];
        for (repr, json) in cases {
            assert_eq!(to_json(repr).as_deref(), Ok(json), "{repr}");
            serde_json::from_str::<serde_json::Value>(json).expect("valid JSON");
        }
    }

    #[test]
    fn refuses_what_has_no_json_form() {
        for repr in [
            "{'x': inf}",
            "{'x': nan}",
            "{1: 'int key'}",
            "datetime.datetime(2024, 1, 1)",
            "b'bytes'",
            "{'x': 1} trailing",
            "{'x': 1",
            "'open",
            "{'x' 1}",
            "",
            "Nonesuch",
        ] {
            assert!(to_json(repr).is_err(), "{repr}");
        }
    }
}
