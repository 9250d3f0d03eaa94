//! Process signals (SAF-011). SIGTERM (systemd's stop) and SIGINT (`ros2 launch`, Ctrl-C) are
//! blocked in every thread and taken by one `reflex-signals` thread with `sigwait`, so no
//! middleware thread ever sees a syscall interrupted by them (RustDDS 0.15.1 ends its event loop
//! on the first EINTR from `epoll_wait`); the run's threads see [`requested`], the actuator gate
//! sends zero, and the process exits cleanly.
//!
//! SIGSTOP/SIGTSTP cannot be blocked, and on Linux the threads of a stopped-then-continued
//! process get EINTR from `epoll_wait` even without a handler (signal(7)): after a SIGCONT the
//! middleware may be dead. A SIGCONT handler sets [`continued`]; the run then sends zero,
//! latches, and exits with an error, so the service manager restarts Reflex (latched at start)
//! rather than a frozen control process carrying on.
//!
//! A child process inherits the blocked mask across exec: `reflex run` starts none; a future
//! caller that does must unblock SIGTERM/SIGINT in the child (`pre_exec`), or it cannot be
//! stopped with them.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static CONTINUED: AtomicBool = AtomicBool::new(false);
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_continue(_: libc::c_int) {
    CONTINUED.store(true, Ordering::SeqCst);
}

/// Blocks SIGTERM/SIGINT in the calling thread (and so in every thread it starts afterwards:
/// call it first thing in `main`'s command), starts the thread that waits for them, and
/// installs the SIGCONT handler. Idempotent. Errors name the call that failed.
#[allow(unsafe_code)]
pub fn install() -> Result<(), String> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use; the calls only
    // read it. pthread_sigmask affects the calling thread only.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(format!(
                "pthread_sigmask: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        set
    };
    std::thread::Builder::new()
        .name("reflex-signals".into())
        .spawn(move || {
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is a valid, initialised sigset_t owned by this closure; `sig`
                // is a valid out-pointer.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc == 0 && (sig == libc::SIGTERM || sig == libc::SIGINT) {
                    REQUESTED.store(true, Ordering::SeqCst);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    // SAFETY: a zeroed sigaction with an `extern "C"` handler that only stores to an atomic
    // (async-signal-safe); SA_RESTART so the syscalls that can be restarted are.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_continue as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGCONT, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(format!(
            "cannot install the SIGCONT handler: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// True once SIGTERM or SIGINT arrived (after [`install`]).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// True once the process was stopped (SIGSTOP/SIGTSTP) and continued (after [`install`]).
pub fn continued() -> bool {
    CONTINUED.load(Ordering::SeqCst)
}
