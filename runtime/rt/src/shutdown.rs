//! SIGTERM / SIGINT (SAF-011): the handler only sets a flag (async-signal-safe); the run's
//! threads see it, the actuator gate sends zero, and the process exits cleanly. systemd stops
//! a unit with SIGTERM, `ros2 launch` with SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGTERM and SIGINT (idempotent). Errors name the signal.
#[allow(unsafe_code)]
pub fn install() -> Result<(), String> {
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        // SAFETY: a zeroed sigaction with an `extern "C"` handler that only stores to an
        // atomic (async-signal-safe); SA_RESTART so interrupted syscalls resume.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(format!(
                "cannot install the {name} handler: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// True once SIGTERM or SIGINT arrived (after [`install`]).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
