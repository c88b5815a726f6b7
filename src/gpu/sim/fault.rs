//! Faults inside a simulated launch: one SIGSEGV / SIGBUS / SIGFPE handler for the process.
//!
//! While an OS thread runs a launch, its thread-local hook names the module's `drpo_sim_fault`,
//! which records the address and leaves the launch through siglongjmp (the jump target and every
//! frame it skips are the module's C++: no Rust frame is unwound). Any other fault goes to the
//! handler that was installed before (Rust's stack-overflow reporter, or the default action).
//! The handler runs on the thread's alternate signal stack (Rust's threads have one; the module
//! adds one where missing), so a fiber's stack overflow is reported too.

use super::build::FaultFn;
use std::cell::Cell;
use std::sync::Once;

thread_local! {
    static HOOK: Cell<Option<FaultFn>> = const { Cell::new(None) };
}

const SIGNALS: [libc::c_int; 3] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE];

struct Previous(std::cell::UnsafeCell<[libc::sigaction; 3]>);
// SAFETY: written once, inside INSTALL's call_once, before the handler that reads it is installed.
unsafe impl Sync for Previous {}
static PREVIOUS: Previous = Previous(std::cell::UnsafeCell::new(unsafe { std::mem::zeroed() }));
static INSTALL: Once = Once::new();

/// Installs the handler (once per process).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        for (k, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: a zeroed sigaction is valid; `handler` has the SA_SIGINFO signature; PREVIOUS
            // is only written here, before the new handler can run.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = handler as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, &mut (*PREVIOUS.0.get())[k]);
            }
        }
    });
}

/// While alive, faults on this OS thread belong to a launch of the module whose hook it holds.
pub(crate) struct Hooked;

impl Hooked {
    pub fn new(hook: FaultFn) -> Hooked {
        HOOK.set(Some(hook));
        Hooked
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        HOOK.set(None);
    }
}

/// x86-64 Linux: bit 1 of the page-fault error code says "write".
fn is_write(sig: libc::c_int, ctx: *mut libc::c_void) -> libc::c_int {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if sig == libc::SIGSEGV && !ctx.is_null() {
        // SAFETY: the kernel passes a ucontext_t as the third argument of an SA_SIGINFO handler.
        let err = unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_ERR as usize] };
        return ((err & 2) != 0) as libc::c_int;
    }
    let _ = (sig, ctx);
    -1
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if let Some(hook) = HOOK.get() {
        // SAFETY: `info` is the kernel's siginfo for this signal; the hook longjmps out of the
        // launch when the fault is its own and returns otherwise.
        unsafe { hook((*info).si_addr() as u64, is_write(sig, ctx), sig) };
    }
    // not a launch's: what would have happened without us
    let k = SIGNALS.iter().position(|&s| s == sig).unwrap_or(0);
    // SAFETY: PREVIOUS[k] was filled by `install` before this handler existed.
    unsafe {
        let prev = &(*PREVIOUS.0.get())[k];
        match prev.sa_sigaction {
            libc::SIG_DFL => {
                // re-raised by the faulting instruction, now with the default action
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
            libc::SIG_IGN => {}
            f if prev.sa_flags & libc::SA_SIGINFO != 0 => {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(f);
                f(sig, info, ctx);
            }
            f => {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(f);
                f(sig);
            }
        }
    }
}
