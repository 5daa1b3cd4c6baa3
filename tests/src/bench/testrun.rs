//! Per-packet cost with BPF_PROG_TEST_RUN: guard's paths at three allowlist sizes against a
//! program that only returns XDP_DROP (the floor of the harness) and against xdp-filter, all
//! in interleaved rounds of one run, the thread pinned to one CPU.
//!
//! Two kinds of measurement:
//! - *repeated*: one frame, `repeat` runs per syscall; the kernel reports the mean time per
//!   run. Same frame, same map keys: hot caches, best case.
//! - *sweeps*: one run per syscall over `sources` distinct spoofed sources (the frame is
//!   rewritten between calls), because BPF_PROG_TEST_RUN repeats one frame. Each call's
//!   duration then also holds the harness's per-call overhead (a clock read), so sweeps are
//!   compared with the floor measured the same way.

use std::{os::fd::AsFd as _, time::Instant};

use anyhow::{Context as _, ensure};
use guard_common::{Verdict, config::MEMCACHED_PORT, parse::ETH_P_8021Q};
use guard_tests::packets::{V4, ethernet, v4_probe, v6_probe};
use serde::Serialize;

use super::{
    Params,
    bpf::{self, XDP_DROP, XDP_PASS},
    guard::{Instance, Policy},
    prefixes::{Lists, set_v4_source, spoofed_source},
    sys, topo, xdpfilter,
};

/// One measured path.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Stable id (`dropped`, `allowlisted`, ...).
    pub id: &'static str,
    /// What the row measures.
    pub label: &'static str,
    /// IPv4 allowlist size (the IPv6 allowlist holds 10,000 prefixes throughout); `None` for
    /// baselines.
    pub prefixes: Option<usize>,
    /// Median over rounds (and loads) of the kernel's mean ns per run.
    pub ns: f64,
    /// Median over rounds of wall-clock ns per run (syscall included; repeated rows only).
    pub wall_ns: Option<f64>,
    /// `ns` over the floor measured the same way.
    pub x_floor: f64,
    /// `ns` minus that floor.
    pub over_floor_ns: f64,
    /// Repeated rows: the median over rounds of each round's value against that round's own
    /// floor (the mean of the floor readings before and after it), which takes out the VM's
    /// slow and fast phases that a ratio of medians mixes.
    pub x_floor_paired: Option<f64>,
    /// Every value behind `ns`: the rounds in order; in repeated rows of guard, one value per
    /// load (`LOADS`) in each round.
    pub samples: Vec<f64>,
    /// Anything worth knowing about the row (admitted share, program name).
    pub note: String,
}

/// Everything this part measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Runs per syscall in repeated rows.
    pub repeat: u32,
    /// Rounds of repeated rows.
    pub rounds: usize,
    /// Distinct sources per sweep.
    pub sweep_sources: u32,
    /// Rounds of sweeps.
    pub sweep_rounds: usize,
    /// The CPU the thread was pinned to.
    pub cpu: usize,
    /// The floor, repeated (ns per run).
    pub floor_ns: f64,
    /// The floor, one run per syscall (ns per call).
    pub floor_single_ns: f64,
    /// The floor of each round of repeated rows: the mean of its readings before and after
    /// the round.
    pub floor_rounds: Vec<f64>,
    /// Repeated rows (guard's paths, xdp-filter), then sweeps.
    pub rows: Vec<Row>,
    /// Program facts: guard's instruction counts, xdp-filter's program.
    pub programs: serde_json::Value,
    /// Why xdp-filter is missing, when it is.
    pub xdp_filter_skipped: Option<String>,
    /// Share of the pinned CPU that other work took while measuring.
    pub others_busy: f64,
    /// The floor, the reference and guard at 100,000 prefixes timed run by run.
    pub timed: Timed,
}

/// The dropped and allowlisted paths (in that order) timed run by run by the kernel's run-time
/// statistics (BPF_ENABLE_STATS): sub-nanosecond means, where the repeated rows are whole
/// nanoseconds. Each run then pays a clock read on either side and runs alone, its latency
/// exposed, so these are costs over this harness's own floor, not ratios to compare with 1.25x.
#[derive(Debug, Serialize)]
pub struct Timed {
    /// The floor program, ns per run (clock reads included).
    pub floor_ns: f64,
    /// The reference's paths, ns per run over that floor (median over rounds).
    pub reference_over_floor_ns: Vec<f64>,
    /// guard's paths at 100,000 prefixes, ns per run over that floor (median over rounds and
    /// loads).
    pub guard_over_floor_ns: Vec<f64>,
}

/// A path through guard: a frame, the policy it is judged under, and its verdict.
pub struct Path {
    /// Stable id (`dropped`, `allowlisted`, ...).
    pub id: &'static str,
    /// What the path is.
    pub label: &'static str,
    /// guard's policy for the path.
    pub policy: Policy,
    /// The frame.
    pub frame: Vec<u8>,
    /// guard's verdict on it.
    pub expect: Verdict,
}

/// The measured paths, with frames built from `lists`.
pub fn paths(lists: &Lists) -> Vec<Path> {
    let miss = V4::from(lists.v4_deep_miss());
    let hit = V4::from(lists.v4_hit());
    vec![
        Path {
            id: "dropped",
            label: "dropped: not allowlisted (deepest miss), drop policy",
            policy: Policy::Drop,
            frame: v4_probe(&[], miss, MEMCACHED_PORT),
            expect: Verdict::DroppedNotAllowlisted,
        },
        Path {
            id: "dropped_recorded",
            label: "dropped (deepest miss), every drop recorded in top talkers (--top-sample 1): a record's cost",
            policy: Policy::DropRecordEvery,
            frame: v4_probe(&[], miss, MEMCACHED_PORT),
            expect: Verdict::DroppedNotAllowlisted,
        },
        Path {
            id: "dropped_shallow",
            label: "dropped: not allowlisted, from 100.64.0.0/10 where no prefix is (one table lookup)",
            policy: Policy::Drop,
            frame: v4_probe(&[], V4::from([100, 64, 7, 9]), MEMCACHED_PORT),
            expect: Verdict::DroppedNotAllowlisted,
        },
        Path {
            id: "allowlisted",
            label: "allowlisted (a /32 at full depth): passes",
            policy: Policy::Drop,
            frame: v4_probe(&[], hit, MEMCACHED_PORT),
            expect: Verdict::Allowlisted,
        },
        Path {
            id: "not_protected",
            label: "not protected: UDP to port 53, passes",
            policy: Policy::Drop,
            frame: v4_probe(&[], miss, 53),
            expect: Verdict::NotProtected,
        },
        Path {
            id: "not_ip",
            label: "not protected: an ARP frame, passes (not plain IPv4: the header-by-header parse)",
            policy: Policy::Drop,
            frame: [ethernet(&[], 0x0806).as_slice(), &[0u8; 28]].concat(),
            expect: Verdict::NotProtected,
        },
        Path {
            id: "ipv6_dropped",
            label: "IPv6 dropped (deepest miss in 10,000 IPv6 prefixes)",
            policy: Policy::Drop,
            frame: v6_probe(
                lists.v6_deep_miss(),
                guard_common::parse::IPPROTO_UDP,
                &[],
                MEMCACHED_PORT,
            ),
            expect: Verdict::DroppedNotAllowlisted,
        },
        Path {
            id: "vlan_dropped",
            label: "802.1Q-tagged, dropped (deepest miss)",
            policy: Policy::Drop,
            frame: v4_probe(&[ETH_P_8021Q], miss, MEMCACHED_PORT),
            expect: Verdict::DroppedNotAllowlisted,
        },
        Path {
            id: "rate_limited",
            label: "rate-limited: one source over its per-source limit (default limits)",
            policy: Policy::RateLimit,
            frame: v4_probe(&[], miss, MEMCACHED_PORT),
            expect: Verdict::RateLimited,
        },
    ]
}

/// Independent ALU instructions added to the floor in the calibration rows.
pub const CALIBRATION_INSNS: [usize; 2] = [64, 128];
const CALIBRATION_LABELS: [&str; 2] = [
    "calibration: the floor plus 64 independent ALU instructions",
    "calibration: the floor plus 128 independent ALU instructions",
];

/// guard's paths that the reference ([`bpf::reference`]) is measured on, with 100,000
/// prefixes, and their labels.
const REFERENCE_PATHS: [(&str, &str); 2] = [
    (
        "dropped",
        "reference, the least work of the targets (hand-assembled, see below): dropped, deepest miss in 100,000 prefixes",
    ),
    (
        "allowlisted",
        "reference: allowlisted (a /32 at full depth in 100,000 prefixes)",
    ),
];

/// The XDP action guard returns for `verdict`.
fn xdp_action(verdict: Verdict) -> u32 {
    match verdict.action() {
        guard_common::Action::Drop => XDP_DROP,
        guard_common::Action::Pass => XDP_PASS,
    }
}

/// Loads of guard at each size in the repeated rows. Where the kernel places a program and
/// its maps moves a path's cost by up to a nanosecond from one load to the next, however many
/// rounds are run; so every repeated row is measured on this many loads, each in every round,
/// and its median is over all of their values.
pub const LOADS: usize = 3;

/// IPv4 allowlist sizes of the table.
pub const SIZES: [usize; 3] = [1, 1_000, 100_000];
/// The pinned CPU.
const CPU: usize = 1;

/// Runs the whole part.
pub fn run(p: &Params, lists: &Lists) -> anyhow::Result<Results> {
    let cpu = CPU.min(sys::cpus() - 1);
    sys::on_cpu(cpu, || measure(p, lists, cpu))
}

/// Checks that `g` gives every path its verdict (spending the rate-limited source's burst
/// first), so that no row times the wrong work.
pub fn verify_paths(g: &mut Instance, paths: &[Path]) -> anyhow::Result<()> {
    for path in paths {
        g.set_policy(path.policy)?;
        if path.expect == Verdict::RateLimited {
            // Spend the source's burst first.
            g.run(&path.frame, 100)?;
        }
        g.verify(&path.frame, path.expect).context(path.id)?;
    }
    Ok(())
}

fn measure(p: &Params, lists: &Lists, cpu: usize) -> anyhow::Result<Results> {
    let paths = paths(lists);
    let dropped_frame = paths[0].frame.clone();

    // The floor: r0 = XDP_DROP; exit.
    let floor = bpf::load_xdp("gb_floor", &bpf::return_only(XDP_DROP))?;
    let r = bpf::test_run(floor.as_fd(), &dropped_frame, 1)?;
    ensure!(
        r.retval == XDP_DROP,
        "the floor program returned {}",
        r.retval
    );

    // The calibration: the floor plus independent ALU instructions.
    let ladders = CALIBRATION_INSNS
        .iter()
        .map(|&n| bpf::load_xdp("gb_alu", &bpf::alu_ladder(n, XDP_DROP)))
        .collect::<Result<Vec<_>, _>>()?;

    // xdp-filter: loaded on a veth in a namespace of ours, its program kept by fd, unloaded.
    let mut programs = serde_json::Map::new();
    let mut filters = Vec::new();
    let mut xdp_filter_skipped = None;
    match xdp_filter_programs(&dropped_frame) {
        Ok(list) => {
            for (label, name, fd) in list {
                programs.insert(label.to_owned(), serde_json::json!({"name": name}));
                filters.push((label, name, fd));
            }
        }
        Err(e) => {
            eprintln!("bench: xdp-filter skipped: {e:#}");
            xdp_filter_skipped = Some(format!("{e:#}"));
        }
    }

    // guard at each size; the IPv6 allowlist is the same 10,000 prefixes at every size.
    let mut guards = Vec::new();
    // More loads of each size, for the repeated rows only (see `LOADS`).
    let mut more_loads: Vec<Vec<Instance>> = Vec::new();
    for &n in &SIZES {
        eprintln!(
            "bench: loading guard with {n} IPv4 + {} IPv6 prefixes ({LOADS} times)",
            lists.v6.len()
        );
        let mut loads = Vec::new();
        for _ in 0..LOADS {
            let mut g = Instance::load(&lists.allowlist(n), Policy::Drop)?;
            verify_paths(&mut g, &paths).with_context(|| format!("{n} prefixes"))?;
            loads.push(g);
        }
        guards.push(loads.remove(0));
        more_loads.push(loads);
    }
    programs.insert("guard".into(), guards[0].facts()?);

    // The reference: the least work of the targets, hand-assembled, reading the tables of the
    // guard with the most prefixes. It must judge the measured frames as guard does.
    let reference = guards
        .last_mut()
        .context("no guard loaded")?
        .load_reference()?;
    let reference_paths: Vec<&Path> = REFERENCE_PATHS
        .iter()
        .map(|(id, _)| paths.iter().find(|p| p.id == *id).expect("a measured path"))
        .collect();
    for path in &reference_paths {
        let r = bpf::test_run(reference.as_fd(), &path.frame, 1)?;
        let want = xdp_action(path.expect);
        ensure!(
            r.retval == want,
            "the reference returned {} for the {} frame, not {want}",
            r.retval,
            path.id
        );
    }

    // Repeated rows, interleaved: every round measures everything once.
    let cpu_start = sys::cpu_times()?;
    let own_start = sys::thread_cpu_ns();
    let mut floor_samples = Vec::new();
    let mut filter_samples = vec![Vec::new(); filters.len()];
    let mut ladder_samples = vec![Vec::new(); ladders.len()];
    let mut reference_samples = vec![Vec::new(); reference_paths.len()];
    let mut samples = vec![vec![Vec::new(); paths.len()]; SIZES.len()];
    let mut walls = vec![vec![Vec::new(); paths.len()]; SIZES.len()];
    for round in 0..p.rounds {
        sys::check_interrupted()?;
        eprintln!("bench: test-run round {}/{}", round + 1, p.rounds);
        floor_samples.push(f64::from(
            bpf::test_run(floor.as_fd(), &dropped_frame, p.repeat)?.duration_ns,
        ));
        for (i, fd) in ladders.iter().enumerate() {
            let r = bpf::test_run(fd.as_fd(), &dropped_frame, p.repeat)?;
            ensure!(
                r.retval == XDP_DROP,
                "the calibration returned {}",
                r.retval
            );
            ladder_samples[i].push(f64::from(r.duration_ns));
        }
        for (i, path) in reference_paths.iter().enumerate() {
            let r = bpf::test_run(reference.as_fd(), &path.frame, p.repeat)?;
            reference_samples[i].push(f64::from(r.duration_ns));
        }
        for (i, (_, _, fd)) in filters.iter().enumerate() {
            let r = bpf::test_run(fd.as_fd(), &dropped_frame, p.repeat)?;
            ensure!(r.retval == XDP_DROP, "xdp-filter returned {}", r.retval);
            filter_samples[i].push(f64::from(r.duration_ns));
        }
        for (s, (g, more)) in guards.iter_mut().zip(&mut more_loads).enumerate() {
            for g in std::iter::once(g).chain(more.iter_mut()) {
                for (k, path) in paths.iter().enumerate() {
                    g.set_policy(path.policy)?;
                    let t = Instant::now();
                    let (ret, ns) = g.run(&path.frame, p.repeat)?;
                    let wall = t.elapsed().as_nanos() as f64 / f64::from(p.repeat);
                    let want = xdp_action(path.expect);
                    ensure!(ret == want, "{}: guard returned {ret}, not {want}", path.id);
                    samples[s][k].push(f64::from(ns));
                    walls[s][k].push(wall);
                }
            }
        }
        floor_samples.push(f64::from(
            bpf::test_run(floor.as_fd(), &dropped_frame, p.repeat)?.duration_ns,
        ));
    }
    let floor_ns = sys::median(&floor_samples);
    let floor_rounds: Vec<f64> = floor_samples
        .chunks(2)
        .map(|pair| pair.iter().sum::<f64>() / pair.len() as f64)
        .collect();
    let repeated = |mut r: Row| {
        r.x_floor_paired = Some(paired(&r.samples, &floor_rounds));
        r
    };
    let mut rows = Vec::new();
    for (i, &n) in CALIBRATION_INSNS.iter().enumerate() {
        rows.push(repeated(row(
            "calibration",
            CALIBRATION_LABELS[i],
            None,
            &ladder_samples[i],
            None,
            floor_ns,
            format!("{n} ALU instructions"),
        )));
    }
    for (i, (_, label)) in REFERENCE_PATHS.iter().enumerate() {
        rows.push(repeated(row(
            "reference",
            label,
            None,
            &reference_samples[i],
            None,
            floor_ns,
            String::new(),
        )));
    }
    for (i, (label, name, _)) in filters.iter().enumerate() {
        rows.push(repeated(row(
            "xdp_filter",
            label,
            None,
            &filter_samples[i],
            None,
            floor_ns,
            format!("program {name}"),
        )));
    }
    for (k, path) in paths.iter().enumerate() {
        for (s, &n) in SIZES.iter().enumerate() {
            rows.push(repeated(row(
                path.id,
                path.label,
                Some(n),
                &samples[s][k],
                Some(sys::median(&walls[s][k])),
                floor_ns,
                String::new(),
            )));
        }
    }

    // The same programs timed run by run (the kernel's run-time statistics), for fractions of
    // a nanosecond that the whole-ns figures above cannot show.
    let timed = {
        let _stats = bpf::enable_run_stats().context("BPF_ENABLE_STATS")?;
        let dropped = paths
            .iter()
            .position(|p| p.id == "dropped")
            .context("dropped path")?;
        let allowlisted = paths
            .iter()
            .position(|p| p.id == "allowlisted")
            .context("allowlisted path")?;
        let mut floor_t = Vec::new();
        let mut reference_t = vec![Vec::new(); reference_paths.len()];
        let mut guard_t = [Vec::new(), Vec::new()];
        let big = SIZES.len() - 1;
        for _ in 0..p.rounds {
            sys::check_interrupted()?;
            floor_t.push(bpf::timed_run(floor.as_fd(), &dropped_frame, p.repeat)?);
            for (i, path) in reference_paths.iter().enumerate() {
                reference_t[i].push(bpf::timed_run(reference.as_fd(), &path.frame, p.repeat)?);
            }
            let (first, more) = (&mut guards[big], &mut more_loads[big]);
            for g in std::iter::once(first).chain(more.iter_mut()) {
                g.set_policy(Policy::Drop)?;
                for (j, &k) in [dropped, allowlisted].iter().enumerate() {
                    let fd = g.prog_fd()?;
                    guard_t[j].push(bpf::timed_run(fd, &paths[k].frame, p.repeat)?);
                }
            }
        }
        let floor = sys::median(&floor_t);
        Timed {
            floor_ns: floor,
            reference_over_floor_ns: reference_t.iter().map(|v| sys::median(v) - floor).collect(),
            guard_over_floor_ns: guard_t.iter().map(|v| sys::median(v) - floor).collect(),
        }
    };

    // Sweeps over distinct spoofed sources, one run per syscall.
    let mut floor1 = Vec::new();
    let mut sweep_samples = vec![vec![Vec::new(); SIZES.len()]; 2];
    let mut admitted = vec![vec![0u64; SIZES.len()]; 2];
    let sweeps = [Policy::Drop, Policy::RateLimit];
    let mut frame = dropped_frame.clone();
    for g in &mut guards {
        // Empty the global bucket first, with sources other than the measured ones.
        g.set_policy(Policy::RateLimit)?;
        sweep(p.sweep_sources..p.sweep_sources + 5_000, &mut frame, |f| {
            g.run(f, 1)
        })?;
    }
    for round in 0..p.sweep_rounds {
        let started = Instant::now();
        eprintln!(
            "bench: sweep round {}/{} ({} sources per sweep)",
            round + 1,
            p.sweep_rounds,
            p.sweep_sources
        );
        let (ns, drops) = sweep(0..p.sweep_sources, &mut frame, |f| {
            let r = bpf::test_run(floor.as_fd(), f, 1)?;
            Ok((r.retval, r.duration_ns))
        })?;
        ensure!(
            drops == u64::from(p.sweep_sources),
            "the floor passed frames"
        );
        floor1.push(ns);
        for (s, g) in guards.iter_mut().enumerate() {
            for (k, policy) in sweeps.iter().enumerate() {
                sys::check_interrupted()?;
                g.set_policy(*policy)?;
                let before = g.test_run_totals()?;
                let (ns, drops) = sweep(0..p.sweep_sources, &mut frame, |f| g.run(f, 1))?;
                let after = g.test_run_totals()?;
                let passed = after.get(Verdict::RatePassed).packets
                    - before.get(Verdict::RatePassed).packets;
                ensure!(
                    drops + passed == u64::from(p.sweep_sources),
                    "sweep {policy:?} at {} prefixes: {drops} dropped and {passed} admitted of {}",
                    SIZES[s],
                    p.sweep_sources
                );
                admitted[k][s] += passed;
                sweep_samples[k][s].push(ns);
            }
        }
        eprintln!(
            "bench:   {:.1} s per sweep round",
            started.elapsed().as_secs_f64()
        );
    }
    let floor_single_ns = sys::median(&floor1);
    let others_busy = sys::others_busy(
        &cpu_start,
        &sys::cpu_times()?,
        &[cpu],
        sys::thread_cpu_ns() - own_start,
    );
    let total = u64::from(p.sweep_sources) * p.sweep_rounds as u64;
    for (k, (id, label)) in [
        (
            "dropped_spoofed",
            "dropped, spoofed flood: a new source every run (drop policy)",
        ),
        (
            "rate_limited_spoofed",
            "rate-limited, spoofed flood: a new source every run, global bucket empty",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        for (s, &n) in SIZES.iter().enumerate() {
            let note = if k == 1 {
                format!(
                    "{:.3}% admitted (the global bucket's refill)",
                    admitted[k][s] as f64 * 100.0 / total as f64
                )
            } else {
                String::new()
            };
            rows.push(row(
                id,
                label,
                Some(n),
                &sweep_samples[k][s],
                None,
                floor_single_ns,
                note,
            ));
        }
    }
    Ok(Results {
        repeat: p.repeat,
        rounds: p.rounds,
        sweep_sources: p.sweep_sources,
        sweep_rounds: p.sweep_rounds,
        cpu,
        floor_ns,
        floor_single_ns,
        floor_rounds,
        rows,
        programs: serde_json::Value::Object(programs),
        xdp_filter_skipped,
        others_busy,
        timed,
    })
}

fn row(
    id: &'static str,
    label: &'static str,
    prefixes: Option<usize>,
    samples: &[f64],
    wall_ns: Option<f64>,
    floor: f64,
    note: String,
) -> Row {
    let ns = sys::median(samples);
    Row {
        id,
        label,
        prefixes,
        ns,
        wall_ns,
        x_floor: ns / floor,
        over_floor_ns: ns - floor,
        x_floor_paired: None,
        samples: samples.to_vec(),
        note,
    }
}

/// The median of each sample against its round's floor: `samples` holds the rounds in order,
/// the same number of values in each (one per load).
fn paired(samples: &[f64], floors: &[f64]) -> f64 {
    let per = (samples.len() / floors.len().max(1)).max(1);
    let ratios: Vec<f64> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| s / floors[(i / per).min(floors.len() - 1)])
        .collect();
    sys::median(&ratios)
}

/// One run per source `i` in `range` (the frame rewritten each time): the mean kernel ns per
/// run, and how many runs returned XDP_DROP.
fn sweep(
    range: std::ops::Range<u32>,
    frame: &mut [u8],
    mut run: impl FnMut(&[u8]) -> anyhow::Result<(u32, u32)>,
) -> anyhow::Result<(f64, u64)> {
    let mut sum = 0u64;
    let mut drops = 0u64;
    let n = range.len();
    for i in range {
        set_v4_source(frame, spoofed_source(i));
        let (ret, ns) = run(frame)?;
        sum += u64::from(ns);
        drops += u64::from(ret == XDP_DROP);
        if i % 65_536 == 0 {
            sys::check_interrupted()?;
        }
    }
    Ok((sum as f64 / n as f64, drops))
}

/// xdp-filter's programs (default features, then `-f udp`), loaded on a veth of a namespace
/// of ours and held by fd after xdp-filter is unloaded; each checked to drop `frame`.
fn xdp_filter_programs(
    frame: &[u8],
) -> anyhow::Result<Vec<(&'static str, String, std::os::fd::OwnedFd)>> {
    xdpfilter::version().context("xdp-filter is not installed")?;
    let ns = topo::netns("xf")?;
    topo::veth(
        &topo::End {
            ns: &ns,
            name: "xf0",
            mac: "02:00:00:00:00:11",
        },
        &topo::End {
            ns: &ns,
            name: "xf1",
            mac: "02:00:00:00:00:12",
        },
        1,
    )?;
    let mut out = Vec::new();
    for (label, features) in [
        (
            "xdp-filter, default features (all), port 11211/udp denied",
            None,
        ),
        (
            "xdp-filter -f udp (its leanest program), port 11211/udp denied",
            Some("udp"),
        ),
    ] {
        let loaded = xdpfilter::load(&ns, "xf1", features)?;
        let fd = loaded.prog_fd()?;
        let name = loaded.prog_name.clone();
        drop(loaded);
        let r = bpf::test_run(fd.as_fd(), frame, 1)?;
        ensure!(
            r.retval == XDP_DROP,
            "{name} returned {} for UDP to 11211, not XDP_DROP",
            r.retval
        );
        out.push((label, name, fd));
    }
    Ok(out)
}
