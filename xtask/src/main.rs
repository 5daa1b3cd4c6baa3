//! `cargo xtask`: setup, build, test and demo automation for guard.
//!
//! Deliberately depends on nothing from the workspace: it must build on a
//! machine where the eBPF toolchain is not installed yet (that is what
//! `cargo xtask setup` is for).

mod bench;
mod build;
mod demo;
mod elf;
mod setup;
mod test;
mod util;
mod verify;
mod vm;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Command line of `cargo xtask`.
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Setup, build, test and demo automation for guard",
    disable_version_flag = true
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Install what building and testing need (nightly rust-src, bpf-linker,
    /// Debian packages); idempotent.
    Setup,
    /// Run setup, then build guard (target/{debug,release}/guard).
    Build(build::Options),
    /// Run setup, build guard, then run all tests (privileged ones need root).
    Test(test::Options),
    /// Run setup, build guard, then run the guard-demo binary.
    Demo(demo::Options),
    /// Long checks: the differential test at a million frames, and the fuzzers.
    Verify(verify::Options),
    /// Run the BPF_PROG_TEST_RUN suite on the host kernel and on Debian 12's kernel under
    /// qemu; report results and verifier instruction counts.
    VmTest(vm::Options),
    Bench(bench::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match &cli.command {
        Command::Setup => setup::run_all(),
        Command::Build(opts) => build::run(opts),
        Command::Test(opts) => test::run(opts),
        Command::Demo(opts) => demo::run(opts),
        Command::VmTest(opts) => vm::run(opts),
        Command::Verify(opts) => verify::run(opts),
        Command::Bench(opts) => bench::run(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            // Exit with a failed child's own code (e.g. 101 from cargo test).
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<util::CommandFailed>())
                .map_or(1, util::CommandFailed::exit_code);
            ExitCode::from(code)
        }
    }
}
