//! Builds the service proxy's BPF programs (`ebpf/programs`) for the BPF
//! target, so the loader can embed them: `cargo build` is the only build
//! step and no compiled object is ever committed. Needs the nightly
//! toolchain with `rust-src` and `bpf-linker` (`cargo xtask deps`).

fn main() -> anyhow::Result<()> {
    let programs = aya_build::Package { name: "hawser-ebpf", root_dir: "../ebpf/programs", ..Default::default() };
    aya_build::build_ebpf([programs], aya_build::Toolchain::default())
}
