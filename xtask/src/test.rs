//! `cargo xtask test`: xtask's own unit tests, then every workspace test with
//! `GUARD_BIN` pointing at a fresh debug build of guard.

use std::ffi::OsString;

use anyhow::{Result, bail};
use clap::Args;

use crate::{build, setup, util};

/// Options of `cargo xtask test`.
#[derive(Debug, Args)]
pub struct Options {
    /// Extra arguments for the test harnesses (e.g. a test name filter),
    /// after `--test-threads=1`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// Printed before and after a test run without root.
const NOT_ROOT_WARNING: &str = "\
************************************************************************
* WARNING: not running as root. Privileged tests (XDP attach, network  *
* namespaces, memcached reflection) will be SKIPPED. Run as root to    *
* actually test guard.                                                 *
************************************************************************";

/// Runs the whole test suite.
pub fn run(opts: &Options) -> Result<()> {
    let root = util::is_root()?;
    if !root {
        if util::in_ci() {
            bail!(
                "CI is set but xtask is not running as root: privileged tests are mandatory in CI"
            );
        }
        eprintln!("{NOT_ROOT_WARNING}");
    }

    setup::run_all()?;
    util::run(util::cargo().args(["test", "-p", "xtask"]))?;
    let bin = build::guard(false)?;
    // Tests share kernel state (interfaces, XDP attachments, namespaces),
    // hence one thread. guard-ebpf only builds for the BPF target (through
    // guard-user's build script), so it is not tested on the host.
    util::run(
        util::cargo()
            .env("GUARD_BIN", &bin)
            .args([
                "test",
                "--workspace",
                "--exclude",
                "xtask",
                "--exclude",
                "guard-ebpf",
                "--",
                "--test-threads=1",
            ])
            .args(&opts.args),
    )?;

    if !root {
        eprintln!("{NOT_ROOT_WARNING}");
    }
    Ok(())
}
