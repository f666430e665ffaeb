//! Progress on stderr: a live line on a terminal, nothing otherwise (logs and pipes stay clean).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// One line on stderr, redrawn at most ten times a second.
pub struct TerminalLine {
    verb: &'static str,
    state: Mutex<LineState>,
}

struct LineState {
    done: usize,
    total: usize,
    bytes: u64,
    current: Vec<String>,
    drawn: Option<Instant>,
    started: Instant,
}

impl TerminalLine {
    pub fn new(verb: &'static str) -> Self {
        TerminalLine {
            verb,
            state: Mutex::new(LineState {
                done: 0,
                total: 0,
                bytes: 0,
                current: Vec::new(),
                drawn: None,
                started: Instant::now(),
            }),
        }
    }

    fn draw(&self, state: &mut LineState, force: bool) {
        if !force
            && state
                .drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        state.drawn = Some(Instant::now());
        let secs = state.started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "{} [{}/{}] {}  {} ({}/s)",
            self.verb,
            state.done,
            state.total,
            state.current.join(", "),
            crate::output::bytes(state.bytes),
            crate::output::bytes((state.bytes as f64 / secs) as u64)
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{line}");
        let _ = err.flush();
    }
}

impl Progress for TerminalLine {
    fn start(&self, table: &str, _index: usize, total: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.total = total;
            s.current.push(table.to_string());
            self.draw(&mut s, true);
        }
    }

    fn advance(&self, _table: &str, bytes: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.bytes += bytes;
            self.draw(&mut s, false);
        }
    }

    fn finish(&self, table: &str, _rows: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.done += 1;
            s.current.retain(|t| t != table);
            self.draw(&mut s, true);
        }
    }

    fn clear(&self) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}

/// A live line when stderr is a terminal and the user did not ask for quiet or JSON.
pub fn for_terminal(verb: &'static str, quiet: bool) -> Box<dyn Progress> {
    if !quiet && std::io::stderr().is_terminal() {
        Box::new(TerminalLine::new(verb))
    } else {
        Box::new(Silent)
    }
}
