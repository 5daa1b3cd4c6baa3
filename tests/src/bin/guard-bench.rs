//! `guard-bench` (run by `cargo xtask bench`): measures guard's per-packet cost with
//! BPF_PROG_TEST_RUN, its throughput through a veth pair against nftables, xdp-filter and a
//! no-op ceiling, and its control plane; writes docs/BENCHMARKS.md and docs/benchmarks.json.
//!
//! Everything is measured in one run, so that every ratio is against a baseline of the same
//! run. Needs root. Traffic only flows inside network namespaces created here; namespaces,
//! XDP programs, nft tables and pins are removed at the end, on failure and on Ctrl-C.
//!
//! Options: `--quick` (a short smoke run, written to target/guard-bench/), `--out DIR`,
//! `--only testrun,live,control`, `--seed N`, `--rounds N` (interleaved rounds of the
//! repeated BPF_PROG_TEST_RUN rows), and `--ab NAME=OBJECT,...`: instead of the
//! report, this build's XDP program against other builds of it, path by path
//! (`bench::ab`), written to DIR/ab.md (default target/guard-bench/).

#[path = "../bench/mod.rs"]
mod bench;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use bench::{Params, ab, control, live, machine, prefixes::Lists, report, sys, testrun, topo};
use guard_tests::privilege;

struct Options {
    params: Params,
    out: Option<PathBuf>,
    parts: Vec<String>,
    ab: Option<Vec<ab::Build>>,
}

const PARTS: [&str; 3] = ["testrun", "live", "control"];

fn parse_args() -> anyhow::Result<Option<Options>> {
    let mut params = Params::full();
    let mut out = None;
    let mut parts: Vec<String> = PARTS.iter().map(|s| (*s).to_owned()).collect();
    let mut seed = None;
    let mut ab = None;
    let mut rounds = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => params = Params::quick(),
            "--out" => {
                out = Some(PathBuf::from(
                    args.next().context("--out needs a directory")?,
                ))
            }
            "--only" => {
                let list = args.next().context("--only needs a list")?;
                parts = list.split(',').map(str::to_owned).collect();
                if let Some(bad) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    bail!("unknown part {bad:?}: expected some of {}", PARTS.join(","));
                }
            }
            "--seed" => seed = Some(number(args.next(), "--seed")?),
            "--rounds" => rounds = Some(number(args.next(), "--rounds")?),
            "--ab" => {
                let list = args.next().context("--ab needs NAME=OBJECT,...")?;
                let mut builds = vec![ab::Build::this()];
                for spec in list.split(',') {
                    builds.push(ab::Build::parse(spec)?);
                }
                ab = Some(builds);
            }
            "-h" | "--help" => {
                println!(
                    "guard-bench [--quick] [--out DIR] [--only testrun,live,control] [--seed N] [--rounds N]\n\
                     guard-bench [--quick] [--out DIR] [--rounds N] --ab NAME=OBJECT[,NAME=OBJECT...]\n\n\
                     Measures guard (BPF_PROG_TEST_RUN per-packet cost, veth throughput against \
                     nftables, xdp-filter and a no-op ceiling, control plane) and writes \
                     BENCHMARKS.md and benchmarks.json to DIR (default: docs/, or \
                     target/guard-bench/ with --quick, a partial run or a failure). With --ab, \
                     measures this build's XDP program against other builds of it (guard's BPF \
                     object files) path by path instead, and writes ab.md to DIR (default \
                     target/guard-bench/). Needs root."
                );
                return Ok(None);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if let Some(seed) = seed {
        params.seed = seed;
    }
    if let Some(rounds) = rounds {
        anyhow::ensure!(rounds > 0, "--rounds needs at least 1");
        params.rounds = rounds;
    }
    Ok(Some(Options {
        params,
        out,
        parts,
        ab,
    }))
}

/// The number after option `option`.
fn number<T: std::str::FromStr>(arg: Option<String>, option: &str) -> anyhow::Result<T> {
    arg.and_then(|a| a.parse().ok())
        .with_context(|| format!("{option} needs a number"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guard-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let Some(opts) = parse_args()? else {
        return Ok(());
    };
    if !privilege::privileged() {
        bail!("guard-bench needs root (BPF, XDP, network namespaces)");
    }
    sys::catch_interrupts();
    topo::remove_stale();
    let p = &opts.params;
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the tests crate lives in the workspace")?
        .to_path_buf();
    let command = std::env::var("GUARD_BENCH_COMMAND").unwrap_or_else(|_| {
        std::iter::once("guard-bench".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let started = std::time::Instant::now();
    let mut facts = machine::collect();
    eprintln!(
        "bench: {} run on {} ({} CPUs), load average {}",
        if p.quick { "quick" } else { "full" },
        facts.kernel,
        facts.cpus,
        facts.loadavg_start
    );
    if !p.quick {
        let busy = sys::wait_for_quiet(Duration::from_secs(60), 0.10)?;
        eprintln!(
            "bench: other processes use {:.0}% of the CPUs",
            busy * 100.0
        );
    }
    let lists = Lists::generate(p.seed, live::PREFIXES, 10_000);
    if let Some(builds) = &opts.ab {
        let report = ab::run(p, &lists, builds)?;
        let out = opts
            .out
            .clone()
            .unwrap_or_else(|| workspace.join("target/guard-bench"));
        std::fs::create_dir_all(&out)?;
        let file = out.join("ab.md");
        std::fs::write(&file, &report).with_context(|| format!("writing {}", file.display()))?;
        println!("{report}");
        eprintln!("bench: wrote {}", file.display());
        return Ok(());
    }

    let mut errors = Vec::new();
    let part = |name: &str| opts.parts.iter().any(|p| p == name);
    let per_packet = if part("testrun") {
        keep(
            &mut errors,
            "per-packet (BPF_PROG_TEST_RUN)",
            testrun::run(p, &lists),
        )?
    } else {
        None
    };
    let throughput = if part("live") {
        if !p.quick {
            sys::wait_for_quiet(Duration::from_secs(30), 0.10)?;
        }
        keep(&mut errors, "throughput (veth)", live::run(p, &lists))?
    } else {
        None
    };
    let control_plane = if part("control") {
        keep(&mut errors, "control plane", control::run(p, &lists))?
    } else {
        None
    };
    facts.loadavg_end = sys::loadavg();
    facts.elapsed_s = started.elapsed().as_secs_f64();

    let targets = report::targets(
        per_packet.as_ref(),
        throughput.as_ref(),
        control_plane.as_ref(),
    );
    let complete = errors.is_empty() && opts.parts.len() == PARTS.len();
    let out = match &opts.out {
        Some(dir) => dir.clone(),
        None if complete && !p.quick => workspace.join("docs"),
        None => workspace.join("target/guard-bench"),
    };
    let report = report::Report {
        command,
        machine: facts,
        params: p.clone(),
        targets,
        per_packet,
        throughput,
        control_plane,
        errors: errors.clone(),
    };
    report::write(&out, &report)?;
    println!("\nTargets (benchmarks, not assertions):");
    for t in &report.targets {
        println!(
            "  [{}] {}: {} (goal {}){}",
            match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            },
            t.name,
            t.measured,
            t.goal,
            if t.shortfall.is_empty() {
                String::new()
            } else {
                format!("; {}", t.shortfall)
            }
        );
    }
    if !errors.is_empty() {
        bail!("{} part(s) failed: {}", errors.len(), errors.join("; "));
    }
    Ok(())
}

/// A part's results, or `None` with its error recorded; an interruption stops the run.
fn keep<T>(
    errors: &mut Vec<String>,
    name: &str,
    r: anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            sys::check_interrupted()?;
            eprintln!("bench: {name} failed: {e:#}");
            errors.push(format!("{name}: {e:#}"));
            Ok(None)
        }
    }
}
