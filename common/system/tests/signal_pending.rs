//! A caught signal stays pending for the rest of the process, so this
//! test has a process of its own: in the library's unit tests it would
//! stop every other test's loops that poll `pending()` (jobs::ordered
//! feeding stopped short under load).
#![cfg(test)]

use system::signal::{exit_code, install, pending};

#[test]
#[allow(unsafe_code)]
fn a_caught_signal_is_pending() {
    install();
    assert_eq!(pending(), None);
    // SAFETY: raising a signal at ourselves; the handler only stores.
    unsafe {
        libc::raise(libc::SIGHUP);
    }
    assert_eq!(pending(), Some(libc::SIGHUP));
    assert_eq!(exit_code(libc::SIGTERM), 143);
}
