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
    let tally = run_counting(
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
    );
    // One closing line for the whole run (cargo's last line is only its last binary's).
    println!(
        "tests: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    tally.status?;

    if !root {
        eprintln!("{NOT_ROOT_WARNING}");
    }
    Ok(())
}

/// Test counts summed over every `test result:` line of a cargo test run.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
    status: Result<()>,
}

/// Adds the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
fn count_line(line: &str, counts: &mut Counts) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split([';', '.']) {
        let mut words = part.split_whitespace();
        if let (Some(n), Some(what)) = (words.next(), words.next())
            && let Ok(n) = n.parse::<u64>()
        {
            match what {
                "passed" => counts.passed += n,
                "failed" => counts.failed += n,
                "ignored" => counts.ignored += n,
                _ => {}
            }
        }
    }
}

/// Runs `cmd`, echoing its standard output while counting test results.
fn run_counting(cmd: &mut std::process::Command) -> Tally {
    use std::io::{BufRead as _, BufReader};
    println!("+ {}", util::display(cmd));
    let mut counts = Counts::default();
    let status = (|| -> Result<()> {
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            count_line(&line, &mut counts);
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("cargo test failed ({status})");
        }
        Ok(())
    })();
    Tally {
        passed: counts.passed,
        failed: counts.failed,
        ignored: counts.ignored,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cargo_result_lines() {
        let mut c = Counts::default();
        count_line(
            "test result: ok. 9 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            &mut c,
        );
        count_line(
            "test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured",
            &mut c,
        );
        count_line("running 4 tests", &mut c);
        assert_eq!(
            c,
            Counts {
                passed: 10,
                failed: 3,
                ignored: 2
            }
        );
    }
}
