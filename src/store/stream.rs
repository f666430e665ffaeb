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

/// Something that watches the bytes passing through a [`TapReader`].
pub trait Tap: Send {
    fn see(&mut self, bytes: &[u8]);
}

/// Byte count and SHA-256 of what passed.
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

impl Tap for Digested {
    fn see(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        self.hasher.update(bytes);
    }
}

/// CSV records and bytes of what passed.
#[derive(Default)]
pub struct CsvTally {
    pub counter: CsvRecordCounter,
    pub bytes: u64,
}

impl Tap for CsvTally {
    fn see(&mut self, bytes: &[u8]) {
        self.counter.feed(bytes);
        self.bytes += bytes.len() as u64;
    }
}

/// Passes bytes through unchanged, showing each read to a shared [`Tap`].
pub struct TapReader<R, T> {
    inner: R,
    tap: Arc<Mutex<T>>,
}

impl<R, T: Tap + Default> TapReader<R, T> {
    /// The reader, and the tap to read its findings from once the stream is consumed.
    pub fn new(inner: R) -> (Self, Arc<Mutex<T>>) {
        let tap = Arc::new(Mutex::new(T::default()));
        (
            TapReader {
                inner,
                tap: tap.clone(),
            },
            tap,
        )
    }
}

impl<R: AsyncRead + Unpin, T: Tap> AsyncRead for TapReader<R, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll
            && let Ok(mut tap) = self.tap.lock()
        {
            tap.see(&buf.filled()[before..]);
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
