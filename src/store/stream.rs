//! Byte-stream plumbing shared by export, import and verify: CSV row counting, hashing and
//! zstd decompression.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

/// Counts CSV records across chunk boundaries: a newline outside quotes ends a record.
#[derive(Debug, Default, Clone)]
pub struct CsvRecordCounter {
    in_quotes: bool,
    records: u64,
    pending: bool,
}

impl CsvRecordCounter {
    pub fn feed(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else {
            return;
        };
        // Jumps from quote to quote and, outside quotes, to the next newline (memchr), instead
        // of looking at every byte.
        let mut at = 0;
        let mut record_ended_last = false;
        while at < chunk.len() {
            let rest = &chunk[at..];
            let found = if self.in_quotes {
                memchr::memchr(b'"', rest)
            } else {
                memchr::memchr2(b'"', b'\n', rest)
            };
            let Some(i) = found else {
                break;
            };
            if rest[i] == b'"' {
                self.in_quotes = !self.in_quotes;
            } else {
                self.records += 1;
                record_ended_last = at + i == chunk.len() - 1;
            }
            at += i + 1;
        }
        self.pending = !(last == b'\n' && record_ended_last);
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

/// Decompresses a zstd stream (one frame or several back to back) as it is read, with the
/// same zstd the backup compresses with. A stream that ends inside a frame is an error, not a
/// short read.
pub struct ZstdReader<R> {
    inner: R,
    decoder: Decoder<'static>,
    /// Inside a frame: more input is needed (or output is pending) before it ends.
    in_frame: bool,
}

impl<R> ZstdReader<R> {
    pub fn new(inner: R) -> std::io::Result<Self> {
        Ok(ZstdReader {
            inner,
            decoder: Decoder::new()?,
            in_frame: false,
        })
    }

    /// The compressed stream underneath, where reading goes on after the decoder's frames.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: AsyncBufRead + Unpin> AsyncRead for ZstdReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let input = ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?;
            let at_end = input.is_empty();
            if at_end && !this.in_frame {
                return Poll::Ready(Ok(()));
            }
            let mut src = InBuffer::around(input);
            let mut dst = OutBuffer::around(buf.initialize_unfilled());
            let hint = this.decoder.run(&mut src, &mut dst)?;
            let (consumed, produced) = (src.pos(), dst.pos());
            this.in_frame = hint != 0;
            Pin::new(&mut this.inner).consume(consumed);
            buf.advance(produced);
            if produced > 0 {
                return Poll::Ready(Ok(()));
            }
            if at_end && this.in_frame {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the zstd stream ends inside a frame (truncated object)",
                )));
            }
            if consumed == 0 && !at_end {
                return Poll::Ready(Err(std::io::Error::other(
                    "the zstd decoder made no progress",
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn decode(bytes: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
        let inner = tokio::io::BufReader::with_capacity(capacity, bytes);
        let mut reader = ZstdReader::new(inner)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn zstd_reader_reads_what_the_encoder_wrote() {
        let csv: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i},row {i}\n").into_bytes())
            .collect();
        let frame = zstd::encode_all(csv.as_slice(), 3).expect("compress");
        for capacity in [1, 7, 4096, 1 << 20] {
            assert_eq!(decode(&frame, capacity).await.expect("decode"), csv);
        }
        // Frames back to back read as their contents back to back.
        let mut two = frame.clone();
        two.extend(zstd::encode_all(&b"tail\n"[..], 1).expect("compress"));
        let mut expected = csv.clone();
        expected.extend_from_slice(b"tail\n");
        assert_eq!(decode(&two, 8192).await.expect("decode"), expected);
        assert_eq!(decode(&[], 8192).await.expect("empty"), b"");
        // Truncated or corrupted objects are errors, not short reads.
        let err = decode(&frame[..frame.len() / 2], 8192)
            .await
            .expect_err("truncated");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(decode(b"not zstd at all", 8192).await.is_err());
    }

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
