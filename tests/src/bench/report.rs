//! docs/BENCHMARKS.md and docs/benchmarks.json from one run's results.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::Context as _;
use serde::Serialize;

use super::{Params, control, live, machine::Facts, testrun};

/// Everything one run produced.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command that produced it.
    pub command: String,
    /// Where it ran.
    pub machine: Facts,
    /// How long and how often it measured.
    pub params: Params,
    /// The targets, measured against.
    pub targets: Vec<Target>,
    /// BPF_PROG_TEST_RUN.
    pub per_packet: Option<testrun::Results>,
    /// veth throughput.
    pub throughput: Option<live::Results>,
    /// Control plane.
    pub control_plane: Option<control::Results>,
    /// Parts that failed, with why.
    pub errors: Vec<String>,
}

/// A goal and how the run did against it.
#[derive(Debug, Serialize)]
pub struct Target {
    /// What is measured.
    pub name: String,
    /// The goal, in words.
    pub goal: String,
    /// The measured figure, in words.
    pub measured: String,
    /// Whether it was met (`None`: not measured).
    pub met: Option<bool>,
    /// By how much it was missed, in words (empty when met).
    pub shortfall: String,
}

fn tr_row<'a>(t: &'a testrun::Results, id: &str, n: usize) -> Option<&'a testrun::Row> {
    t.rows.iter().find(|r| r.id == id && r.prefixes == Some(n))
}

fn live_row<'a>(
    l: &'a live::Results,
    dut: &str,
    traffic: &str,
    cpus: usize,
) -> Option<&'a live::Row> {
    l.rows
        .iter()
        .find(|r| r.dut == dut && r.traffic == traffic && r.cpus == cpus)
}

/// At most `limit` (lower is better).
fn at_most(
    name: &str,
    goal: &str,
    value: Option<f64>,
    limit: f64,
    show: impl Fn(f64) -> String,
    miss: impl Fn(f64) -> String,
) -> Target {
    match value.filter(|v| v.is_finite()) {
        None => not_measured(name, goal),
        Some(v) => Target {
            name: name.into(),
            goal: goal.into(),
            measured: show(v),
            met: Some(v <= limit),
            shortfall: if v <= limit { String::new() } else { miss(v) },
        },
    }
}

/// At least `limit` (higher is better).
fn at_least(
    name: &str,
    goal: &str,
    value: Option<f64>,
    limit: f64,
    show: impl Fn(f64) -> String,
    miss: impl Fn(f64) -> String,
) -> Target {
    match value.filter(|v| v.is_finite()) {
        None => not_measured(name, goal),
        Some(v) => Target {
            name: name.into(),
            goal: goal.into(),
            measured: show(v),
            met: Some(v >= limit),
            shortfall: if v >= limit { String::new() } else { miss(v) },
        },
    }
}

fn not_measured(name: &str, goal: &str) -> Target {
    Target {
        name: name.into(),
        goal: goal.into(),
        measured: "not measured".into(),
        met: None,
        shortfall: String::new(),
    }
}

/// The targets of the brief, against this run.
pub fn targets(
    t: Option<&testrun::Results>,
    l: Option<&live::Results>,
    c: Option<&control::Results>,
) -> Vec<Target> {
    let big = 100_000;
    let mut out = Vec::new();
    // The reference rows, in `REFERENCE_PATHS` order: dropped, then allowlisted.
    let references: Vec<&testrun::Row> = t.map_or(Vec::new(), |t| {
        t.rows.iter().filter(|r| r.id == "reference").collect()
    });
    for (k, (id, what)) in [("dropped", "Dropped"), ("allowlisted", "Allowlisted")]
        .into_iter()
        .enumerate()
    {
        let r = t.and_then(|t| tr_row(t, id, big));
        let floor = t.map_or(f64::NAN, |t| t.floor_ns);
        // Whether the least work of the target itself fits: where it does not, the miss is
        // the machine's (its floor against the work any guard must do), not guard's extra work.
        let reference = references.get(k).map_or(String::new(), |r| {
            format!(
                "; the least-work reference reads {:.0} ns ({:.2}x{})",
                r.ns,
                r.x_floor,
                if r.x_floor > 1.25 {
                    ", over the goal too"
                } else {
                    ""
                }
            )
        });
        out.push(at_most(
            &format!("{what} path, 100,000 prefixes (BPF_PROG_TEST_RUN)"),
            "within 1.25x of the floor",
            r.map(|r| r.x_floor),
            1.25,
            |v| {
                format!(
                    "{v:.2}x ({:.0} ns vs {floor:.0} ns; {:.2}x against each round's own floor)",
                    v * floor,
                    r.and_then(|r| r.x_floor_paired).unwrap_or(f64::NAN)
                )
            },
            |v| {
                format!(
                    "missed by {:.0}%: {:.2} ns over the {:.2} ns budget{reference}",
                    (v / 1.25 - 1.0) * 100.0,
                    v * floor - 1.25 * floor,
                    1.25 * floor
                )
            },
        ));
    }
    let r = t.and_then(|t| tr_row(t, "rate_limited_spoofed", big));
    let floor1 = t.map_or(f64::NAN, |t| t.floor_single_ns);
    out.push(at_most(
        "Rate-limited path, spoofed flood of distinct sources (100,000 prefixes)",
        "within 2x of the floor (same one-run-per-call harness)",
        r.map(|r| r.x_floor),
        2.0,
        |v| format!("{v:.2}x ({:.0} ns vs {floor1:.0} ns)", v * floor1),
        |v| format!("missed by {:.0}%", (v / 2.0 - 1.0) * 100.0),
    ));
    let xf = t.and_then(|t| t.rows.iter().find(|r| r.id == "xdp_filter"));
    let dropped = t.and_then(|t| tr_row(t, "dropped", big));
    let speedup = match (xf, dropped) {
        (Some(x), Some(d)) => Some(x.ns / d.ns),
        _ => None,
    };
    out.push(at_least(
        "Per packet vs xdp-filter (dropped, 100,000 prefixes)",
        ">= 3x faster than xdp-filter",
        speedup,
        3.0,
        |v| {
            format!(
                "{v:.2}x ({:.0} ns xdp-filter vs {:.0} ns guard)",
                xf.map_or(f64::NAN, |x| x.ns),
                dropped.map_or(f64::NAN, |d| d.ns)
            )
        },
        |v| {
            format!(
                "missed: {v:.2}x instead of 3x (guard needs {:.0} ns or less)",
                xf.map_or(f64::NAN, |x| x.ns) / 3.0
            )
        },
    ));
    for cpus in [1, 2] {
        let g = l.and_then(|l| live_row(l, "guard_drop", "one_source", cpus));
        let reference = l
            .and_then(|l| live_row(l, "reference", "one_source", cpus))
            .map_or(String::new(), |r| {
                format!(
                    "; the least-work reference reaches {:.1}%{}",
                    r.of_ceiling * 100.0,
                    if r.of_ceiling < 0.9 {
                        ", under the goal too"
                    } else {
                        ""
                    }
                )
            });
        // The programs' own difference, timed run by run with one generator CPU.
        let timed = match l.map(|l| &l.in_situ) {
            Some(x) if cpus == 1 => format!(
                "; timed run by run on veth, guard's program costs {}",
                match x.guard_extra_ns() {
                    e if e < 0.0 => format!(
                        "{:.2} ns a frame less than the reference's, whose work is a subset \
                         of guard's: within the spread",
                        -e
                    ),
                    e => format!("{e:.2} ns a frame more than the reference's"),
                }
            ),
            _ => String::new(),
        };
        out.push(at_least(
            &format!("veth drop throughput, 100,000 prefixes, {cpus} generator CPU(s)"),
            ">= 90% of the no-op ceiling",
            g.map(|g| g.of_ceiling),
            0.9,
            |v| {
                format!(
                    "{:.1}% ({:.2} Mpps)",
                    v * 100.0,
                    g.map_or(f64::NAN, |g| g.mpps)
                )
            },
            |v| {
                format!(
                    "missed by {:.1} points{reference}{timed}",
                    (0.9 - v) * 100.0
                )
            },
        ));
        out.push(at_least(
            &format!("veth drop throughput vs nftables, 100,000 prefixes, {cpus} generator CPU(s)"),
            ">= 6x nftables",
            g.and_then(|g| g.x_nft),
            6.0,
            |v| format!("{v:.1}x"),
            |v| format!("missed by {:.0}%", (1.0 - v / 6.0) * 100.0),
        ));
    }
    out.push(at_most(
        "Loading 100,000 CIDRs (lists::add, unpinned maps)",
        "< 1 s",
        c.map(|c| c.load_unpinned_s),
        1.0,
        |v| format!("{v:.3} s"),
        |v| format!("missed by {:.0}%", (v - 1.0) * 100.0),
    ));
    out.push(at_most(
        "Loading 100,000 CIDRs (lists::add, pinned maps of a CLI-attached guard)",
        "< 1 s",
        c.map(|c| c.load_pinned_s),
        1.0,
        |v| format!("{v:.3} s"),
        |v| format!("missed by {:.0}%", (v - 1.0) * 100.0),
    ));
    out
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "-",
    }
}

fn n(x: usize) -> String {
    let s = x.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The Markdown report.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Measured by `{}` on {} (guard at commit {}){}. Every figure below comes from that \
         one run, so each ratio is against a baseline measured in the same run, minutes apart \
         at most. `benchmarks.json` beside this file holds the same run with every sample.\n",
        r.command,
        m.date,
        m.commit,
        if r.params.quick {
            " with `--quick`: short runs, for a smoke test only"
        } else {
            ""
        }
    );
    if !r.errors.is_empty() {
        let _ = writeln!(s, "**Parts that failed in this run:**\n");
        for e in &r.errors {
            let _ = writeln!(s, "- {e}");
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(
        s,
        "These are benchmarks, not assertions: the run never fails on them.\n"
    );
    let _ = writeln!(s, "| Measure | Goal | Measured | Met | Shortfall |");
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            t.name,
            t.goal,
            t.measured,
            met(t.met),
            t.shortfall
        );
    }
    s.push('\n');

    observations(&mut s, r);
    if let Some(t) = &r.per_packet {
        per_packet(&mut s, t);
    }
    if let Some(l) = &r.throughput {
        throughput(&mut s, l);
    }
    if let Some(c) = &r.control_plane {
        control_plane(&mut s, c);
    }

    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| | |\n| --- | --- |");
    for (k, v) in [
        ("Kernel", m.kernel.clone()),
        (
            "CPU",
            format!("{} x {} ({})", m.cpus, m.cpu, m.virtualization),
        ),
        ("Memory", format!("{:.1} GiB", m.mem_gib)),
        ("Spectre v2", m.spectre_v2.clone()),
        ("SRSO", m.srso.clone()),
        ("ITS", m.its.clone()),
        ("Clock source", m.clocksource.clone()),
        ("BPF JIT", m.bpf_jit.clone()),
        ("rustc", m.rustc.clone()),
        ("aya", m.aya.clone()),
        ("xdp-tools", m.xdp_tools.clone()),
        ("nftables", m.nft.clone()),
        (
            "Load average (start / end)",
            format!("{} / {}", m.loadavg_start, m.loadavg_end),
        ),
    ] {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push('\n');
    let machine = if m.virtualization.starts_with("virtual") {
        format!("a {}-vCPU virtual machine", m.cpus)
    } else {
        format!("a machine with {} CPUs", m.cpus)
    };
    let mitigations = match m.costly_mitigations() {
        Some(list) => format!(
            " with {list}: every indirect call and return costs more than on bare metal, so \
             absolute figures are high and the ratios are what carries over"
        ),
        None => " that reports no retpolines and no SRSO or ITS mitigation".into(),
    };
    let _ = writeln!(
        s,
        "The machine is {machine}{mitigations}. Other work on the machine during the run \
         shows in the load average and in the \"others busy\" figures.\n"
    );

    let _ = writeln!(s, "## Reproducing\n");
    let _ = writeln!(
        s,
        "```sh\ncargo xtask bench            # the full run, rewrites docs/BENCHMARKS.md\n\
         cargo xtask bench --out DIR  # the same, written to DIR\n\
         cargo xtask bench --quick    # a short smoke run, written to target/guard-bench/\n```\n"
    );
    let _ = writeln!(
        s,
        "This run took {} min {:02} s, the build before it not counted.\n",
        m.elapsed_s.round() as u64 / 60,
        m.elapsed_s.round() as u64 % 60
    );
    let _ = writeln!(
        s,
        "`cargo xtask bench` runs `cargo xtask setup`, builds the `guard` binary (release), \
         then `cargo run --release -p guard-tests --bin guard-bench`. It needs root. All \
         traffic stays inside network namespaces it creates; namespaces, XDP programs, nft \
         tables and pins are removed at the end, on failure and on Ctrl-C. Parameters: \
         `repeat` {}, {} rounds, sweeps of {} sources x {} rounds, throughput {} s after {} s \
         of warm-up, seed {}.",
        n(r.params.repeat as usize),
        r.params.rounds,
        n(r.params.sweep_sources as usize),
        r.params.sweep_rounds,
        r.params.measure.as_secs_f64(),
        r.params.warmup.as_secs_f64(),
        r.params.seed
    );
    s
}

/// "N ns more" for a step's cost; a step that reads cheaper than the one before it (whole-ns
/// medians of separate rows) says so rather than costing "-1 ns more".
fn more_ns(step: f64) -> String {
    if step < 0.0 {
        format!("{:.0} ns less (rounding: this row read cheaper)", -step)
    } else {
        format!("{step:.0} ns more")
    }
}

/// guard's cost beyond the reference's: the reference does a subset of guard's work, so a
/// negative difference is the measurement's spread, and says so rather than cost "-0.39 ns".
fn extra_ns(extra: f64) -> String {
    if extra < 0.0 {
        format!(
            "{:.2} ns less (the reference does a subset of guard's work: within the spread)",
            -extra
        )
    } else {
        format!("{extra:.2} ns")
    }
}

/// A few readings of the run, computed from it.
fn observations(s: &mut String, r: &Report) {
    let mut lines = Vec::new();
    if let Some(t) = &r.per_packet {
        let ns = |id: &str, size: usize| tr_row(t, id, size).map_or(f64::NAN, |x| x.ns);
        let (arp, port, shallow, deep) = (
            ns("not_ip", 100_000),
            ns("not_protected", 100_000),
            ns("dropped_shallow", 100_000),
            ns("dropped", 100_000),
        );
        lines.push(format!(
            "Where a dropped frame's {:.0} ns over the {:.0} ns floor go, at 100,000 prefixes: \
             {:.0} ns read the context, parse Ethernet, IPv4 and UDP in one bounds check, test \
             the port and count the verdict per interface and CPU (UDP to port 53, not \
             protected: {:.0} ns); {} look the source up in one table row and \
             decide ({:.0} ns); and {} read the /32 chunk of a /24 that holds \
             longer prefixes (the deepest miss: {:.0} ns). Frames other than plain IPv4 take \
             the header-by-header parse: an ARP frame costs {:.0} ns. Differences under 1 ns \
             are within the kernel's rounding.",
            deep - t.floor_ns,
            t.floor_ns,
            port - t.floor_ns,
            port,
            more_ns(shallow - port),
            shallow,
            more_ns(deep - shallow),
            deep,
            arp
        ));
        let ladder: Vec<&testrun::Row> = t.rows.iter().filter(|r| r.id == "calibration").collect();
        if let [short, long] = ladder.as_slice() {
            // ns per instruction from the difference of the two ladders (the fixed part of
            // a ladder cancels out).
            let per_insn = (long.ns - short.ns)
                / (testrun::CALIBRATION_INSNS[1] - testrun::CALIBRATION_INSNS[0]) as f64;
            let budget = 0.25 * t.floor_ns;
            lines.push(format!(
                "What 1.25x of the floor buys: the floor plus {} independent ALU instructions \
                 costs {:.0} ns and plus {} costs {:.0} ns, about {:.3} ns an instruction, so \
                 the {:.1} ns between the floor and 1.25x of it hold about {:.0} simple BPF \
                 instructions (loads and dependent chains cost more). guard's dropped path \
                 reads the context, parses three headers, tests the port, reads a table row, \
                 decides, and counts in a per-CPU array, in one run.",
                testrun::CALIBRATION_INSNS[0],
                short.ns,
                testrun::CALIBRATION_INSNS[1],
                long.ns,
                per_insn,
                budget,
                if per_insn > 0.0 {
                    budget / per_insn
                } else {
                    f64::NAN
                },
            ));
        }
        let reference: Vec<&testrun::Row> = t.rows.iter().filter(|r| r.id == "reference").collect();
        if let [dropped, allowlisted] = reference.as_slice() {
            lines.push(format!(
                "The least work of the targets, hand-assembled (the reference rows: parse, \
                 test one port, read guard's own row and chunk, count the verdict per CPU), \
                 costs {:.0} ns ({:.2}x) dropped and {:.0} ns ({:.2}x) allowlisted, against \
                 guard's {:.0} and {:.0} ns. Beyond that work guard counts per interface and \
                 in bytes, tests for the denylist, policy and dry-run, samples top talkers, \
                 looks ports up in a table, and falls back to the general parser.",
                dropped.ns,
                dropped.x_floor,
                allowlisted.ns,
                allowlisted.x_floor,
                ns("dropped", 100_000),
                ns("allowlisted", 100_000),
            ));
        }
        if let ([rd, ra], [gd, ga]) = (
            t.timed.reference_over_floor_ns.as_slice(),
            t.timed.guard_over_floor_ns.as_slice(),
        ) {
            lines.push(format!(
                "Timed run by run instead (the kernel's run-time statistics, BPF_ENABLE_STATS: \
                 fractions of a nanosecond, but every run pays a clock read on either side and \
                 runs alone, so the floor reads {:.1} ns and these are no ratios for the 1.25x \
                 goal): over that floor, guard's dropped path costs {gd:.2} ns and its \
                 allowlisted path {ga:.2} ns, the reference's {rd:.2} and {ra:.2} ns; guard's \
                 extra work costs {} and {}.",
                t.timed.floor_ns,
                extra_ns(gd - rd),
                extra_ns(ga - ra),
            ));
        }
        let paired = |id: &str| {
            tr_row(t, id, 100_000)
                .and_then(|r| r.x_floor_paired)
                .unwrap_or(f64::NAN)
        };
        let reference_paired: Vec<f64> = t
            .rows
            .iter()
            .filter(|r| r.id == "reference")
            .filter_map(|r| r.x_floor_paired)
            .collect();
        let (lo, hi) = t
            .floor_rounds
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), f| {
                (lo.min(*f), hi.max(*f))
            });
        if let [ref_dropped, ref_allowlisted] = reference_paired.as_slice() {
            lines.push(format!(
                "This VM has slow and fast phases: the floor read {lo:.1} to {hi:.1} ns \
                 across the rounds. The table's ratios are medians over the rounds divided by \
                 the floor's median. Taken round by round instead (each value against the floor \
                 read just before and after it), the dropped path is {:.2}x and the \
                 allowlisted path {:.2}x; the reference {ref_dropped:.2}x and \
                 {ref_allowlisted:.2}x.",
                paired("dropped"),
                paired("allowlisted"),
            ));
        }
        lines.push(format!(
            "The lookup does not grow with the list: a dropped frame takes {:.0}, {:.0} and \
             {:.0} ns with 1, 1,000 and 100,000 IPv4 prefixes. An IPv6 lookup in 10,000 \
             prefixes (an LPM trie) takes {:.0} ns.",
            ns("dropped", 1),
            ns("dropped", 1_000),
            ns("dropped", 100_000),
            ns("ipv6_dropped", 100_000)
        ));
        let recorded = ns("dropped_recorded", 100_000) - ns("dropped", 100_000);
        lines.push(format!(
            "Top talkers: recording a drop (a lookup in their LRU hash map and two atomic adds, \
             in a BPF subprogram) costs {recorded:.0} ns, when every drop is recorded \
             (`--top-sample 1`: {:.0} ns). At the default of one drop in {} that is {:.2} ns \
             per drop; one in 64 would be {:.2} ns.",
            ns("dropped_recorded", 100_000),
            guard_common::config::DEFAULT_TOP_SAMPLE,
            recorded / f64::from(guard_common::config::DEFAULT_TOP_SAMPLE),
            recorded / 64.0
        ));
        lines.push(format!(
            "Under the rate-limit policy, one source over its limit costs {:.0} ns at 100,000 \
             prefixes (the clock and two LRU lookups on top of the allowlist); a spoofed flood \
             that the empty global bucket refuses costs {:.0} ns per frame against {:.0} ns for \
             the same flood under the drop policy (floor {:.0} ns, one run per call).",
            ns("rate_limited", 100_000),
            ns("rate_limited_spoofed", 100_000),
            ns("dropped_spoofed", 100_000),
            t.floor_single_ns
        ));
    }
    if let (Some(t), Some(l)) = (&r.per_packet, &r.throughput) {
        let prog = tr_row(t, "dropped", 100_000).map(|x| x.over_floor_ns);
        let live: Vec<String> = l
            .rows
            .iter()
            .filter(|x| x.dut == "guard_drop" && x.traffic == "one_source")
            .map(|x| format!("{:.0} ns with {} CPU(s)", x.dut_ns, x.cpus))
            .collect();
        if let Some(prog) = prog {
            lines.push(format!(
                "The two methods agree: guard's drop costs {prog:.0} ns over the floor in \
                 BPF_PROG_TEST_RUN, and {} over the ceiling through veth.",
                live.join(" and ")
            ));
        }
    }
    if let Some(l) = &r.throughput {
        let x = &l.in_situ;
        let extra = x.guard_extra_ns();
        let mut line = format!(
            "Through veth, timed run by run (1 generator CPU, the kernel's run-time \
             statistics): guard's drop costs {:.2} ns per frame over the ceiling's program and \
             the reference's {:.2} ns, so guard's extra work costs {} a frame there.",
            x.guard_over_ceiling_ns,
            x.reference_over_ceiling_ns,
            extra_ns(extra),
        );
        let rows = (
            live_row(l, "guard_drop", "one_source", 1),
            live_row(l, "reference", "one_source", 1),
            live_row(l, "ceiling", "one_source", 1),
        );
        if let (Some(g), Some(reference), Some(ceiling)) = rows
            && ceiling.rounds.len() >= 2
        {
            // The ceiling's own spread, as ns per frame: how far apart two rounds of one
            // program can read.
            let rates = ceiling.rounds.iter().map(|x| x.mpps);
            let (low, high) = (
                rates.clone().fold(f64::MAX, f64::min),
                rates.fold(f64::MIN, f64::max),
            );
            let spread_ns = 1000.0 / low - 1000.0 / high;
            let gap = g.dut_ns - reference.dut_ns;
            let _ = write!(
                line,
                " From the rates, guard's DUT ns is {:.2} ns {} the reference's, {} the \
                 {spread_ns:.2} ns between the ceiling's own best and worst rounds{}.",
                gap.abs(),
                if gap >= 0.0 { "above" } else { "below" },
                if gap.abs() <= spread_ns {
                    "within"
                } else {
                    "more than"
                },
                if gap > extra && gap.abs() > spread_ns {
                    ": the rest lies outside the programs' own runs"
                } else {
                    ""
                }
            );
        }
        lines.push(line);
    }
    if let Some(c) = &r.control_plane {
        lines.push(format!(
            "An IPv4 allowlist entry really takes {:.0} B of kernel memory; the maps' \
             `memlock` says {:.0} B ({:.1}x less).",
            c.memory_v4.slab_per_entry,
            c.memory_v4.memlock_per_entry,
            c.memory_v4.slab_per_entry / c.memory_v4.memlock_per_entry
        ));
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Observations\n");
    for l in lines {
        let _ = writeln!(s, "- {l}");
    }
    s.push('\n');
}

fn per_packet(s: &mut String, t: &testrun::Results) {
    let _ = writeln!(s, "## Per-packet cost (BPF_PROG_TEST_RUN)\n");
    let _ = writeln!(
        s,
        "The kernel's mean time per run of the program, `repeat` = {} runs per call, median \
         of {} interleaved rounds, the thread pinned to CPU {} (other processes used {:.0}% \
         of that CPU meanwhile). guard is loaded {} times at each size and every load is \
         measured in every round: where the kernel places a program and its maps moves a \
         path's cost by up to 1 ns from one load to the next, which more rounds do not \
         average out. The **floor** is an XDP \
         program of two instructions (`r0 = XDP_DROP; exit`), loaded with a raw \
         `bpf(BPF_PROG_LOAD)` and run the same way: {:.0} ns, the cost of the harness itself \
         (an indirect call per run). \"x floor\" divides by it.\n",
        n(t.repeat as usize),
        t.rounds,
        t.cpu,
        t.others_busy * 100.0,
        testrun::LOADS,
        t.floor_ns
    );
    let _ = writeln!(
        s,
        "Allowlists: {{1, 1,000, 100,000}} random IPv4 prefixes (50% /32, 30% /24, 20% /16 to \
         /30, none inside 100.64.0.0/10) plus 10,000 random IPv6 prefixes (50% /128, 30% /64, \
         20% /32 to /60) at every size. A \"deepest miss\" is a /32 entry with its last bit \
         flipped, which walks the whole trie before it misses; the allowlisted source is that \
         /32 entry. guard's configuration is what `guard attach` writes (port 11211, top \
         talkers sampled one drop in 1,024); the rate-limit policy has guard's default limits \
         (10/20 per source, 100/200 per /24, 1000/2000 global).\n"
    );
    let _ = writeln!(
        s,
        "| Path | 1 IPv4 prefix | 1,000 IPv4 prefixes | 100,000 IPv4 prefixes |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- |");
    let _ = writeln!(
        s,
        "| floor: `r0 = XDP_DROP; exit` | {:.0} ns | | |",
        t.floor_ns
    );
    for r in t.rows.iter().filter(|r| r.id == "calibration") {
        let _ = writeln!(
            s,
            "| {} | {:.0} ns ({:.2}x) | | |",
            r.label, r.ns, r.x_floor
        );
    }
    for r in t.rows.iter().filter(|r| r.id == "xdp_filter") {
        let _ = writeln!(
            s,
            "| {} ({}) | {:.0} ns ({:.2}x) | | |",
            r.label, r.note, r.ns, r.x_floor
        );
    }
    for r in t.rows.iter().filter(|r| r.id == "reference") {
        let _ = writeln!(
            s,
            "| {} | | | {:.0} ns ({:.2}x) |",
            r.label, r.ns, r.x_floor
        );
    }
    let mut seen = Vec::new();
    for r in t.rows.iter().filter(|r| r.prefixes.is_some()) {
        if seen.contains(&r.id) {
            continue;
        }
        seen.push(r.id);
        if r.id.ends_with("_spoofed") {
            continue;
        }
        let cells: Vec<String> = testrun::SIZES
            .iter()
            .map(|&size| {
                tr_row(t, r.id, size).map_or("-".into(), |x| {
                    format!("{:.0} ns ({:.2}x)", x.ns, x.x_floor)
                })
            })
            .collect();
        let _ = writeln!(s, "| guard, {} | {} |", r.label, cells.join(" | "));
    }
    s.push('\n');

    let _ = writeln!(s, "### Spoofed floods: a distinct source on every run\n");
    let _ = writeln!(
        s,
        "BPF_PROG_TEST_RUN repeats one frame, so these rows make one call per frame and \
         rewrite the source address (and IPv4 checksum) between calls: {} distinct sources \
         from 100.64.0.0/10 per sweep, {} sweep(s), the mean of the kernel's per-call times. \
         A one-run call also times the harness's clock reads, so the floor here is the same \
         two-instruction program run the same way: {:.0} ns.\n",
        n(t.sweep_sources as usize),
        t.sweep_rounds,
        t.floor_single_ns
    );
    let _ = writeln!(
        s,
        "- *dropped, spoofed*: the drop policy; every frame is a new source, so one drop in 1,024 \
         (the default sampling) inserts into the top-talkers LRU (1,024 entries) and evicts.\n\
         - *rate-limited, spoofed*: the rate-limit policy with its global bucket empty (it is \
         drained with 5,000 other sources first). guard checks the global bucket first and, \
         when it is empty, refuses without touching the per-prefix or per-source LRU maps; \
         this is the path a spoofed flood takes. Only the global bucket's refill \
         (1,000/s) is admitted, and each admitted datagram does create bucket entries.\n"
    );
    let _ = writeln!(
        s,
        "| Path | 1 IPv4 prefix | 1,000 IPv4 prefixes | 100,000 IPv4 prefixes | Note (100,000) |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
    let _ = writeln!(
        s,
        "| floor, one run per call | {:.0} ns | | | |",
        t.floor_single_ns
    );
    for id in ["dropped_spoofed", "rate_limited_spoofed"] {
        let Some(first) = t.rows.iter().find(|r| r.id == id) else {
            continue;
        };
        let cells: Vec<String> = testrun::SIZES
            .iter()
            .map(|&size| {
                tr_row(t, id, size).map_or("-".into(), |x| {
                    format!("{:.0} ns ({:.2}x)", x.ns, x.x_floor)
                })
            })
            .collect();
        let note = tr_row(t, id, 100_000).map_or(String::new(), |x| x.note.clone());
        let _ = writeln!(
            s,
            "| guard, {} | {} | {note} |",
            first.label,
            cells.join(" | ")
        );
    }
    s.push('\n');
    if let Some(why) = &t.xdp_filter_skipped {
        let _ = writeln!(s, "xdp-filter was not measured: {why}\n");
    }
    let _ = writeln!(
        s,
        "The kernel reports whole nanoseconds per run (it divides the total by `repeat`), so \
         each repeated figure carries up to 1 ns of truncation: {:.0}% of this machine's \
         floor, against a 1.25x budget of {:.2} ns over it. guard's program: {}. \
         xdp-filter was loaded with `xdp-filter load --mode native` on a veth in a namespace \
         of the bench, told `xdp-filter port 11211 --proto udp`, and its program was held by \
         fd (found through `ip -d link`) and run like the others; in its default \"allow\" \
         policy it drops the listed port and does no per-source lookup, so it does less work \
         per frame than guard's allowlist check.\n",
        100.0 / t.floor_ns,
        0.25 * t.floor_ns,
        t.programs.get("guard").map_or("?".into(), |g| format!(
            "{} translated instructions, {} bytes JITed, {} instructions processed by the verifier",
            g["xlated_insns"], g["jited_bytes"], g["verified_insns"]
        ))
    );
    let _ = writeln!(
        s,
        "The **reference** is hand-assembled by the bench (`bpf::reference`: 48 instructions on \
         the deepest miss's path, one of them a map lookup, the counter's, that the verifier \
         inlines): the least work the per-packet targets ask for. It parses an untagged \
         Ethernet, IPv4 (no options, not a fragment) and UDP frame, compares the destination \
         port with 11211, reads guard's own IPv4 allowlist tables, addressed directly as guard \
         addresses them (the /16's row, then the /24's chunk), adds one to a per-CPU \
         counter of its verdict, and drops or passes; it must return guard's action for both \
         frames before it is timed. It has no denylist, policy, dry-run, byte or per-interface \
         counts and no top talkers, so it is a lower bound for guard's paths, not a guard.\n"
    );
}

fn throughput(s: &mut String, l: &live::Results) {
    let _ = writeln!(s, "## Throughput through veth (native XDP)\n");
    let _ = writeln!(
        s,
        "A generator namespace runs a two-instruction XDP_TX program with BPF_PROG_TEST_RUN \
         and `BPF_F_TEST_XDP_LIVE_FRAMES` (batches of 64) on its veth; every frame is \
         redirected into the peer veth in the DUT namespace, where the device under test \
         handles it in the same CPU's softirq. One generator thread per CPU, pinned, making \
         one long call per row that a signal ends (every LIVE_FRAMES call pays a fixed cost \
         outside its run loop, its page pool's setup and teardown: tens of milliseconds here, \
         hundreds when both CPUs generate; with short calls that idle time would dilute \
         every rate); {} s \
         measured after {} s of warm-up, in {} interleaved rounds (every configuration once \
         per round); each row shows its best round, since other work on the machine can only \
         lower a rate, and \"others busy\" is the share of the generator CPUs that other \
         work took in that round (the CPUs' busy time less the generator threads' own). Rates are frames received by the DUT's veth (the sum \
         of its `rx_queue_N_xdp_packets`), checked against the DUT's own counter (guard's \
         verdicts, veth's `xdp_drops`, the nft rule's counter), which must agree within 2%. \
         The ceiling is an XDP program that only drops (`r0 = XDP_DROP; exit`); the \
         reference is the per-packet part's hand-assembled least work, reading guard's own \
         tables, a lower bound for any guard. \"DUT ns\" \
         is the DUT's own cost per frame per CPU, 1/R - 1/R(ceiling). guard and nftables \
         hold the same {} IPv4 prefixes (nftables as an interval set with auto-merge, at the \
         netdev ingress hook of the DUT's veth, GRO on so that veth hands frames to the \
         stack). \"one source\" is the deepest-miss source; \"spoofed\" is a new random source \
         from 100.64.0.0/10 in every frame (the generator rewrites it and fixes the IPv4 \
         checksum).\n",
        l.measure_s,
        l.warmup_s,
        l.rounds,
        n(l.prefixes)
    );
    let cpus: Vec<usize> = {
        let mut c: Vec<usize> = l.rows.iter().map(|r| r.cpus).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let mut head = String::from("| DUT | Traffic |");
    let mut rule = String::from("| --- | --- |");
    for c in &cpus {
        let _ = write!(
            head,
            " {c} CPU: Mpps | % ceiling | x nft | DUT ns | others busy |"
        );
        rule.push_str(" --- | --- | --- | --- | --- |");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let mut keys: Vec<(&str, &str, &str)> = Vec::new();
    for r in &l.rows {
        let k = (r.dut, r.traffic, r.label.as_str());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (dut, traffic, label) in keys {
        let mut line = format!("| {label} | {} |", traffic.replace('_', " "));
        for &c in &cpus {
            match l
                .rows
                .iter()
                .find(|r| r.dut == dut && r.traffic == traffic && r.cpus == c)
            {
                Some(r) => {
                    let _ = write!(
                        line,
                        " {:.2} | {:.1}% | {} | {} | {:.0}% |",
                        r.mpps,
                        r.of_ceiling * 100.0,
                        r.x_nft.map_or("-".into(), |x| format!("{x:.1}x")),
                        if dut.starts_with("ceiling") {
                            "-".into()
                        } else {
                            format!("{:.0}", r.dut_ns)
                        },
                        r.others_busy * 100.0
                    );
                }
                None => line.push_str(" - | - | - | - | - |"),
            }
        }
        let _ = writeln!(s, "{line}");
    }
    s.push('\n');
    for r in l.rows.iter().filter(|r| r.dut == "ceiling") {
        let rounds: Vec<String> = r
            .rounds
            .iter()
            .map(|x| format!("{:.2} ({:.0}% busy)", x.mpps, x.others_busy * 100.0))
            .collect();
        let _ = writeln!(
            s,
            "Ceiling with {} CPU(s), Mpps by round: {}.",
            r.cpus,
            rounds.join(", ")
        );
    }
    s.push('\n');
    if let Some(why) = &l.xdp_filter_skipped {
        let _ = writeln!(s, "xdp-filter was not measured: {why}\n");
    }
    let x = &l.in_situ;
    let _ = writeln!(
        s,
        "The same programs timed run by run on veth1, in a pass of their own after the \
         rounds (1 generator CPU, one source, the kernel's run-time statistics on, which \
         put a clock read on either side of every run; median of {} rounds): the ceiling's \
         program {:.2} ns per run, guard's drop {:.2} ns more, the reference {:.2} ns more. \
         No rate above was measured with the statistics on.\n",
        x.rounds, x.ceiling_ns, x.guard_over_ceiling_ns, x.reference_over_ceiling_ns
    );
    let _ = writeln!(
        s,
        "veth rates are not NIC capacity: the generator costs more per frame than the DUT and \
         shares its CPU, which compresses XDP differences; the DUT ns column is the part that \
         carries over. The rate-limit rows pass the datagrams the limits admit (a handful per \
         second) to the stack; \"x nft\" compares every row with the nftables drop ruleset for \
         the same traffic. `benchmarks.json` beside this file has every round of every row.\n"
    );
}

fn control_plane(s: &mut String, c: &control::Results) {
    let _ = writeln!(s, "## Control plane\n");
    let _ = writeln!(s, "| Operation | Time |");
    let _ = writeln!(s, "| --- | --- |");
    let _ = writeln!(
        s,
        "| `lists::add` of {} IPv4 CIDRs, fresh unpinned maps (median of {}) | {:.3} s ({:.2} us per CIDR) |",
        n(c.cidrs),
        c.load_unpinned_samples.len(),
        c.load_unpinned_s,
        c.load_unpinned_s * 1e6 / c.cidrs as f64
    );
    let _ = writeln!(
        s,
        "| the same into the pinned maps of a guard attached with `guard attach` | {:.3} s |",
        c.load_pinned_s
    );
    let _ = writeln!(
        s,
        "| `lists::add` of {} IPv6 CIDRs | {:.3} s |",
        n(c.memory_v6.entries),
        c.load_v6_s
    );
    let _ = writeln!(
        s,
        "| one `guard allow CIDR`, whole process, {} prefixes already allowlisted (median of {}) | {:.2} ms |",
        n(c.cidrs),
        c.cli_allow_samples.len(),
        c.cli_allow_ms
    );
    let _ = writeln!(
        s,
        "| `true`, started the same way (process start-up alone) | {:.2} ms |",
        c.cli_true_ms
    );
    s.push('\n');
    let _ = writeln!(
        s,
        "| Allowlist memory | Kernel slab (measured) | `memlock` (kernel's estimate) |"
    );
    let _ = writeln!(s, "| --- | --- | --- |");
    for (name, m) in [("IPv4", &c.memory_v4), ("IPv6", &c.memory_v6)] {
        let _ = writeln!(
            s,
            "| {name}, {} entries | {:.0} B per entry ({:.1} MiB) | {:.0} B per entry |",
            n(m.entries),
            m.slab_per_entry,
            m.slab_per_entry * m.entries as f64 / f64::from(1u32 << 20),
            m.memlock_per_entry
        );
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "Memory is the growth of `SUnreclaim` in /proc/meminfo (unreclaimable slab, where BPF \
         map nodes are allocated) across the insertion into a freshly loaded guard, after \
         300 ms to let deferred allocations settle, median of the loads above; other \
         activity on the machine adds noise of a few bytes per entry. `memlock` is the sum \
         of the maps' `memlock` in /proc/self/fdinfo, before and after.\n"
    );
}

/// Writes BENCHMARKS.md and benchmarks.json into `dir`.
pub fn write(dir: &Path, r: &Report) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = dir.join("BENCHMARKS.md");
    fs::write(&md, markdown(r)).with_context(|| format!("writing {}", md.display()))?;
    let json = dir.join("benchmarks.json");
    fs::write(&json, serde_json::to_string_pretty(r)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    eprintln!("bench: wrote {} and {}", md.display(), json.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{extra_ns, more_ns};

    #[test]
    fn a_cheaper_step_is_not_a_negative_cost() {
        assert_eq!(more_ns(2.0), "2 ns more");
        assert_eq!(more_ns(0.0), "0 ns more");
        assert_eq!(more_ns(-1.0), "1 ns less (rounding: this row read cheaper)");
    }

    #[test]
    fn guard_cheaper_than_the_reference_is_spread_not_a_negative_cost() {
        assert_eq!(extra_ns(0.53), "0.53 ns");
        assert_eq!(
            extra_ns(-0.39),
            "0.39 ns less (the reference does a subset of guard's work: within the spread)"
        );
    }
}
