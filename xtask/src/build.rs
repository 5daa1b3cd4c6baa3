//! `cargo xtask build`: builds the `guard` binary (which embeds the eBPF
//! object, built by guard-user's build script).

use std::path::PathBuf;

use anyhow::{Result, ensure};
use clap::Args;

use crate::{setup, util};

/// Options of `cargo xtask build`.
#[derive(Debug, Args)]
pub struct Options {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

/// Runs setup, builds guard and prints the binary's path.
pub fn run(opts: &Options) -> Result<()> {
    setup::run_all()?;
    let bin = guard(opts.release)?;
    println!("{}", bin.display());
    Ok(())
}

/// Builds guard-user (setup must have run) and returns the absolute path of
/// the `guard` binary.
pub fn guard(release: bool) -> Result<PathBuf> {
    let mut cargo = util::cargo();
    cargo.args(["build", "-p", "guard-user"]);
    if release {
        cargo.arg("--release");
    }
    util::run(&mut cargo)?;
    let bin = util::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("guard");
    ensure!(
        bin.is_file(),
        "cargo built guard-user but {} does not exist",
        bin.display()
    );
    Ok(bin)
}
