//! SIGTERM and SIGINT, turned into a flag the program checks.
//!
//! A small thread waits for the signals (signal-hook's iterator, so no code
//! runs in the signal handler itself), sets the flag and wakes the event
//! loop. A second signal while the first is being handled ends the process
//! at once, as a user pressing Ctrl-C twice expects.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use log::warn;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Starts watching SIGTERM and SIGINT. `on_first` runs once, on the
/// watcher thread, after the flag is set (e.g. to wake a reactor).
pub fn watch(on_first: impl Fn() + Send + 'static) -> io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let seen = Arc::clone(&flag);
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if seen.swap(true, Ordering::SeqCst) {
                    warn!("second signal {signal}: exiting now");
                    std::process::exit(130);
                }
                on_first();
            }
        })?;
    Ok(flag)
}
