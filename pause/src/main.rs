//! `hawser-pause`: the process of a docker-runtime sandbox (the pod's
//! *pause* container). It holds the pod's network and IPC namespaces by
//! staying alive, and does nothing else: it parks until SIGTERM or SIGINT,
//! then exits 0.
//!
//! It is PID 1 of a PID namespace of its own (every container of the pod
//! has its own PID namespace), so it has no children to reap. As PID 1 it
//! gets only the signals it handles (the kernel drops the others, SIGKILL
//! aside), hence the handlers.
//!
//! std only, no dependencies, one file: it is built statically
//! (`rustc -C target-feature=+crt-static src/main.rs`) to go alone into a
//! `FROM scratch` image, which `hawser agent --runtime docker
//! --pause-binary PATH` builds when the engine lacks `--pause-image`. The
//! two libc functions it needs come from the C library std links anyway.

use std::os::raw::c_int;

const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;

unsafe extern "C" {
    /// `signal(2)`: glibc's and musl's give BSD semantics (the handler stays).
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    /// `pause(2)`: sleeps until a handled signal arrives.
    fn pause() -> c_int;
    /// `_exit(2)`, async-signal-safe.
    fn _exit(status: c_int) -> !;
}

extern "C" fn stop(_: c_int) {
    // SAFETY: `_exit` is async-signal-safe; nothing needs flushing.
    unsafe { _exit(0) }
}

fn main() {
    if std::env::args().nth(1).is_some_and(|a| a == "--version") {
        println!("hawser-pause {}", option_env!("CARGO_PKG_VERSION").unwrap_or("(built outside cargo)"));
        return;
    }
    for signum in [SIGINT, SIGTERM] {
        // SAFETY: installs a handler that only calls an async-signal-safe function.
        unsafe { signal(signum, stop) };
    }
    loop {
        // SAFETY: no preconditions; returns after each handled signal.
        unsafe { pause() };
    }
}
