//! Throughput through a veth pair in native XDP mode.
//!
//! A generator namespace runs a tiny XDP_TX program with BPF_PROG_TEST_RUN and
//! BPF_F_TEST_XDP_LIVE_FRAMES on its end (`veth0`); every frame is redirected into the peer
//! (`veth1`, in the DUT namespace), where the device under test sees it: guard, xdp-filter, an
//! nftables netdev-ingress ruleset, or an XDP program that only drops (the ceiling). One
//! generator thread per CPU, pinned, making one long call per row that a signal ends; the DUT
//! runs in the same CPU's softirq, so each rate is generator plus DUT, and the DUT's own cost
//! is 1/R - 1/R(ceiling).
//!
//! Rates are counted at the receiver: the sum of veth1's `rx_queue_N_xdp_packets` (every frame
//! its NAPI handled, with or without an XDP program), checked against the DUT's own counters
//! (guard's verdict counters, the nft rule's counter, veth's `xdp_drops`).
//!
//! A last pass times the XDP programs themselves run by run (`InSitu`), to separate what a
//! program costs from the spread of the rates.

use std::{
    fs,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
    thread,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};
use guard_common::{Verdict, config::MEMCACHED_PORT};
use guard_tests::{
    lab::{Netns, run_ok},
    packets::{V4, v4_probe},
};
use serde::Serialize;
use serde_json::Value;

use super::{
    Params,
    bpf::{self, XDP_DROP, XDP_FLAGS_DRV_MODE, XDP_TX},
    guard::{Instance, Policy},
    prefixes::{self, Lists, SPOOF_NET},
    sys, topo, xdpfilter,
};

/// IPv4 allowlist size of every DUT.
pub const PREFIXES: usize = 100_000;
/// Runs per generator call: more than any measurement sends. Each generator makes one call per
/// row and is interrupted by a signal when the row is done. Every LIVE_FRAMES call pays a fixed
/// cost outside its run loop (its page pool's setup and teardown, which waits for an RCU grace
/// period: tens of milliseconds with one CPU, hundreds with both busy), during which nothing is
/// sent; with one call per row, none of it falls inside the measured interval.
const GEN_REPEAT: u32 = u32::MAX;
/// Frames per LIVE_FRAMES batch (the kernel's default).
const GEN_BATCH: u32 = 64;
/// The reference's row (see `bpf::reference`).
const REFERENCE_LABEL: &str =
    "reference, the least work of the targets (hand-assembled; not a guard): dropped";

/// One measured configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `ceiling`, `guard_drop`, `guard_rate`, `reference`, `xdp_filter`, `nft`.
    pub dut: &'static str,
    /// What ran on veth1.
    pub label: String,
    /// `one_source` or `spoofed`.
    pub traffic: &'static str,
    /// Generator CPUs.
    pub cpus: usize,
    /// Received frames per second, millions: the best round (interference only lowers it).
    pub mpps: f64,
    /// Share of the ceiling at the same CPU count.
    pub of_ceiling: f64,
    /// DUT ns per frame per CPU over the ceiling's.
    pub dut_ns: f64,
    /// Ratio to nftables at the same CPU count and traffic.
    pub x_nft: Option<f64>,
    /// Share of the generator CPUs that other work took in that round.
    pub others_busy: f64,
    /// Every round.
    pub rounds: Vec<Round>,
    /// Frames received during the best round (warm-up included).
    pub received: u64,
    /// Frames the DUT's own counter saw then (drops, or guard's verdicts).
    pub dut_counted: u64,
}

/// One round of a row.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Round {
    /// Received frames per second, millions.
    pub mpps: f64,
    /// Share of the generator CPUs that other work took.
    pub others_busy: f64,
}

/// Everything this part measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Seconds of warm-up before each measurement.
    pub warmup_s: f64,
    /// Seconds measured per row and round.
    pub measure_s: f64,
    /// Interleaved rounds.
    pub rounds: usize,
    /// IPv4 prefixes in guard's allowlist and nft's set.
    pub prefixes: usize,
    /// The rows, in the order run.
    pub rows: Vec<Row>,
    /// Wall time of `nft -f` loading the ruleset with the 100,000-prefix interval set
    /// (median over rounds).
    pub nft_load_s: f64,
    /// Why xdp-filter is missing, when it is.
    pub xdp_filter_skipped: Option<String>,
    /// The XDP programs on veth1 timed run by run while the generator sends (one CPU).
    pub in_situ: InSitu,
}

/// The DUT programs' own time per frame through veth, timed run by run by the kernel's
/// run-time statistics (BPF_ENABLE_STATS) in a pass of its own after the rounds, with one
/// generator CPU: each run pays a clock read on either side, so only differences between
/// programs mean anything, but they are read to a fraction of a nanosecond, free of the
/// generator's share of each rate.
#[derive(Debug, Serialize)]
pub struct InSitu {
    /// The ceiling's ns per run (the clock reads' cost and the program's two instructions),
    /// median over rounds.
    pub ceiling_ns: f64,
    /// guard's (drop policy, one source) ns per run over the ceiling's, median over rounds.
    pub guard_over_ceiling_ns: f64,
    /// The reference's ns per run over the ceiling's, median over rounds.
    pub reference_over_ceiling_ns: f64,
    /// Rounds.
    pub rounds: usize,
    /// Every round's ns per run of the ceiling, guard and the reference.
    pub samples: Vec<[f64; 3]>,
}

impl InSitu {
    /// What guard's own runs cost a frame beyond the reference's.
    pub fn guard_extra_ns(&self) -> f64 {
        self.guard_over_ceiling_ns - self.reference_over_ceiling_ns
    }
}

struct Lab {
    sender: Netns,
    dut: Netns,
    gen_if: u32,
    dut_if: u32,
}

const DUT_IF: &str = "veth1";

fn lab(queues: usize) -> anyhow::Result<Lab> {
    let sender = topo::netns("gen")?;
    let dut = topo::netns("dut")?;
    // MACs and addresses of the frame builders: 02:..:01 -> 02:..:02, to 198.51.100.1.
    let (gen_if, dut_if) = topo::veth(
        &topo::End {
            ns: &sender,
            name: "veth0",
            mac: "02:00:00:00:00:01",
        },
        &topo::End {
            ns: &dut,
            name: DUT_IF,
            mac: "02:00:00:00:00:02",
        },
        queues,
    )?;
    sender.add_addr("veth0", "198.51.100.2/24")?;
    dut.add_addr(DUT_IF, "198.51.100.1/24")?;
    Ok(Lab {
        sender,
        dut,
        gen_if,
        dut_if,
    })
}

/// What the generators send.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Traffic {
    /// One non-allowlisted source (the deepest miss).
    OneSource,
    /// A new random source in 100.64.0.0/10 every frame, checksums fixed.
    Spoofed,
}

impl Traffic {
    fn id(self) -> &'static str {
        match self {
            Traffic::OneSource => "one_source",
            Traffic::Spoofed => "spoofed",
        }
    }
}

struct Generators {
    one: OwnedFd,
    spoof: OwnedFd,
    one_frame: Vec<u8>,
    spoof_frame: Vec<u8>,
}

/// Counter readings at one instant.
struct Reading {
    at: Instant,
    received: u64,
    dut: u64,
    cpu: sys::CpuTimes,
    own_cpu_ns: u64,
}

/// One measurement of one row.
struct Sample {
    mpps: f64,
    others_busy: f64,
    received: u64,
    dut_counted: u64,
}

/// Runs the whole part.
pub fn run(p: &Params, lists: &Lists) -> anyhow::Result<Results> {
    let cpus = sys::cpus();
    let cpu_sets: Vec<Vec<usize>> = if cpus >= 2 {
        vec![vec![1], vec![0, 1]]
    } else {
        vec![vec![0]]
    };
    let lab = lab(cpu_sets.last().map_or(1, Vec::len))?;
    let gens = Generators {
        one: bpf::load_xdp("gb_gen_tx", &bpf::return_only(XDP_TX))?,
        spoof: bpf::load_xdp("gb_gen_spoof", &bpf::spoofing_tx(SPOOF_NET))?,
        one_frame: v4_probe(&[], V4::from(lists.v4_deep_miss()), MEMCACHED_PORT),
        spoof_frame: v4_probe(&[], V4::from(SPOOF_NET), MEMCACHED_PORT),
    };
    check_spoofing(&gens)?;
    let nop = bpf::load_xdp("gb_ceiling", &bpf::return_only(XDP_DROP))?;
    let mut guard = Instance::load(&lists.allowlist(PREFIXES), Policy::Drop)?;
    let guard_fd = guard.prog_fd()?.try_clone_to_owned()?;
    // The per-packet part's reference (the least work of the targets, hand-assembled), on
    // guard's own tables: how close to the ceiling any guard's least work gets through veth.
    let reference = guard.load_reference()?;
    let r = bpf::test_run(reference.as_fd(), &gens.one_frame, 1)?;
    ensure!(
        r.retval == XDP_DROP,
        "the reference returned {} for the generator's frame, not XDP_DROP",
        r.retval
    );
    let has_xdp_filter = xdpfilter::version().is_some();
    let mut xdp_filter_skipped =
        (!has_xdp_filter).then(|| "xdp-filter is not installed".to_owned());
    let mut nft_loads = Vec::new();

    let mut rows: Vec<Row> = Vec::new();
    let measure = |rows: &mut Vec<Row>,
                   dut: &'static str,
                   label: &str,
                   traffic: Traffic,
                   counter: &mut dyn FnMut() -> anyhow::Result<u64>|
     -> anyhow::Result<()> {
        for set in &cpu_sets {
            let x = measure_once(&lab, &gens, p, set, label, traffic, counter)?;
            eprintln!(
                "bench:   {label}, {}, {} CPU(s): {:.3} Mpps, DUT counted {:.1}%, others busy {:.0}%",
                traffic.id().replace('_', " "),
                set.len(),
                x.mpps,
                x.dut_counted as f64 * 100.0 / x.received.max(1) as f64,
                x.others_busy * 100.0
            );
            record(rows, dut, label, traffic, set.len(), &x);
        }
        Ok(())
    };

    let ceiling_label = "XDP program that only drops (r0 = XDP_DROP; exit)";
    for round in 0..p.live_rounds {
        eprintln!("bench: veth round {}/{}", round + 1, p.live_rounds);
        // The ceiling: an XDP program that only drops.
        {
            let _link = attach(&lab, nop.as_fd())?;
            measure(
                &mut rows,
                "ceiling",
                ceiling_label,
                Traffic::OneSource,
                &mut || xdp_drops(&lab),
            )?;
        }
        // guard with 100,000 IPv4 (and 10,000 IPv6) prefixes.
        {
            let _link = attach(&lab, guard_fd.as_fd())?;
            for (policy, dut, label) in [
                (Policy::Drop, "guard_drop", "guard, drop policy"),
                (
                    Policy::RateLimit,
                    "guard_rate",
                    "guard, rate-limit policy (default limits)",
                ),
            ] {
                guard.set_policy(policy)?;
                for traffic in [Traffic::OneSource, Traffic::Spoofed] {
                    let maps = &guard.maps;
                    measure(&mut rows, dut, label, traffic, &mut || {
                        let t = guard_user::stats::Totals::read(maps)?;
                        Ok(t.get(Verdict::DroppedNotAllowlisted).packets
                            + t.get(Verdict::RateLimited).packets
                            + t.get(Verdict::RatePassed).packets)
                    })?;
                }
            }
        }
        // The reference, counted by veth's xdp_drops like the ceiling.
        {
            let _link = attach(&lab, reference.as_fd())?;
            measure(
                &mut rows,
                "reference",
                REFERENCE_LABEL,
                Traffic::OneSource,
                &mut || xdp_drops(&lab),
            )?;
        }
        // xdp-filter, loaded by its own tool.
        if xdp_filter_skipped.is_none() {
            match xdpfilter::load(&lab.dut, DUT_IF, None) {
                Ok(loaded) => {
                    let label = format!("xdp-filter ({}), port 11211/udp denied", loaded.prog_name);
                    measure(
                        &mut rows,
                        "xdp_filter",
                        &label,
                        Traffic::OneSource,
                        &mut || xdp_drops(&lab),
                    )?;
                    drop(loaded);
                }
                Err(e) => {
                    eprintln!("bench: xdp-filter skipped: {e:#}");
                    xdp_filter_skipped = Some(format!("{e:#}"));
                }
            }
        }
        // nftables at the netdev ingress hook, with the same 100,000 prefixes.
        {
            let nft = Nft::load(&lab, &lists.v4[..PREFIXES])?;
            nft_loads.push(nft.load_s);
            let label = "nftables netdev ingress: saddr != @allow (interval set) drop";
            for traffic in [Traffic::OneSource, Traffic::Spoofed] {
                measure(&mut rows, "nft", label, traffic, &mut || nft_counter(&lab))?;
            }
        }
    }

    guard.set_policy(Policy::Drop)?;
    let in_situ = time_in_situ(&lab, &gens, p, &cpu_sets[0], [&nop, &guard_fd, &reference])?;

    // Ratios.
    for set in &cpu_sets {
        let n = set.len();
        let find = |dut: &str, traffic: &str| {
            rows.iter()
                .find(|r| r.dut == dut && r.cpus == n && r.traffic == traffic)
                .map(|r| r.mpps)
        };
        let ceiling = find("ceiling", "one_source").unwrap_or(f64::NAN);
        let nft_one = find("nft", "one_source");
        let nft_spoof = find("nft", "spoofed");
        for r in rows.iter_mut().filter(|r| r.cpus == n) {
            r.of_ceiling = r.mpps / ceiling;
            r.dut_ns = 1000.0 * n as f64 / r.mpps - 1000.0 * n as f64 / ceiling;
            let nft = if r.traffic == "spoofed" {
                nft_spoof
            } else {
                nft_one
            };
            r.x_nft = nft.map(|x| r.mpps / x);
        }
    }
    Ok(Results {
        warmup_s: p.warmup.as_secs_f64(),
        measure_s: p.measure.as_secs_f64(),
        rounds: p.live_rounds,
        prefixes: PREFIXES,
        rows,
        nft_load_s: sys::median(&nft_loads),
        xdp_filter_skipped,
        in_situ,
    })
}

/// Times the ceiling, guard (under the drop policy) and the reference run by
/// run on veth1 while one generator CPU sends the one-source traffic: interleaved rounds, the
/// kernel's run-time statistics on only for this pass (they slow every program down, so no
/// rate above is measured with them).
fn time_in_situ(
    lab: &Lab,
    gens: &Generators,
    p: &Params,
    cpus: &[usize],
    progs: [&OwnedFd; 3],
) -> anyhow::Result<InSitu> {
    eprintln!("bench: veth, the programs timed run by run");
    let _stats = bpf::enable_run_stats().context("BPF_ENABLE_STATS")?;
    let label = "timed run by run";
    let mut samples = Vec::new();
    for _ in 0..p.live_rounds {
        let mut round = [0.0; 3];
        for (k, prog) in progs.iter().enumerate() {
            let _link = attach(lab, prog.as_fd())?;
            let (ns0, runs0) = bpf::run_stats(prog.as_fd())?;
            measure_once(lab, gens, p, cpus, label, Traffic::OneSource, &mut || {
                Ok(bpf::run_stats(prog.as_fd())?.1)
            })?;
            let (ns1, runs1) = bpf::run_stats(prog.as_fd())?;
            ensure!(runs1 > runs0, "{label}: the kernel counted no runs");
            round[k] = (ns1 - ns0) as f64 / (runs1 - runs0) as f64;
        }
        samples.push(round);
    }
    let median = |k: usize| sys::median(&samples.iter().map(|r| r[k]).collect::<Vec<_>>());
    let ceiling = median(0);
    Ok(InSitu {
        ceiling_ns: ceiling,
        guard_over_ceiling_ns: median(1) - ceiling,
        reference_over_ceiling_ns: median(2) - ceiling,
        rounds: samples.len(),
        samples,
    })
}

/// Adds a round's sample to its row (created on first use); the row keeps the best round.
fn record(
    rows: &mut Vec<Row>,
    dut: &'static str,
    label: &str,
    traffic: Traffic,
    cpus: usize,
    x: &Sample,
) {
    let i = match rows
        .iter()
        .position(|r| r.dut == dut && r.traffic == traffic.id() && r.cpus == cpus)
    {
        Some(i) => i,
        None => {
            rows.push(Row {
                dut,
                label: label.to_owned(),
                traffic: traffic.id(),
                cpus,
                mpps: 0.0,
                of_ceiling: f64::NAN,
                dut_ns: f64::NAN,
                x_nft: None,
                others_busy: 0.0,
                rounds: Vec::new(),
                received: 0,
                dut_counted: 0,
            });
            rows.len() - 1
        }
    };
    let r = &mut rows[i];
    r.rounds.push(Round {
        mpps: x.mpps,
        others_busy: x.others_busy,
    });
    if x.mpps > r.mpps {
        r.mpps = x.mpps;
        r.others_busy = x.others_busy;
        r.received = x.received;
        r.dut_counted = x.dut_counted;
    }
}

/// Checks the spoofing generator on a few frames: XDP_TX, a source inside 100.64.0.0/10, a
/// valid IPv4 header checksum, and sources that vary.
fn check_spoofing(gens: &Generators) -> anyhow::Result<()> {
    let spoof = ipnet::Ipv4Net::new(SPOOF_NET.into(), prefixes::SPOOF_LEN)?;
    let mut sources = std::collections::HashSet::new();
    let mut out = vec![0u8; gens.spoof_frame.len()];
    for _ in 0..16 {
        let (action, len) = bpf::test_run_output(gens.spoof.as_fd(), &gens.spoof_frame, &mut out)?;
        ensure!(action == XDP_TX, "the spoofing generator returned {action}");
        ensure!(
            len == gens.spoof_frame.len(),
            "the spoofing generator resized the frame"
        );
        let src = std::net::Ipv4Addr::new(out[26], out[27], out[28], out[29]);
        ensure!(
            spoof.contains(&src),
            "the spoofing generator wrote source {src}"
        );
        ensure!(
            guard_tests::packets::checksum(&out[14..34]) == 0,
            "the spoofing generator left a bad IPv4 checksum for {src}"
        );
        sources.insert(src);
    }
    ensure!(
        sources.len() > 8,
        "the spoofing generator's sources hardly vary"
    );
    Ok(())
}

/// Attaches `prog` to veth1 in native mode (from inside the DUT namespace).
fn attach(lab: &Lab, prog: BorrowedFd<'_>) -> anyhow::Result<bpf::XdpLink> {
    let ifindex = lab.dut_if;
    lab.dut
        .run(|| bpf::attach_xdp(prog, ifindex, XDP_FLAGS_DRV_MODE))?
        .context("attaching XDP to veth1 in native mode")
}

fn xdp_drops(lab: &Lab) -> anyhow::Result<u64> {
    Ok(topo::sum_queues(
        &topo::ethtool_stats(&lab.dut, DUT_IF)?,
        "_xdp_drops",
    ))
}

fn received(lab: &Lab) -> anyhow::Result<u64> {
    Ok(topo::sum_queues(
        &topo::ethtool_stats(&lab.dut, DUT_IF)?,
        "_xdp_packets",
    ))
}

fn measure_once(
    lab: &Lab,
    gens: &Generators,
    p: &Params,
    cpus: &[usize],
    label: &str,
    traffic: Traffic,
    counter: &mut dyn FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<Sample> {
    let (prog, frame) = match traffic {
        Traffic::OneSource => (gens.one.as_fd(), &gens.one_frame),
        Traffic::Spoofed => (gens.spoof.as_fd(), &gens.spoof_frame),
    };
    let stop = AtomicBool::new(false);
    // Each generator thread's kernel thread id, 0 until it runs, and whether it finished.
    let tids: Vec<AtomicI32> = cpus.iter().map(|_| AtomicI32::new(0)).collect();
    let done: Vec<AtomicBool> = cpus.iter().map(|_| AtomicBool::new(false)).collect();
    let gen_if = lab.gen_if;
    let read = |counter: &mut dyn FnMut() -> anyhow::Result<u64>| -> anyhow::Result<Reading> {
        let before = Instant::now();
        let received = received(lab)?;
        let after = Instant::now();
        Ok(Reading {
            // The counters were read somewhere inside the call: take its middle.
            at: before + (after - before) / 2,
            received,
            dut: counter()?,
            cpu: sys::cpu_times()?,
            own_cpu_ns: tids
                .iter()
                .map(|t| sys::task_cpu_ns(t.load(Ordering::SeqCst)))
                .sum(),
        })
    };
    // Idle readings before and after bracket every frame of the run: they check the DUT's
    // counter exactly. The rate comes from the readings in between.
    let pre = read(counter)?;
    let (a, b) = thread::scope(|s| -> anyhow::Result<(Reading, Reading)> {
        let mut handles = Vec::new();
        for (k, &cpu) in cpus.iter().enumerate() {
            let (stop, tid, done) = (&stop, &tids[k], &done[k]);
            handles.push(s.spawn(move || -> anyhow::Result<()> {
                let r = lab.sender.run(|| -> anyhow::Result<()> {
                    // SAFETY: gettid has no preconditions.
                    tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
                    let r = (|| {
                        sys::pin_to_cpu(cpu)?;
                        while !stop.load(Ordering::SeqCst) && !sys::interrupted() {
                            match bpf::test_run_live(prog, frame, gen_if, GEN_REPEAT, GEN_BATCH) {
                                Ok(_) => {}
                                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                                Err(e) => return Err(e).context("LIVE_FRAMES generator"),
                            }
                        }
                        Ok(())
                    })();
                    done.store(true, Ordering::SeqCst);
                    r
                });
                if !matches!(r, Ok(Ok(()))) {
                    stop.store(true, Ordering::SeqCst);
                }
                r?
            }));
        }
        let result = (|| -> anyhow::Result<(Reading, Reading)> {
            sys::sleep(p.warmup)?;
            let a = read(counter)?;
            sys::sleep(p.measure)?;
            let b = read(counter)?;
            Ok((a, b))
        })();
        stop.store(true, Ordering::SeqCst);
        // A signal ends a generator's call (the kernel checks for one between batches); keep
        // sending until each has seen the stop flag.
        while tids
            .iter()
            .zip(&done)
            .any(|(t, d)| !d.load(Ordering::SeqCst) && t.load(Ordering::SeqCst) != 0)
            || handles.iter().any(|h| !h.is_finished())
        {
            for (t, d) in tids.iter().zip(&done) {
                let tid = t.load(Ordering::SeqCst);
                if tid != 0 && !d.load(Ordering::SeqCst) {
                    sys::wake(tid);
                }
            }
            thread::sleep(std::time::Duration::from_millis(5));
        }
        for h in handles {
            match h.join() {
                Ok(r) => r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        result
    })?;
    // Let veth's queues drain.
    thread::sleep(std::time::Duration::from_millis(100));
    let post = read(counter)?;
    let secs = (b.at - a.at).as_secs_f64();
    let received = b.received - a.received;
    if received == 0 {
        bail!("{label}: nothing arrived on veth1");
    }
    let all_received = post.received - pre.received;
    let dut_counted = post.dut - pre.dut;
    let seen = dut_counted as f64 / all_received as f64;
    ensure!(
        (0.98..=1.02).contains(&seen),
        "{label}: the DUT counted {dut_counted} of {all_received} frames received"
    );
    Ok(Sample {
        mpps: received as f64 / secs / 1e6,
        others_busy: sys::others_busy(
            &a.cpu,
            &b.cpu,
            cpus,
            b.own_cpu_ns.saturating_sub(a.own_cpu_ns),
        ),
        received: all_received,
        dut_counted,
    })
}

/// An nftables ruleset in the DUT namespace with GRO on veth1 (veth hands frames to the stack
/// only through NAPI, which needs GRO when no XDP program is attached); undone on drop.
struct Nft<'a> {
    lab: &'a Lab,
    load_s: f64,
}

impl<'a> Nft<'a> {
    fn load(lab: &'a Lab, v4: &[ipnet::Ipv4Net]) -> anyhow::Result<Self> {
        run_ok(lab.dut.command("ethtool").args(["-K", DUT_IF, "gro", "on"]))?;
        // From here on, drop undoes whatever was done.
        let mut me = Nft { lab, load_s: 0.0 };
        let text = format!(
            "table netdev gbench {{\n\
             \tset allow {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n\
             \t\telements = {{\n{}\n\t\t}}\n\t}}\n\
             \tchain ingress {{\n\
             \t\ttype filter hook ingress device \"{DUT_IF}\" priority -500; policy accept;\n\
             \t\tip protocol udp udp dport {MEMCACHED_PORT} ip saddr != @allow counter drop\n\
             \t}}\n}}\n",
            prefixes::nft_elements(v4)
        );
        let path = std::env::temp_dir().join(format!("guard-bench-{}.nft", std::process::id()));
        fs::write(&path, text)?;
        let t = Instant::now();
        let r = run_ok(lab.dut.command("nft").arg("-f").arg(&path));
        me.load_s = t.elapsed().as_secs_f64();
        let _ = fs::remove_file(&path);
        r.context("nft -f (the 100,000-prefix ruleset)")?;
        Ok(me)
    }
}

impl Drop for Nft<'_> {
    fn drop(&mut self) {
        let _ = run_ok(
            self.lab
                .dut
                .command("nft")
                .args(["delete", "table", "netdev", "gbench"]),
        );
        let _ = run_ok(
            self.lab
                .dut
                .command("ethtool")
                .args(["-K", DUT_IF, "gro", "off"]),
        );
    }
}

fn nft_counter(lab: &Lab) -> anyhow::Result<u64> {
    let out = run_ok(
        lab.dut
            .command("nft")
            .args(["-j", "list", "chain", "netdev", "gbench", "ingress"]),
    )?;
    let v: Value = serde_json::from_str(&out).context("parsing nft -j")?;
    fn find(v: &Value) -> Option<u64> {
        match v {
            Value::Object(m) => m
                .get("counter")
                .and_then(|c| c.get("packets"))
                .and_then(Value::as_u64)
                .or_else(|| m.values().find_map(find)),
            Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v).context("no counter in the nft chain")
}

#[cfg(test)]
mod tests {
    #[test]
    fn spoofing_generator_is_a_whole_program() {
        let p = super::bpf::spoofing_tx(super::SPOOF_NET);
        assert_eq!(p.last(), Some(&super::bpf::asm::exit()));
    }
}
