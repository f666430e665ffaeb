//! The write path of one backup object, off the async runtime's threads: CSV bytes come in
//! (batched), a blocking thread rewrites them when asked, counts their rows, compresses them
//! with zstd and hashes what is stored, and the store's writer takes the compressed blocks.
//! Bounded queues between the stages keep the memory a table needs independent of its size:
//! a producer faster than the store waits.

use std::borrow::Cow;
use std::io::Write;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ObjectWriter;
use super::stream::{CsvTally, Tap};
use crate::error::{Error, Result};

/// zstd level: level 1 keeps up with COPY on one core; level 3 costs about a third more
/// CPU for objects barely smaller (docs/PERFORMANCE.md, "Backup").
pub const ZSTD_LEVEL: i32 = 1;

const KIB: usize = 1024;

/// How much each stage may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// CSV bytes gathered before they go to the compressing thread.
    pub batch: usize,
    /// Batches waiting for the compressing thread.
    pub queued_batches: usize,
    /// Compressed bytes gathered before they go to the writer.
    pub block: usize,
    /// Compressed blocks waiting for the writer.
    pub queued_blocks: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            batch: 256 * KIB,
            queued_batches: 4,
            block: 512 * KIB,
            queued_blocks: 2,
        }
    }
}

impl Bounds {
    /// The most bytes the pipeline holds, whatever the size of the table: the batch being
    /// filled, the queued ones and the one being compressed; the block being gathered (which
    /// may overshoot by one batch's output), the queued ones and the one being written; and
    /// zstd's own input and output buffers. The writer's own buffer (one S3 part per part in
    /// flight) and a single CSV record longer than a batch come on top.
    pub fn max_held(&self) -> usize {
        let zstd = zstd::zstd_safe::CCtx::in_size() + zstd::zstd_safe::CCtx::out_size();
        (self.queued_batches + 2) * self.batch
            + (self.queued_blocks + 2) * (self.block + self.batch)
            + zstd
    }
}

/// Rewrites CSV on its way to the store (for example, re-encrypting secrets). It runs on the
/// compressing thread.
pub trait Rewrite: Send {
    /// The rewritten bytes of what has arrived (a rewrite may hold back an incomplete record).
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>>;
    /// What was held back, once the input has ended.
    fn finish(&mut self) -> Result<Vec<u8>>;
}

/// What was written: the CSV's rows and bytes (after the rewrite), the stored bytes and their
/// SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub csv_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
}

enum Batch {
    Data(Vec<u8>),
    /// The input is complete; anything else (the input dropped) abandons the object.
    End,
}

/// Starts the compressing thread of one object; `resource` names the object in errors. Run
/// [`CsvInput`]'s feeding and [`CompressedOutput::write_to`] side by side (`try_join!`):
/// when the thread fails, the input waits and the output returns the error.
pub fn start(
    resource: &str,
    rewrite: Option<Box<dyn Rewrite>>,
    bounds: Bounds,
) -> (CsvInput, CompressedOutput) {
    let (batch_tx, batch_rx) = mpsc::channel(bounds.queued_batches.max(1));
    let (block_tx, block_rx) = mpsc::channel(bounds.queued_blocks.max(1));
    let name = resource.to_string();
    let compressor =
        tokio::task::spawn_blocking(move || compress(batch_rx, block_tx, rewrite, bounds, &name));
    (
        CsvInput {
            tx: batch_tx,
            batch: Vec::with_capacity(bounds.batch),
            size: bounds.batch.max(1),
        },
        CompressedOutput {
            rx: block_rx,
            compressor,
            resource: resource.to_string(),
        },
    )
}

/// The CSV side of a pipeline.
pub struct CsvInput {
    tx: mpsc::Sender<Batch>,
    batch: Vec<u8>,
    size: usize,
}

impl CsvInput {
    /// Adds bytes; waits while the compressing thread is a full queue behind. When that thread
    /// has stopped (it failed), this never returns: the output reports the failure.
    pub async fn push(&mut self, chunk: &[u8]) {
        self.batch.extend_from_slice(chunk);
        if self.batch.len() >= self.size {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(self.size));
            self.send(Batch::Data(full)).await;
        }
    }

    /// Ends the input: the compressing thread finishes the object.
    pub async fn finish(mut self) {
        if !self.batch.is_empty() {
            let rest = std::mem::take(&mut self.batch);
            self.send(Batch::Data(rest)).await;
        }
        self.send(Batch::End).await;
    }

    async fn send(&mut self, batch: Batch) {
        if self.tx.send(batch).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The store side of a pipeline.
pub struct CompressedOutput {
    rx: mpsc::Receiver<Vec<u8>>,
    compressor: JoinHandle<Result<Written>>,
    resource: String,
}

impl CompressedOutput {
    /// Writes every compressed block to `writer` until the input has ended; returns what was
    /// written, or the first error of the thread or the writer. The caller finishes (or
    /// aborts) the writer.
    pub async fn write_to(mut self, writer: &mut dyn ObjectWriter) -> Result<Written> {
        while let Some(block) = self.rx.recv().await {
            writer.write(&block).await?;
        }
        match self.compressor.await {
            Ok(result) => result,
            Err(e) => Err(Error::failed("compress", &self.resource, e)),
        }
    }
}

/// The compressing thread: rewrite, count, compress, hash, hand over. Ends with
/// `Interrupted` when either side went away before the input ended.
fn compress(
    mut batches: mpsc::Receiver<Batch>,
    blocks: mpsc::Sender<Vec<u8>>,
    mut rewrite: Option<Box<dyn Rewrite>>,
    bounds: Bounds,
    resource: &str,
) -> Result<Written> {
    let failed = |e: std::io::Error| Error::failed("compress", resource, e);
    let capacity = bounds.block + bounds.batch;
    let mut encoder =
        zstd::stream::Encoder::new(Vec::with_capacity(capacity), ZSTD_LEVEL).map_err(failed)?;
    let mut tally = CsvTally::default();
    let mut hasher = Sha256::new();
    let mut stored_bytes = 0u64;
    let mut hand_over = |block: Vec<u8>| {
        hasher.update(&block);
        stored_bytes += block.len() as u64;
        blocks.blocking_send(block).map_err(|_| Error::Interrupted)
    };
    loop {
        let chunk = match batches.blocking_recv() {
            Some(Batch::Data(chunk)) => chunk,
            Some(Batch::End) => break,
            None => return Err(Error::Interrupted),
        };
        let chunk = match rewrite.as_mut() {
            Some(rewrite) => Cow::Owned(rewrite.feed(&chunk)?),
            None => Cow::Borrowed(chunk.as_slice()),
        };
        tally.see(&chunk);
        encoder.write_all(&chunk).map_err(failed)?;
        if encoder.get_ref().len() >= bounds.block {
            let block = std::mem::replace(encoder.get_mut(), Vec::with_capacity(capacity));
            hand_over(block)?;
        }
    }
    if let Some(rewrite) = rewrite.as_mut() {
        let rest = rewrite.finish()?;
        tally.see(&rest);
        encoder.write_all(&rest).map_err(failed)?;
    }
    let last = encoder.finish().map_err(failed)?;
    hand_over(last)?;
    Ok(Written {
        rows: tally.counter.data_rows(),
        csv_bytes: tally.bytes,
        stored_bytes,
        sha256: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::sync::Semaphore;

    use super::*;

    /// A sink that writes only as far as `permits` lets it, and records what it got.
    struct GatedSink {
        gate: Arc<Semaphore>,
        got: Arc<std::sync::Mutex<Vec<u8>>>,
        written: Arc<AtomicU64>,
    }

    #[async_trait]
    impl ObjectWriter for GatedSink {
        async fn write(&mut self, chunk: &[u8]) -> Result<()> {
            let permit = self
                .gate
                .acquire()
                .await
                .map_err(|e| Error::failed("write", "sink", e))?;
            permit.forget();
            self.written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            if let Ok(mut got) = self.got.lock() {
                got.extend_from_slice(chunk);
            }
            Ok(())
        }
        async fn finish(self: Box<Self>) -> Result<u64> {
            Ok(self.written.load(Ordering::SeqCst))
        }
        async fn abort(self: Box<Self>) -> Result<()> {
            Ok(())
        }
    }

    /// Incompressible bytes (xorshift), so that compressed blocks are as big as the input
    /// they hold.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.extend_from_slice(&state.to_le_bytes());
        }
        out
    }

    fn small_bounds() -> Bounds {
        Bounds {
            batch: 16 * KIB,
            queued_batches: 2,
            block: 64 * KIB,
            queued_blocks: 2,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_sink_stops_the_producer_within_the_bound_and_nothing_is_lost() {
        let bounds = small_bounds();
        let csv = noise(16 << 20); // far beyond the bound
        let gate = Arc::new(Semaphore::new(0));
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut sink = GatedSink {
            gate: gate.clone(),
            got: got.clone(),
            written: Arc::new(AtomicU64::new(0)),
        };
        let (mut input, output) = start("test.csv.zst", None, bounds);
        let accepted = Arc::new(AtomicU64::new(0));
        let counted = accepted.clone();
        let data = csv.clone();
        let producer = tokio::spawn(async move {
            for chunk in data.chunks(4096) {
                input.push(chunk).await;
                counted.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            input.finish().await;
        });
        let writing = tokio::spawn(async move {
            let written = output.write_to(&mut sink).await;
            (written, sink)
        });
        // The sink takes nothing: the producer must stall once the stages are full.
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = accepted.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
        }
        // The sink holds one block in its pending write, the rest is queued or in the thread.
        let held = last as usize;
        assert!(
            held <= bounds.max_held(),
            "{held} bytes accepted with a stalled sink; bound {}",
            bounds.max_held()
        );
        assert!(held < csv.len() / 4, "the producer did not stall: {held}");
        // Let it drain: every byte arrives, counted and hashed.
        gate.add_permits(usize::MAX >> 4);
        producer.await.expect("producer");
        let (written, _sink) = writing.await.expect("writer");
        let written = written.expect("written");
        let stored = got.lock().expect("lock").clone();
        assert_eq!(zstd::decode_all(stored.as_slice()).expect("zstd"), csv);
        let mut rows = crate::store::stream::CsvRecordCounter::default();
        rows.feed(&csv);
        assert_eq!(written.rows, rows.data_rows());
        assert_eq!(written.csv_bytes, csv.len() as u64);
        assert_eq!(written.stored_bytes, stored.len() as u64);
        assert_eq!(written.sha256, hex::encode(Sha256::digest(&stored)));
    }

    struct FailingRewrite;

    impl Rewrite for FailingRewrite {
        fn feed(&mut self, _chunk: &[u8]) -> Result<Vec<u8>> {
            Err(Error::failed("re-encrypt", "variable key=k", "bad token"))
        }
        fn finish(&mut self) -> Result<Vec<u8>> {
            Ok(Vec::new())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_thread_reports_its_error_and_the_producer_stops() {
        let bounds = small_bounds();
        let csv = noise(4 << 20);
        let (mut input, output) = start("variable.csv.zst", Some(Box::new(FailingRewrite)), bounds);
        let mut sink = GatedSink {
            gate: Arc::new(Semaphore::new(usize::MAX >> 4)),
            got: Arc::new(std::sync::Mutex::new(Vec::new())),
            written: Arc::new(AtomicU64::new(0)),
        };
        let produce = async {
            for chunk in csv.chunks(4096) {
                input.push(chunk).await;
            }
            input.finish().await;
            Ok::<(), Error>(())
        };
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::try_join!(produce, output.write_to(&mut sink))
        })
        .await
        .expect("stops at once");
        let err = result.expect_err("the rewrite failed");
        assert!(err.to_string().contains("variable key=k"), "{err}");
    }
}
