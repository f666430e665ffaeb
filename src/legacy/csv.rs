//! Reading the CSV that Python's `csv` module writes (minimal quoting, quotes doubled, CRLF or
//! LF records, quoted fields spanning lines), strictly, with the line each record starts on.
//!
//! Hand-written rather than the `csv` crate's reader because that reader cannot be made this
//! strict: csv-core accepts a quote inside an unquoted field (`x"y` reads as `x"y`) and text
//! after a closing quote (`"q"z` reads as `qz`), and with `Terminator::CRLF` it ends a record
//! at a lone carriage return; each is a damaged file that docs/LEGACY.md promises to refuse
//! naming its line. Its `ByteRecord` does not say whether a field was quoted, so the checks
//! cannot be made afterwards either; and it reads `std::io::Read` where the files stream from
//! the (async) store.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One record: the physical line it starts on (1-based) and its fields. The format writes NULL
/// and the empty string alike, so a field is just text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: u64,
    pub fields: Vec<String>,
}

/// Why the text is not the CSV Python writes, and on which line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct CsvError {
    pub line: u64,
    pub problem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    Start,
    /// Inside a field that did not start with a quote.
    Unquoted,
    /// Inside a quoted field.
    Quoted,
    /// Just after a quote inside a quoted field: its end, or the first of a doubled quote.
    QuoteInQuoted,
}

/// Streams records from `reader`. Blank lines are skipped (Python's reader yields no fields
/// for them, and the writer never writes a record without fields).
pub struct RecordReader<R> {
    reader: R,
    delimiter: u8,
    line: u64,
    buf: Vec<u8>,
    bytes: u64,
}

impl<R: AsyncBufRead + Unpin> RecordReader<R> {
    pub fn new(reader: R, delimiter: u8) -> Self {
        RecordReader {
            reader,
            delimiter,
            line: 0,
            buf: Vec::new(),
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The next record, `None` at the end of the text.
    pub async fn next_record(&mut self) -> Result<Option<Record>, CsvError> {
        let mut partial = Partial::default();
        loop {
            self.buf.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .await
                .map_err(|e| CsvError {
                    line: self.line + 1,
                    problem: format!("cannot be read: {e}"),
                })?;
            self.bytes += read as u64;
            if read == 0 {
                return partial.end_of_text();
            }
            self.line += 1;
            if partial.start.is_none() && matches!(self.buf.as_slice(), b"\n" | b"\r\n") {
                continue;
            }
            let start = *partial.start.get_or_insert(self.line);
            let bytes = std::mem::take(&mut self.buf);
            let ended = partial.scan(&bytes, self.delimiter, self.line);
            self.buf = bytes;
            if ended? {
                partial.end_field(start)?;
                return Ok(Some(Record {
                    line: start,
                    fields: partial.fields,
                }));
            }
        }
    }
}

/// A record being read, across the physical lines a quoted field spans.
#[derive(Debug)]
struct Partial {
    fields: Vec<String>,
    field: Vec<u8>,
    state: State,
    /// The line the record starts on, once one has.
    start: Option<u64>,
}

impl Default for Partial {
    fn default() -> Self {
        Partial {
            fields: Vec::new(),
            field: Vec::new(),
            state: State::Start,
            start: None,
        }
    }
}

impl Partial {
    fn end_field(&mut self, line: u64) -> Result<(), CsvError> {
        let field = utf8(std::mem::take(&mut self.field), line)?;
        self.fields.push(field);
        Ok(())
    }

    /// At the end of the text: nothing, or the last record without a line end.
    fn end_of_text(mut self) -> Result<Option<Record>, CsvError> {
        let Some(line) = self.start else {
            return Ok(None);
        };
        if self.state == State::Quoted {
            return Err(CsvError {
                line,
                problem: "a quoted field is not closed before the end of the file".into(),
            });
        }
        self.end_field(line)?;
        Ok(Some(Record {
            line,
            fields: self.fields,
        }))
    }

    /// Reads the physical line `bytes` (number `line`); true when it ended the record (its
    /// last field is then still in `field`).
    fn scan(&mut self, bytes: &[u8], delimiter: u8, line: u64) -> Result<bool, CsvError> {
        let refuse = |problem: &str| CsvError {
            line,
            problem: problem.into(),
        };
        let mut iter = bytes.iter().copied().peekable();
        while let Some(b) = iter.next() {
            let end_of_line = match b {
                b'\n' => true,
                b'\r' if self.state != State::Quoted => {
                    if iter.peek() == Some(&b'\n') || iter.peek().is_none() {
                        iter.next();
                        true
                    } else {
                        return Err(refuse("a carriage return inside an unquoted field"));
                    }
                }
                _ => false,
            };
            if end_of_line && self.state != State::Quoted {
                return Ok(true);
            }
            self.state = match (self.state, b) {
                (State::Start, b'"') => State::Quoted,
                (State::Start | State::Unquoted | State::QuoteInQuoted, d) if d == delimiter => {
                    self.end_field(line)?;
                    State::Start
                }
                (State::Unquoted, b'"') => {
                    return Err(refuse("a quote inside an unquoted field"));
                }
                (State::Start | State::Unquoted, other) => {
                    self.field.push(other);
                    State::Unquoted
                }
                (State::Quoted, b'"') => State::QuoteInQuoted,
                (State::Quoted, other) => {
                    self.field.push(other);
                    State::Quoted
                }
                (State::QuoteInQuoted, b'"') => {
                    self.field.push(b'"');
                    State::Quoted
                }
                (State::QuoteInQuoted, _) => {
                    return Err(refuse("text after the closing quote of a field"));
                }
            };
        }
        Ok(false)
    }
}

fn utf8(bytes: Vec<u8>, line: u64) -> Result<String, CsvError> {
    String::from_utf8(bytes).map_err(|_| CsvError {
        line,
        problem: "a field is not UTF-8 text".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(text: &str, delimiter: u8) -> Result<Vec<Record>, CsvError> {
        let mut reader = RecordReader::new(text.as_bytes(), delimiter);
        let mut out = Vec::new();
        while let Some(record) = reader.next_record().await? {
            out.push(record);
        }
        Ok(out)
    }

    fn rec(line: u64, fields: &[&str]) -> Record {
        Record {
            line,
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn reads_what_pythons_writer_writes() {
        // csv.writer(f, delimiter='|').writerows([...]) with the default CRLF terminator.
        let text = "a|b c||True\r\n\"x|y\"|\"say \"\"hi\"\"\"|\"two\r\nlines\"|\r\n\r\nlast|\"\"|-1|\\x00ff";
        assert_eq!(
            all(text, b'|').await.expect("parses"),
            vec![
                rec(1, &["a", "b c", "", "True"]),
                rec(2, &["x|y", "say \"hi\"", "two\r\nlines", ""]),
                rec(5, &["last", "", "-1", "\\x00ff"]),
            ]
        );
        assert_eq!(
            all("k,\"v\nw\"\nk2,v2\n", b',').await.expect("LF"),
            vec![rec(1, &["k", "v\nw"]), rec(3, &["k2", "v2"])]
        );
        assert_eq!(all("", b'|').await.expect("empty"), vec![]);
        assert_eq!(
            all("\"\"\r\n", b'|').await.expect("one empty"),
            vec![rec(1, &[""])]
        );
    }

    #[tokio::test]
    async fn malformed_text_names_its_line() {
        let err = |text: &'static str| async move { all(text, b'|').await.expect_err(text) };
        assert_eq!(err("a|b\r\nc|\"open\r\nmore\r\n").await.line, 2);
        assert!(
            err("a|b\r\nc|\"open\r\nmore\r\n")
                .await
                .problem
                .contains("not closed")
        );
        let e = err("ok|1\r\nbad|x\"y\r\n").await;
        assert_eq!(
            (e.line, e.problem.as_str()),
            (2, "a quote inside an unquoted field")
        );
        let e = err("ok|1\r\nok|2\r\n\"q\"z|3\r\n").await;
        assert_eq!(
            (e.line, e.problem.as_str()),
            (3, "text after the closing quote of a field")
        );
        assert_eq!(err("a\rb|c\r\n").await.line, 1);
        let mut reader = RecordReader::new(&b"ok\r\n\xff\xfe\r\n"[..], b'|');
        assert!(reader.next_record().await.expect("first").is_some());
        let e = reader.next_record().await.expect_err("not utf-8");
        assert_eq!(
            (e.line, e.problem.as_str()),
            (2, "a field is not UTF-8 text")
        );
    }
}
