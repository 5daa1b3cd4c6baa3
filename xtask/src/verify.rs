//! `cargo xtask verify`: the long checks that do not belong in every test run.
//!
//! - The differential test at full size: a million random frames (by default) through the
//!   loaded XDP program and the host model, with a fresh seed that is printed.
//! - The cargo-fuzz targets (classifier, CIDR parsing, config parsing) for a short while each,
//!   after replaying every saved crash in `fuzz/regressions/TARGET`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Args;

use crate::{setup, util};

/// The fuzz targets in `fuzz/fuzz_targets`.
const FUZZ_TARGETS: &[&str] = &["classify", "cidr", "config"];

/// Options of `cargo xtask verify`.
#[derive(Debug, Args)]
pub struct Options {
    /// Frames for the differential test.
    #[arg(long, default_value_t = 1_000_000)]
    pub frames: u64,
    /// Seed of the differential test (default: from the clock, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds of fuzzing per target (0: replay the regressions only).
    #[arg(long, default_value_t = 30)]
    pub fuzz_seconds: u64,
}

/// Runs the differential test and the fuzzers.
pub fn run(opts: &Options) -> Result<()> {
    if !util::is_root()? {
        bail!("verify needs root (it loads the XDP program)");
    }
    setup::run_all()?;
    let seed = opts.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "verify: differential test, {} frames, seed {seed}",
        opts.frames
    );
    util::run(
        util::cargo()
            .env("GUARD_DIFF_FRAMES", opts.frames.to_string())
            .env("GUARD_DIFF_SEED", seed.to_string())
            .args([
                "test",
                "--release",
                "-p",
                "guard-tests",
                "--test",
                "differential",
                "--",
                "--nocapture",
            ]),
    )?;

    if util::find_program("cargo-fuzz").is_none() {
        util::run(util::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let fuzz = util::workspace_root().join("fuzz");
    for target in FUZZ_TARGETS {
        let regressions = fuzz.join("regressions").join(target);
        println!("verify: fuzz {target}: replaying {}", regressions.display());
        util::run(
            util::cmd("cargo")
                .current_dir(&fuzz)
                .args(["+nightly", "fuzz", "run", target])
                .arg(&regressions)
                .args(["--", "-runs=0"]),
        )?;
        if opts.fuzz_seconds > 0 {
            let corpus = fuzz.join("corpus").join(target);
            std::fs::create_dir_all(&corpus)?;
            util::run(
                util::cmd("cargo")
                    .current_dir(&fuzz)
                    .args(["+nightly", "fuzz", "run", target])
                    .arg(&corpus)
                    .arg(fuzz.join("seeds").join(target))
                    .arg("--")
                    .arg(format!("-max_total_time={}", opts.fuzz_seconds)),
            )
            .map_err(|e| {
                e.context(format!(
                    "fuzz target {target} found a crash: its input is under fuzz/artifacts/{target}; \
                     copy it to fuzz/regressions/{target} once fixed"
                ))
            })?;
        }
    }
    println!(
        "verify: differential seed {seed}: 0 disagreements; fuzz targets {FUZZ_TARGETS:?}: no crash"
    );
    Ok(())
}
