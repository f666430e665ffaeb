//! Progress on stderr: a bar on a terminal, nothing otherwise (logs and pipes stay clean); log
//! lines written while a bar is shown go above it instead of through it.

use std::io::{IsTerminal, Write};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

/// Receives progress of a multi-table operation. Implementations must be cheap: `advance` is
/// called for every chunk.
pub trait Progress: Send + Sync {
    /// A table starts (`index` of `total`).
    fn start(&self, table: &str, index: usize, total: usize);
    /// `bytes` more bytes of `table` went through.
    fn advance(&self, table: &str, bytes: u64);
    /// `table` is done with `rows` rows.
    fn finish(&self, table: &str, rows: u64);
    /// The operation is over: clear whatever is on screen.
    fn clear(&self);
}

/// Prints nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: usize, _: usize) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, _: &str, _: u64) {}
    fn clear(&self) {}
}

/// Every bar of the process, on stderr. One set for all, so that the log writer knows what to
/// hide before it prints. Hidden by indicatif itself when stderr is not a terminal.
static BARS: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// A bar on stderr: `backup [3/41] 120.5 MiB (8.2 MiB/s) 00:00:14 task_instance, xcom`.
pub struct TerminalBar {
    verb: &'static str,
    bars: MultiProgress,
    bar: ProgressBar,
    state: Mutex<BarState>,
}

struct BarState {
    done: usize,
    total: usize,
    current: Vec<String>,
}

impl TerminalBar {
    pub fn new(verb: &'static str) -> Self {
        Self::in_bars(verb, BARS.clone())
    }

    fn in_bars(verb: &'static str, bars: MultiProgress) -> Self {
        let style = ProgressStyle::with_template(
            "{spinner} {prefix} {binary_bytes} ({binary_bytes_per_sec}) {elapsed} {wide_msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = bars.add(ProgressBar::no_length().with_style(style));
        bar.set_prefix(format!("{verb} [0/0]"));
        // Keeps the elapsed time moving while one large table streams without a new chunk.
        bar.enable_steady_tick(Duration::from_millis(200));
        TerminalBar {
            verb,
            bars,
            bar,
            state: Mutex::new(BarState {
                done: 0,
                total: 0,
                current: Vec::new(),
            }),
        }
    }

    fn show(&self, state: &BarState) {
        self.bar
            .set_prefix(format!("{} [{}/{}]", self.verb, state.done, state.total));
        self.bar.set_message(state.current.join(", "));
    }
}

impl Progress for TerminalBar {
    fn start(&self, table: &str, _index: usize, total: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.total = total;
            s.current.push(table.to_string());
            self.show(&s);
        }
    }

    fn advance(&self, _table: &str, bytes: u64) {
        // Atomic, and drawn at most 20 times a second by indicatif.
        self.bar.inc(bytes);
    }

    fn finish(&self, table: &str, _rows: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.done += 1;
            s.current.retain(|t| t != table);
            self.show(&s);
        }
    }

    fn clear(&self) {
        self.bar.finish_and_clear();
        self.bars.remove(&self.bar);
    }
}

impl Drop for TerminalBar {
    /// A run that fails before `clear` must not leave a stale bar above its error message.
    fn drop(&mut self) {
        self.clear();
    }
}

/// A bar when stderr is a terminal and the user did not ask for quiet or JSON.
pub fn for_terminal(verb: &'static str, quiet: bool) -> Box<dyn Progress> {
    choose(verb, quiet, std::io::stderr().is_terminal(), &BARS)
}

fn choose(
    verb: &'static str,
    quiet: bool,
    terminal: bool,
    bars: &MultiProgress,
) -> Box<dyn Progress> {
    if quiet || !terminal {
        Box::new(Silent)
    } else {
        Box::new(TerminalBar::in_bars(verb, bars.clone()))
    }
}

/// The log destination: stderr, with the bars hidden while a line is printed and redrawn
/// below it. Without this a warning during a backup lands in the middle of the bar's line.
#[derive(Clone)]
pub struct LogWriter<S = fn() -> std::io::Stderr> {
    bars: MultiProgress,
    sink: S,
}

impl LogWriter {
    pub fn stderr() -> Self {
        LogWriter {
            bars: BARS.clone(),
            sink: std::io::stderr,
        }
    }
}

impl<'a, S, W> MakeWriter<'a> for LogWriter<S>
where
    S: Fn() -> W + 'a,
    W: Write,
{
    type Writer = SuspendedLine<W>;

    fn make_writer(&'a self) -> Self::Writer {
        SuspendedLine {
            bars: self.bars.clone(),
            sink: (self.sink)(),
            buf: Vec::new(),
        }
    }
}

/// One log event, buffered whole and written in one go while the bars are hidden, so that
/// neither a bar redraw nor another thread's line can split it.
pub struct SuspendedLine<W: Write> {
    bars: MultiProgress,
    sink: W,
    buf: Vec<u8>,
}

impl<W: Write> SuspendedLine<W> {
    fn emit(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let sink = &mut self.sink;
        self.bars.suspend(|| {
            sink.write_all(&buf)?;
            sink.flush()
        })
    }
}

impl<W: Write> Write for SuspendedLine<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.emit()
    }
}

impl<W: Write> Drop for SuspendedLine<W> {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use indicatif::TermLike;

    use super::*;

    /// A terminal that records what is done to it, in order.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn push(&self, event: String) -> std::io::Result<()> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .push(event);
            Ok(())
        }

        fn events(&self) -> Vec<String> {
            self.0.lock().map(|e| e.clone()).unwrap_or_default()
        }

        fn bars(&self) -> MultiProgress {
            MultiProgress::with_draw_target(ProgressDrawTarget::term_like(Box::new(self.clone())))
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("up {n}"))
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("down {n}"))
        }
        fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("right {n}"))
        }
        fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
            self.push(format!("left {n}"))
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("draw {s}"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(format!("draw {s}"))
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.push("clear".into())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the log writer writes to: the same screen, as plain text.
    struct Sink(Screen);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .push(format!("log {}", String::from_utf8_lossy(bytes)))?;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_goes_above_the_bar_not_through_it() {
        let screen = Screen::default();
        let bars = screen.bars();
        let bar = bars.add(ProgressBar::new(10));
        bar.set_style(ProgressStyle::with_template("BAR {pos}").expect("template"));
        bar.set_position(3);
        let writer = LogWriter {
            bars: bars.clone(),
            sink: {
                let screen = screen.clone();
                move || Sink(screen.clone())
            },
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("the store is slow");
        });

        let events = screen.events();
        let log = events
            .iter()
            .position(|e| e.starts_with("log ") && e.contains("the store is slow"))
            .unwrap_or_else(|| panic!("no log line: {events:?}"));
        let drawn_before = events[..log]
            .iter()
            .rposition(|e| e.contains("BAR 3"))
            .unwrap_or_else(|| panic!("the bar was not shown before the log line: {events:?}"));
        assert!(
            events[drawn_before..log].iter().any(|e| e == "clear"),
            "the bar was not cleared before the log line: {events:?}"
        );
        assert!(
            events[log + 1..].iter().any(|e| e.contains("BAR 3")),
            "the bar was not drawn again below the log line: {events:?}"
        );
        assert_eq!(
            events.iter().filter(|e| e.starts_with("log ")).count(),
            1,
            "one event, one write: {events:?}"
        );
    }

    fn exercise(progress: &dyn Progress) {
        progress.start("dag", 1, 2);
        progress.advance("dag", 4096);
        progress.finish("dag", 10);
        progress.start("xcom", 2, 2);
        progress.advance("xcom", 4096);
    }

    #[test]
    fn no_bar_when_stderr_is_not_a_terminal_or_quiet() {
        for (quiet, terminal) in [(false, false), (true, true), (true, false)] {
            let screen = Screen::default();
            let progress = choose("backup", quiet, terminal, &screen.bars());
            exercise(progress.as_ref());
            progress.clear();
            drop(progress);
            assert_eq!(
                screen.events(),
                Vec::<String>::new(),
                "quiet={quiet} terminal={terminal}"
            );
        }
    }

    #[test]
    fn a_terminal_shows_tables_done_and_current_then_clears() {
        let screen = Screen::default();
        let progress = choose("backup", false, true, &screen.bars());
        exercise(progress.as_ref());
        let shown = screen.events();
        assert!(
            shown
                .iter()
                .any(|e| e.contains("backup [1/2]") && e.contains("xcom")),
            "{shown:?}"
        );
        progress.clear();
        let after = screen.events();
        let last_drawn = after
            .iter()
            .rposition(|e| e.contains("backup ["))
            .unwrap_or_else(|| panic!("never drawn: {after:?}"));
        assert!(
            after[last_drawn..].iter().any(|e| e == "clear"),
            "the bar is left on screen: {after:?}"
        );
    }
}
