//! The write path of one backup object, off the async runtime's threads: CSV bytes come in
//! (batched), a blocking thread rewrites them when asked, counts their rows, compresses each
//! batch into a zstd frame and hashes what is stored, and the store's writer takes the frames.
//! Bounded queues between the stages keep the memory a table needs independent of its size:
//! a producer faster than the store waits.

use std::borrow::Cow;

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
    /// CSV bytes gathered before they go to the compressing thread, which makes each batch
    /// a zstd frame of its own.
    pub batch: usize,
    /// Batches waiting for the compressing thread.
    pub queued_batches: usize,
    /// Compressed frames waiting for the writer.
    pub queued_frames: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            batch: 512 * KIB,
            queued_batches: 2,
            queued_frames: 4,
        }
    }
}

impl Bounds {
    /// The most bytes the pipeline holds, whatever the size of the table: the batch being
    /// filled, the queued ones and the one being compressed; the frame being made, the queued
    /// ones and the one being written (a frame is at most zstd's bound of a batch, usually
    /// a seventh of it). zstd's context (about a megabyte at level 1), the writer's own
    /// buffer (one S3 part per part in flight) and a single CSV record longer than a batch
    /// come on top.
    pub fn max_held(&self) -> usize {
        let frame = zstd::zstd_safe::compress_bound(self.batch);
        (self.queued_batches + 2) * self.batch + (self.queued_frames + 2) * frame
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
    let (frame_tx, frame_rx) = mpsc::channel(bounds.queued_frames.max(1));
    let (spare_tx, spare_rx) = mpsc::channel(bounds.queued_batches + 2);
    let name = resource.to_string();
    let compressor = tokio::task::spawn_blocking(move || {
        let queues = Queues {
            batches: batch_rx,
            frames: frame_tx,
            spare: spare_tx,
        };
        compress(queues, rewrite, bounds, &name)
    });
    (
        CsvInput {
            tx: batch_tx,
            spare: spare_rx,
            batch: Vec::with_capacity(bounds.batch),
            size: bounds.batch.max(1),
        },
        CompressedOutput {
            rx: frame_rx,
            compressor,
            resource: resource.to_string(),
        },
    )
}

/// The CSV side of a pipeline.
pub struct CsvInput {
    tx: mpsc::Sender<Batch>,
    /// Batches the compressing thread is done with, to be filled again: the same few
    /// buffers go round instead of a new one per megabyte.
    spare: mpsc::Receiver<Vec<u8>>,
    batch: Vec<u8>,
    size: usize,
}

impl CsvInput {
    /// Adds bytes; waits while the compressing thread is a full queue behind. When that thread
    /// has stopped (it failed), this never returns: the output reports the failure.
    pub async fn push(&mut self, chunk: &[u8]) {
        // A batch goes before it would outgrow its buffer (only a chunk larger than a whole
        // batch makes a larger one).
        if self.batch.len() + chunk.len() > self.size && !self.batch.is_empty() {
            let next = self
                .spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(self.size));
            let full = std::mem::replace(&mut self.batch, next);
            self.send(Batch::Data(full)).await;
        }
        self.batch.extend_from_slice(chunk);
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
    /// Writes every compressed frame to `writer` until the input has ended; returns what was
    /// written, or the first error of the thread or the writer. The caller finishes (or
    /// aborts) the writer.
    pub async fn write_to(mut self, writer: &mut dyn ObjectWriter) -> Result<Written> {
        while let Some(frame) = self.rx.recv().await {
            writer.write(&frame).await?;
        }
        match self.compressor.await {
            Ok(result) => result,
            Err(e) => Err(Error::failed("compress", &self.resource, e)),
        }
    }
}

/// The compressing thread's ends of the queues.
struct Queues {
    batches: mpsc::Receiver<Batch>,
    frames: mpsc::Sender<Vec<u8>>,
    spare: mpsc::Sender<Vec<u8>>,
}

/// The compressing thread: rewrite, count, compress, hash, hand over. Ends with
/// `Interrupted` when either side went away before the input ended.
fn compress(
    queues: Queues,
    mut rewrite: Option<Box<dyn Rewrite>>,
    bounds: Bounds,
    resource: &str,
) -> Result<Written> {
    let failed = |e: std::io::Error| Error::failed("compress", resource, e);
    let mut encoder = FrameEncoder::new(bounds).map_err(failed)?;
    let mut tally = CsvTally::default();
    let Queues {
        mut batches,
        frames,
        spare,
    } = queues;
    let hand_over = |frame: Vec<u8>| frames.blocking_send(frame).map_err(|_| Error::Interrupted);
    loop {
        let mut batch = match batches.blocking_recv() {
            Some(Batch::Data(batch)) => batch,
            Some(Batch::End) => break,
            None => return Err(Error::Interrupted),
        };
        let chunk = match rewrite.as_mut() {
            Some(rewrite) => Cow::Owned(rewrite.feed(&batch)?),
            None => Cow::Borrowed(batch.as_slice()),
        };
        tally.see(&chunk);
        if !chunk.is_empty() {
            hand_over(encoder.frame(&chunk).map_err(failed)?)?;
        }
        drop(chunk);
        batch.clear();
        // The input may have ended and gone: the buffer is then simply freed.
        let _ = spare.try_send(batch);
    }
    if let Some(rewrite) = rewrite.as_mut() {
        let rest = rewrite.finish()?;
        tally.see(&rest);
        if !rest.is_empty() {
            hand_over(encoder.frame(&rest).map_err(failed)?)?;
        }
    }
    if encoder.frames == 0 {
        // Nothing came: an empty frame, so that the object is still zstd.
        hand_over(encoder.frame(&[]).map_err(failed)?)?;
    }
    Ok(Written {
        rows: tally.counter.data_rows(),
        csv_bytes: tally.bytes,
        stored_bytes: encoder.stored_bytes,
        sha256: hex::encode(encoder.hasher.finalize()),
    })
}

/// Compresses each batch into a zstd frame of its own and hashes the frames. Independent
/// frames of half a megabyte cost about 1 % in size against one frame for the whole object
/// (`zstd -b1 -B512K` on task_instance's CSV), and are compressed from the batch in place: a streaming encoder copies its input into a
/// window that wraps around and compresses the wrapped parts on zstd's slower path
/// (docs/PERFORMANCE.md, "Backup"). Frames back to back are one zstd stream to every
/// reader (`zstd -dc` included).
struct FrameEncoder {
    compressor: zstd::bulk::Compressor<'static>,
    /// Room for the largest frame of a batch, reused; each frame leaves in a copy of its
    /// own size.
    scratch: Vec<u8>,
    frames: u64,
    hasher: Sha256,
    stored_bytes: u64,
}

impl FrameEncoder {
    fn new(bounds: Bounds) -> std::io::Result<Self> {
        Ok(FrameEncoder {
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            scratch: Vec::with_capacity(zstd::zstd_safe::compress_bound(bounds.batch)),
            frames: 0,
            hasher: Sha256::new(),
            stored_bytes: 0,
        })
    }

    fn frame(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        self.compressor
            .compress_to_buffer(data, &mut self.scratch)?;
        self.frames += 1;
        self.hasher.update(&self.scratch);
        self.stored_bytes += self.scratch.len() as u64;
        Ok(self.scratch.clone())
    }
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
            queued_frames: 2,
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

    /// Runs `csv` through a pipeline, pushed in chunks of `chunk` bytes; the stored bytes.
    async fn stored(csv: &[u8], chunk: usize, bounds: Bounds) -> (Vec<u8>, Written) {
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut sink = GatedSink {
            gate: Arc::new(Semaphore::new(usize::MAX >> 4)),
            got: got.clone(),
            written: Arc::new(AtomicU64::new(0)),
        };
        let (mut input, output) = start("t.csv.zst", None, bounds);
        let produce = async {
            for piece in csv.chunks(chunk.max(1)) {
                input.push(piece).await;
            }
            input.finish().await;
            Ok::<(), Error>(())
        };
        let ((), written) =
            tokio::try_join!(produce, output.write_to(&mut sink)).expect("pipeline");
        let stored = got.lock().expect("lock").clone();
        (stored, written)
    }

    /// The decompressed sizes of the frames of `stored`, in order.
    fn frame_sizes(mut stored: &[u8]) -> Vec<u64> {
        let mut sizes = Vec::new();
        while !stored.is_empty() {
            let len = zstd::zstd_safe::find_frame_compressed_size(stored).expect("a frame");
            let size = zstd::zstd_safe::get_frame_content_size(&stored[..len])
                .expect("a frame header")
                .expect("content size in the header");
            sizes.push(size);
            stored = &stored[len..];
        }
        sizes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_object_is_independent_frames_of_at_most_a_batch_each() {
        let bounds = small_bounds();
        let csv: Vec<u8> = (0..20_000)
            .flat_map(|n| format!("{n},dag_{},\"run, {n}\"\n", n % 7).into_bytes())
            .collect();
        let (stored, written) = stored(&csv, 1000, bounds).await;
        let sizes = frame_sizes(&stored);
        assert!(sizes.len() > 10, "{} frames", sizes.len());
        assert!(
            sizes.iter().all(|&size| size <= bounds.batch as u64),
            "a frame holds more than a batch: {sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<u64>(), csv.len() as u64);
        assert_eq!(zstd::decode_all(stored.as_slice()).expect("zstd"), csv);
        assert_eq!(written.rows, 19_999);
        assert_eq!(written.stored_bytes, stored.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_input_still_makes_a_zstd_object() {
        let (stored, written) = stored(b"", 1, small_bounds()).await;
        assert_eq!(frame_sizes(&stored), vec![0]);
        assert_eq!(zstd::decode_all(stored.as_slice()).expect("zstd"), b"");
        assert_eq!((written.rows, written.csv_bytes), (0, 0));
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
