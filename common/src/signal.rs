//! Stopping cleanly on SIGINT, SIGTERM and SIGHUP: a tool that holds
//! temporary files or locks installs the handler, polls [`pending`]
//! between chunks, cleans up, and exits 128+N (130 for SIGINT, 143 for
//! SIGTERM) as the record contract says. A blocked read is interrupted
//! (no `SA_RESTART`) so the poll comes promptly.

use std::sync::atomic::{AtomicI32, Ordering};

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
