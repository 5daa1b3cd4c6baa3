//! `cargo xtask demo`: builds guard and runs the `guard-demo` binary of
//! guard-tests, passing extra arguments through.

use std::ffi::OsString;

use anyhow::Result;
use clap::Args;

use crate::{build, setup, util};

/// Options of `cargo xtask demo`.
#[derive(Debug, Args)]
pub struct Options {
    /// Arguments passed through to guard-demo.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// Runs setup, builds guard, then `cargo run -p guard-tests --bin guard-demo`.
pub fn run(opts: &Options) -> Result<()> {
    setup::run_all()?;
    let bin = build::guard(false)?;
    util::run(
        util::cargo()
            .env("GUARD_BIN", &bin)
            .args(["run", "-p", "guard-tests", "--bin", "guard-demo", "--"])
            .args(&opts.args),
    )
}
