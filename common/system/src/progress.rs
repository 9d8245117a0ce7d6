//! A one-line progress meter on stderr for long work (bytes of a transfer,
//! or things done, such as images audited), shown only when stderr is a
//! terminal (never in a pipe or a log, so records and scripts are
//! unaffected) and the user did not ask for `--quiet`.
//!
//! The line is redrawn in place at most every 250 ms; between redraws a
//! meter costs a counter. Whoever writes a message to stderr calls
//! [`clear`] first, so the message never lands after a half line; the
//! meter draws again at its next redraw.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(250);

/// Whether a meter's line is on the terminal now (one process, one line).
static ON_SCREEN: AtomicBool = AtomicBool::new(false);

/// Erase the meter's line, if one is drawn: call before writing a message
/// to stderr. Costs an atomic load when nothing is drawn.
pub fn clear() {
    if ON_SCREEN.load(Ordering::Relaxed) && ON_SCREEN.swap(false, Ordering::Relaxed) {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
    }
}

/// What a meter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Bytes, shown with binary prefixes.
    Bytes,
    /// Things, named by this plural noun ("images").
    Count(&'static str),
}

/// Work done, redrawn in place.
pub struct Progress {
    label: String,
    unit: Unit,
    total: Option<u64>,
    done: u64,
    start: Instant,
    last: Instant,
    enabled: bool,
}

impl Progress {
    /// A meter of bytes for `label` (an image id, a file name), shown when
    /// `want` and stderr is a terminal.
    pub fn new(label: &str, total: Option<u64>, want: bool) -> Progress {
        Self::with_unit(label, Unit::Bytes, total, want)
    }

    /// A meter of things counted (`noun`, plural: "images"), shown when
    /// `want` and stderr is a terminal.
    pub fn count(label: &str, noun: &'static str, total: Option<u64>, want: bool) -> Progress {
        Self::with_unit(label, Unit::Count(noun), total, want)
    }

    /// A meter that never draws (to pass where one is expected).
    pub fn off() -> Progress {
        Self::with_unit("", Unit::Bytes, None, false)
    }

    fn with_unit(label: &str, unit: Unit, total: Option<u64>, want: bool) -> Progress {
        let now = Instant::now();
        Progress {
            label: label.chars().filter(|c| !c.is_control()).collect(),
            unit,
            total,
            done: 0,
            start: now,
            last: now,
            enabled: want && std::io::stderr().is_terminal(),
        }
    }

    /// Whether this meter draws at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Learn (or correct) the total once it is known.
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// What was counted so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// `n` more bytes (or things).
    pub fn add(&mut self, n: u64) {
        self.done = self.done.saturating_add(n);
        if !self.enabled || self.last.elapsed() < EVERY {
            return;
        }
        self.last = Instant::now();
        let line = self.render(self.start.elapsed());
        let _ = write!(std::io::stderr().lock(), "\r\x1b[K{line}");
        ON_SCREEN.store(true, Ordering::Relaxed);
    }

    /// The line for the state after `elapsed`: `label: DONE of TOTAL (P%),
    /// RATE/s, M:SS left`, or without a total `label: DONE, RATE/s`.
    fn render(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let amount = |n: u64| match self.unit {
            Unit::Bytes => crate::size::format_size(n),
            Unit::Count(_) => n.to_string(),
        };
        let rate = match self.unit {
            Unit::Bytes => format!("{}/s", crate::size::format_size(rate as u64)),
            Unit::Count(_) if rate < 10.0 => format!("{rate:.1}/s"),
            Unit::Count(_) => format!("{}/s", rate as u64),
        };
        let noun = match self.unit {
            Unit::Bytes => String::new(),
            Unit::Count(n) => format!(" {n}"),
        };
        match self.total {
            Some(t) if t > 0 => {
                let pct = u128::from(self.done.min(t)) * 100 / u128::from(t);
                let left = if self.done == 0 {
                    String::new()
                } else {
                    let rest = t.saturating_sub(self.done) as f64 * secs / self.done as f64;
                    format!(", {} left", clock(rest))
                };
                format!(
                    "{}: {} of {}{noun} ({pct}%), {rate}{left}",
                    self.label,
                    amount(self.done),
                    amount(t),
                )
            }
            _ => format!("{}: {}{noun}, {rate}", self.label, amount(self.done)),
        }
    }
}

/// Seconds as `M:SS`, or `H:MM:SS` from an hour.
fn clock(secs: f64) -> String {
    let s = secs.round().min(u32::MAX as f64) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

impl Drop for Progress {
    // The line goes once the work ends, whichever way.
    fn drop(&mut self) {
        if self.enabled {
            clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(unit: Unit, total: Option<u64>, done: u64) -> Progress {
        let mut p = Progress::with_unit("disk\x1b[2J.vhd", unit, total, false);
        p.add(done);
        p
    }

    #[test]
    fn bytes_with_a_total_show_share_rate_and_time_left() {
        let p = meter(Unit::Bytes, Some(4 << 30), 1 << 30);
        assert_eq!(
            p.render(Duration::from_secs(10)),
            "disk[2J.vhd: 1 GiB of 4 GiB (25%), 102.4 MiB/s, 0:30 left"
        );
    }

    #[test]
    fn bytes_without_a_total_show_done_and_rate() {
        let p = meter(Unit::Bytes, None, 3 << 20);
        assert_eq!(
            p.render(Duration::from_secs(2)),
            "disk[2J.vhd: 3 MiB, 1.5 MiB/s"
        );
    }

    #[test]
    fn counts_show_the_noun_and_hours_left() {
        let p = meter(Unit::Count("images"), Some(10_000), 10);
        assert_eq!(
            p.render(Duration::from_secs(5)),
            "disk[2J.vhd: 10 of 10000 images (0%), 2.0/s, 1:23:15 left"
        );
        let p = meter(Unit::Count("images"), None, 1200);
        assert_eq!(
            p.render(Duration::from_secs(10)),
            "disk[2J.vhd: 1200 images, 120/s"
        );
    }

    #[test]
    fn nothing_done_yet_or_past_the_total() {
        let p = meter(Unit::Bytes, Some(100), 0);
        assert_eq!(
            p.render(Duration::ZERO),
            "disk[2J.vhd: 0 B of 100 B (0%), 0 B/s"
        );
        let p = meter(Unit::Bytes, Some(100), 150);
        assert_eq!(
            p.render(Duration::from_secs(1)),
            "disk[2J.vhd: 150 B of 100 B (100%), 150 B/s, 0:00 left"
        );
    }

    #[test]
    fn a_meter_not_wanted_never_draws() {
        let mut p = Progress::new("x", Some(1), false);
        assert!(!p.enabled());
        p.add(1);
        assert_eq!(p.done(), 1);
        assert!(!Progress::off().enabled());
    }
}
