//! The parts of guard-bench (see src/bin/guard-bench.rs).

pub mod ab;
pub mod bpf;
pub mod control;
pub mod guard;
pub mod live;
pub mod machine;
pub mod prefixes;
pub mod report;
pub mod sys;
pub mod testrun;
pub mod topo;
pub mod xdpfilter;

use std::time::Duration;

use serde::Serialize;

/// How long and how often to measure.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// A short run (figures for a smoke test, not for the docs).
    pub quick: bool,
    /// Runs per BPF_PROG_TEST_RUN call in repeated rows.
    pub repeat: u32,
    /// Interleaved rounds of repeated rows.
    pub rounds: usize,
    /// Distinct sources per sweep.
    pub sweep_sources: u32,
    /// Rounds of sweeps.
    pub sweep_rounds: usize,
    /// Interleaved rounds of throughput measurements (each row keeps its best).
    pub live_rounds: usize,
    /// Warm-up before each throughput measurement.
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// Length of each throughput measurement.
    #[serde(serialize_with = "secs")]
    pub measure: Duration,
    /// `guard allow` runs.
    pub cli_runs: usize,
    /// Loads of 100,000 CIDRs.
    pub load_runs: usize,
    /// Seed of the random prefixes.
    pub seed: u64,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Params {
    /// The full run (several minutes).
    pub fn full() -> Self {
        Self {
            quick: false,
            repeat: 1_000_000,
            rounds: 15,
            sweep_sources: 1_000_000,
            sweep_rounds: 3,
            live_rounds: 5,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(3),
            cli_runs: 20,
            load_runs: 3,
            seed: 11211,
        }
    }

    /// The quick run (well under a minute of measuring).
    pub fn quick() -> Self {
        Self {
            quick: true,
            repeat: 100_000,
            rounds: 3,
            sweep_sources: 50_000,
            sweep_rounds: 1,
            live_rounds: 1,
            warmup: Duration::from_millis(300),
            measure: Duration::from_secs(1),
            cli_runs: 5,
            load_runs: 1,
            ..Self::full()
        }
    }
}
