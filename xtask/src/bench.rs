//! `cargo xtask bench`: builds guard and runs the `guard-bench` binary of guard-tests, which
//! measures guard against a no-op floor and ceiling, xdp-filter and nftables in one run and
//! writes docs/BENCHMARKS.md and docs/benchmarks.json.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::{build, setup, util};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
#[command(
    about = "Run setup, build guard, then measure it (BPF_PROG_TEST_RUN, veth throughput \
             against nftables and xdp-filter, control plane) and write docs/BENCHMARKS.md \
             (needs root; about 5-8 minutes, --quick well under one)"
)]
pub struct Options {
    /// A short smoke run; its report goes to target/guard-bench/, not docs/.
    #[arg(long)]
    pub quick: bool,
    /// Write BENCHMARKS.md and benchmarks.json here instead.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run only some parts (a partial report goes to target/guard-bench/ unless --out).
    #[arg(long, value_name = "testrun,live,control")]
    pub only: Option<String>,
    /// Seed of the random allowlists.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Interleaved rounds of the repeated BPF_PROG_TEST_RUN rows (default 15, 3 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Instead of the report: this build's XDP program against other builds of it (guard's
    /// BPF object files), path by path in BPF_PROG_TEST_RUN; writes ab.md to
    /// target/guard-bench/ (or --out).
    #[arg(long, value_name = "NAME=OBJECT,...")]
    pub ab: Option<String>,
}

/// Runs setup, builds guard (release), then
/// `cargo run --release -p guard-tests --bin guard-bench -- ARGS`.
pub fn run(opts: &Options) -> Result<()> {
    setup::run_all()?;
    let bin = build::guard(true)?;
    let mut args: Vec<String> = Vec::new();
    if opts.quick {
        args.push("--quick".into());
    }
    if let Some(only) = &opts.only {
        args.extend(["--only".into(), only.clone()]);
    }
    if let Some(seed) = opts.seed {
        args.extend(["--seed".into(), seed.to_string()]);
    }
    if let Some(rounds) = opts.rounds {
        args.extend(["--rounds".into(), rounds.to_string()]);
    }
    if let Some(ab) = &opts.ab {
        let absolute = ab
            .split(',')
            .map(|spec| match spec.split_once('=') {
                Some((name, path)) => Ok(format!(
                    "{name}={}",
                    std::path::absolute(path)?.to_string_lossy()
                )),
                None => Ok(spec.to_owned()),
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        args.extend(["--ab".into(), absolute.join(",")]);
    }
    if let Some(out) = &opts.out {
        args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    }
    // The report shows the command as typed; guard-bench runs in the workspace root, so it is
    // given the directory the caller meant made absolute (`--out` is last).
    let shown = std::iter::once("cargo xtask bench".to_owned())
        .chain(args.iter().map(|a| util::shell_quote(a).into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    if let (Some(out), Some(last)) = (&opts.out, args.last_mut()) {
        *last = std::path::absolute(out)?.to_string_lossy().into_owned();
    }
    util::run(
        util::cargo()
            .env("GUARD_BIN", &bin)
            .env("GUARD_BENCH_COMMAND", shown)
            .args([
                "run",
                "--release",
                "-p",
                "guard-tests",
                "--bin",
                "guard-bench",
                "--",
            ])
            .args(&args),
    )
}
