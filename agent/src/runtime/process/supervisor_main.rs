//! `hawser-pod-supervisor`: the process runtime's pod supervisor as a
//! binary of the agent crate.
//!
//! Production runs the same code as the hidden `hawser pod-supervisor`
//! subcommand; this binary exists so the agent's own tests (which cargo
//! builds it for, fresh, through `CARGO_BIN_EXE_hawser-pod-supervisor`)
//! never run a stale `hawser` from an earlier build. It takes the same
//! arguments, with or without the leading `pod-supervisor`.

use hawser_agent::runtime::process::{SupervisorArgs, run_supervisor};

fn main() {
    let result = SupervisorArgs::parse(std::env::args_os().skip(1)).and_then(run_supervisor);
    if let Err(e) = result {
        eprintln!("hawser-pod-supervisor: {e:#}");
        std::process::exit(1);
    }
}
