//! A one-line progress meter on stderr for long data transfers, shown only
//! when stderr is a terminal (never in a pipe or a log, so records and
//! scripts are unaffected) and the user did not ask for `--quiet`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);

/// Bytes done of a transfer, redrawn in place.
pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    start: Instant,
    last: Instant,
    shown: bool,
    enabled: bool,
}

impl Progress {
    /// A meter for `label` (an image id, a file name), shown when `want`
    /// and stderr is a terminal.
    pub fn new(label: &str, total: Option<u64>, want: bool) -> Progress {
        let now = Instant::now();
        Progress {
            label: label.chars().filter(|c| !c.is_control()).collect(),
            total,
            done: 0,
            start: now,
            last: now,
            shown: false,
            enabled: want && std::io::stderr().is_terminal(),
        }
    }

    /// `n` more bytes.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if !self.enabled || self.last.elapsed() < EVERY {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = crate::size::format_size((self.done as f64 / secs) as u64);
        let line = match self.total {
            Some(t) if t > 0 => format!(
                "{}: {} of {} ({}%), {rate}/s",
                self.label,
                crate::size::format_size(self.done),
                crate::size::format_size(t),
                self.done.saturating_mul(100) / t
            ),
            _ => format!(
                "{}: {}, {rate}/s",
                self.label,
                crate::size::format_size(self.done)
            ),
        };
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K{line}");
        self.shown = true;
    }
}

impl Drop for Progress {
    // The line goes once the transfer ends, whichever way.
    fn drop(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}
