//! Byte-stream plumbing shared by export, import and verify: CSV row counting and hashing.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

/// Counts CSV records across chunk boundaries: a newline outside quotes ends a record.
#[derive(Debug, Default, Clone)]
pub struct CsvRecordCounter {
    in_quotes: bool,
    records: u64,
    pending: bool,
}

impl CsvRecordCounter {
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match b {
                b'"' => {
                    self.in_quotes = !self.in_quotes;
                    self.pending = true;
                }
                b'\n' if !self.in_quotes => {
                    self.records += 1;
                    self.pending = false;
                }
                _ => self.pending = true,
            }
        }
    }

    /// Records seen, the header included; a last record without newline counts too.
    pub fn records(&self) -> u64 {
        self.records + u64::from(self.pending)
    }

    /// Data rows: records minus the header.
    pub fn data_rows(&self) -> u64 {
        self.records().saturating_sub(1)
    }
}

/// What a [`HashingReader`] saw: byte count and SHA-256.
#[derive(Default)]
pub struct Digested {
    pub bytes: u64,
    hasher: Sha256,
}

impl Digested {
    pub fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

/// Passes bytes through, hashing and counting them into shared state.
pub struct HashingReader<R> {
    inner: R,
    state: Arc<Mutex<Digested>>,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> (Self, Arc<Mutex<Digested>>) {
        let state = Arc::new(Mutex::new(Digested::default()));
        (
            HashingReader {
                inner,
                state: state.clone(),
            },
            state,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let new = &buf.filled()[before..];
            if let Ok(mut state) = self.state.lock() {
                state.bytes += new.len() as u64;
                state.hasher.update(new);
            }
        }
        poll
    }
}

/// Passes bytes through, counting CSV records into shared state.
pub struct CountingReader<R> {
    inner: R,
    state: Arc<Mutex<(CsvRecordCounter, u64)>>,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R) -> (Self, Arc<Mutex<(CsvRecordCounter, u64)>>) {
        let state = Arc::new(Mutex::new((CsvRecordCounter::default(), 0)));
        (
            CountingReader {
                inner,
                state: state.clone(),
            },
            state,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let new = &buf.filled()[before..];
            if let Ok(mut state) = self.state.lock() {
                state.0.feed(new);
                state.1 += new.len() as u64;
            }
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_records_with_quoted_newlines_across_chunks() {
        let csv = b"id,extra\n1,\"multi\nline\"\n2,\"quote \"\"x\"\"\"\n3,\n";
        for split in 0..csv.len() {
            let mut c = CsvRecordCounter::default();
            c.feed(&csv[..split]);
            c.feed(&csv[split..]);
            assert_eq!(c.data_rows(), 3, "split at {split}");
        }
        let mut empty = CsvRecordCounter::default();
        empty.feed(b"id,extra\n");
        assert_eq!(empty.data_rows(), 0);
    }
}
