//! Stopping cleanly on SIGINT, SIGTERM and SIGHUP: a tool that holds
//! temporary files or locks installs the handler, polls [`pending`]
//! between chunks, cleans up, and exits 128+N (130 for SIGINT, 143 for
//! SIGTERM) as the record contract says. A blocked read is interrupted
//! (no `SA_RESTART`) so the poll comes promptly.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// How long a tool has, after a signal, to stop by itself before the
/// watchdog ends it: the contract is "within a second of SIGINT/SIGTERM,
/// wherever it is".
pub const GRACE: Duration = Duration::from_millis(700);

/// Temporary files being written (by `crate::atomic`), removed by the
/// watchdog if it has to end the process itself.
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    PENDING.store(sig, Ordering::SeqCst);
}

/// Catch SIGINT, SIGTERM and SIGHUP from now on.
#[allow(unsafe_code)]
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an
        // atomic; sa_flags 0 (no SA_RESTART) so blocking reads see EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Catch the signals (as [`install`]) and start the watchdog: once a
/// signal has been pending for [`GRACE`] without the tool having stopped
/// (a blocking call that no poll reaches, a child that does not die), it
/// removes the temporary files still registered and exits 128+N itself.
/// `last_words` says why on stderr before it exits. Every tool runs under
/// it (the filter layer's `cli::main`).
pub fn install_with_watchdog(last_words: fn(i32)) {
    install();
    let spawned = std::thread::Builder::new()
        .name("signal-watchdog".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(25));
                if let Some(sig) = pending() {
                    std::thread::sleep(GRACE);
                    give_up(sig, last_words);
                }
            }
        });
    // Without a thread the tools still poll; only the backstop is lost.
    drop(spawned);
}

#[allow(unsafe_code)]
fn give_up(sig: i32, last_words: fn(i32)) -> ! {
    if let Ok(temps) = TEMPS.lock() {
        for t in temps.iter() {
            let _ = std::fs::remove_file(t);
        }
    }
    last_words(sig);
    // SAFETY: _exit ends the process at once; no Rust state is used after.
    unsafe { libc::_exit(i32::from(exit_code(sig))) }
}

/// Register a temporary file for the watchdog to remove.
pub fn track_temp(path: &Path) {
    if let Ok(mut t) = TEMPS.lock() {
        t.push(path.to_owned());
    }
}

/// Forget a temporary file (committed, kept or removed).
pub fn untrack_temp(path: &Path) {
    if let Ok(mut t) = TEMPS.lock()
        && let Some(i) = t.iter().rposition(|p| p == path)
    {
        t.swap_remove(i);
    }
}

/// The signal received, if any.
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `Err(Interrupted)` once a signal is pending: for loops that write, to
/// stop at the next chunk and let the error unwind their cleanup.
pub fn check() -> std::io::Result<()> {
    match pending() {
        None => Ok(()),
        Some(sig) => Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            format!("stopped by signal {sig}"),
        )),
    }
}

/// The exit status for dying by `sig`, after cleaning up.
pub fn exit_code(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(255)
}
