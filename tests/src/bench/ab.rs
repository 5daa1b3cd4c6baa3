//! `guard-bench --ab NAME=OBJECT,...`: this build's XDP program against other builds of it, path
//! by path, in BPF_PROG_TEST_RUN. A change to the data path worth a fraction of a nanosecond
//! is decided this way: both objects loaded side by side, every load measured in every round,
//! the rounds interleaved, so that the machine's slow and fast phases and where the kernel
//! placed each load fall on both alike.
//!
//! An object is the file aya-build leaves at
//! `target/release/build/guard-user-*/out/aya-build/target/guard-ebpf/bpfel-unknown-none/release/guard`;
//! copy it aside before changing the program. Its maps and its configuration layout must be
//! this build's: the comparison loads it through this build's loader, fills this build's
//! allowlist and writes this build's `GuardConfig`. Every path's verdict is checked on every
//! load, but a build that reads the configuration at other offsets can still pass that check
//! and then time the wrong work (a changed layout is compared by changing both sides).
//!
//! Two timings per path: the kernel's whole-ns mean per run (as in the report's tables), and
//! its run-time statistics (BPF_ENABLE_STATS: fractions of a nanosecond, with a clock read on
//! either side of every run, so only differences between programs mean anything).

use std::{
    fmt::Write as _,
    io,
    os::fd::{AsFd as _, BorrowedFd},
    path::Path as FsPath,
};

use anyhow::{Context as _, ensure};

use super::{
    Params,
    bpf::{self, XDP_DROP},
    guard::{Instance, Policy},
    live::PREFIXES,
    prefixes::Lists,
    sys,
    testrun::{self, LOADS},
};

/// The pinned CPU (as in the per-packet part).
const CPU: usize = 1;

/// One build of guard's BPF object.
pub struct Build {
    /// Its name in the report.
    pub name: String,
    /// The object, 8-byte aligned as aya's parser wants it.
    object: &'static [u8],
}

impl Build {
    /// This build's own object.
    pub fn this() -> Self {
        Self {
            name: "this build".to_owned(),
            object: guard_user::object::OBJECT,
        }
    }

    /// Reads `NAME=PATH`.
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let (name, path) = spec
            .split_once('=')
            .with_context(|| format!("{spec:?}: expected NAME=OBJECT"))?;
        ensure!(!name.is_empty(), "{spec:?}: the name is empty");
        let bytes = std::fs::read(FsPath::new(path)).with_context(|| format!("reading {path}"))?;
        // Kept for the whole run: a bench binary compares a handful of objects once.
        let words: &'static mut [u64] = vec![0u64; bytes.len().div_ceil(8)].leak();
        // SAFETY: the words are at least `bytes.len()` bytes long, and any byte is a valid u8.
        let object: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), bytes.len()) };
        object.copy_from_slice(&bytes);
        Ok(Self {
            name: name.to_owned(),
            object,
        })
    }
}

/// Samples of one (path, build): ns over the floor, per load, over the rounds; `whole` from
/// the kernel's whole-ns mean, `timed` from its run-time statistics.
#[derive(Clone)]
struct Samples {
    whole: Vec<Vec<f64>>,
    timed: Vec<Vec<f64>>,
}

impl Samples {
    fn new() -> Self {
        Self {
            whole: vec![Vec::new(); LOADS],
            timed: vec![Vec::new(); LOADS],
        }
    }

    fn of(&mut self, timed: bool) -> &mut Vec<Vec<f64>> {
        if timed {
            &mut self.timed
        } else {
            &mut self.whole
        }
    }
}

/// Measures `builds` (the first is the baseline) on guard's paths; returns the report
/// (markdown).
pub fn run(p: &Params, lists: &Lists, builds: &[Build]) -> anyhow::Result<String> {
    sys::on_cpu(CPU.min(sys::cpus() - 1), || measure(p, lists, builds))
}

/// The mean ns per run of `prog` on `frame`: the kernel's run-time statistics when `timed`
/// (they must be on), else its whole-ns test-run figure.
fn mean_ns(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32, timed: bool) -> io::Result<f64> {
    if timed {
        bpf::timed_run(prog, frame, repeat)
    } else {
        Ok(f64::from(bpf::test_run(prog, frame, repeat)?.duration_ns))
    }
}

fn measure(p: &Params, lists: &Lists, builds: &[Build]) -> anyhow::Result<String> {
    let paths = testrun::paths(lists);
    let floor = bpf::load_xdp("gb_floor", &bpf::return_only(XDP_DROP))?;
    let mut loads: Vec<Vec<Instance>> = Vec::new();
    for b in builds {
        eprintln!(
            "bench: loading {} with {PREFIXES} IPv4 prefixes ({LOADS} times)",
            b.name
        );
        let mut mine = Vec::new();
        for _ in 0..LOADS {
            let mut g = Instance::load_object(b.object, &lists.allowlist(PREFIXES), Policy::Drop)
                .with_context(|| format!("loading {}", b.name))?;
            testrun::verify_paths(&mut g, &paths).with_context(|| b.name.clone())?;
            mine.push(g);
        }
        loads.push(mine);
    }
    let mut samples = vec![vec![Samples::new(); builds.len()]; paths.len()];
    let (mut floor_whole, mut floor_timed) = (Vec::new(), Vec::new());
    for timed in [false, true] {
        let _stats = timed
            .then(bpf::enable_run_stats)
            .transpose()
            .context("BPF_ENABLE_STATS")?;
        let floors = if timed {
            &mut floor_timed
        } else {
            &mut floor_whole
        };
        for round in 0..p.rounds {
            sys::check_interrupted()?;
            eprintln!(
                "bench: A/B round {} of {} ({})",
                round + 1,
                p.rounds,
                if timed {
                    "run-time statistics"
                } else {
                    "whole ns"
                }
            );
            for (i, path) in paths.iter().enumerate() {
                let f = mean_ns(floor.as_fd(), &path.frame, p.repeat, timed)?;
                floors.push(f);
                for (b, mine) in loads.iter_mut().enumerate() {
                    for (l, g) in mine.iter_mut().enumerate() {
                        g.set_policy(path.policy)?;
                        let ns = mean_ns(g.prog_fd()?, &path.frame, p.repeat, timed)?;
                        samples[i][b].of(timed)[l].push(ns - f);
                    }
                }
            }
        }
    }
    Ok(report(
        p,
        builds,
        &paths,
        &samples,
        &floor_whole,
        &floor_timed,
    ))
}

fn report(
    p: &Params,
    builds: &[Build],
    paths: &[testrun::Path],
    samples: &[Vec<Samples>],
    floor_whole: &[f64],
    floor_timed: &[f64],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# A/B of guard's XDP program\n\n\
         BPF_PROG_TEST_RUN, {} runs per call, {} interleaved rounds, {LOADS} loads of each \
         build (each measured in every round), {PREFIXES} IPv4 prefixes; the floor \
         (`r0 = XDP_DROP; exit`) is run before every path in every round and subtracted. \
         \"whole\": the kernel's whole-ns mean per run (floor {:.1} ns); \"timed\": its run-time \
         statistics (floor {:.2} ns, a clock read on either side of every run). Medians over \
         rounds and loads; \"loads\" gives each load's median; the difference is against {}.\n",
        p.repeat,
        p.rounds,
        sys::median(floor_whole),
        sys::median(floor_timed),
        builds[0].name,
    );
    let _ = writeln!(
        out,
        "| Path | Build | whole ns over floor | timed ns over floor | timed difference | timed, loads |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    for (i, path) in paths.iter().enumerate() {
        let base = sys::median(&samples[i][0].timed.concat());
        for (b, build) in builds.iter().enumerate() {
            let s = &samples[i][b];
            let timed = sys::median(&s.timed.concat());
            let per_load: Vec<String> = s
                .timed
                .iter()
                .map(|v| format!("{:.2}", sys::median(v)))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.2} | {} | {} |",
                path.id,
                build.name,
                sys::median(&s.whole.concat()),
                timed,
                if b == 0 {
                    String::new()
                } else {
                    format!(
                        "{:+.2} ns ({})",
                        timed - base,
                        separation(&samples[i][0], s)
                    )
                },
                per_load.join(", ")
            );
        }
    }
    out
}

/// Whether every load of one build was cheaper than every load of the other (the loads'
/// medians): a difference that where the kernel placed a load cannot explain.
fn separation(base: &Samples, other: &Samples) -> &'static str {
    // The lowest and highest of the loads' medians.
    let range = |s: &Samples| {
        s.timed
            .iter()
            .map(|v| sys::median(v))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), m| {
                (low.min(m), high.max(m))
            })
    };
    let ((a_low, a_high), (b_low, b_high)) = (range(base), range(other));
    if b_high < a_low {
        "every load cheaper"
    } else if b_low > a_high {
        "every load dearer"
    } else {
        "loads overlap"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_named_and_read_aligned() {
        let dir = std::env::temp_dir().join(format!("guard-ab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("guard.o");
        std::fs::write(&path, b"\x7fELF and more").unwrap();
        let b = Build::parse(&format!("old={}", path.display())).unwrap();
        assert_eq!(b.name, "old");
        assert_eq!(b.object, b"\x7fELF and more");
        assert_eq!(b.object.as_ptr() as usize % 8, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_build_spec_is_refused() {
        for (spec, says) in [
            ("no-equals-sign", "expected NAME=OBJECT"),
            ("=/tmp/x", "the name is empty"),
            ("old=/nonexistent/guard.o", "reading /nonexistent/guard.o"),
        ] {
            let e = Build::parse(spec).err().expect(spec);
            assert!(format!("{e:#}").contains(says), "{spec}: {e:#}");
        }
    }

    fn samples(loads: &[f64]) -> Samples {
        Samples {
            whole: Vec::new(),
            timed: loads.iter().map(|&x| vec![x, x + 0.01, x - 0.01]).collect(),
        }
    }

    #[test]
    fn separation_compares_every_load() {
        let base = samples(&[5.0, 5.2, 5.1]);
        assert_eq!(
            separation(&base, &samples(&[4.5, 4.9, 4.8])),
            "every load cheaper"
        );
        assert_eq!(
            separation(&base, &samples(&[5.5, 5.3, 6.0])),
            "every load dearer"
        );
        assert_eq!(
            separation(&base, &samples(&[4.5, 5.15, 5.3])),
            "loads overlap"
        );
    }

    /// A short comparison of this build with a copy of itself read from a file: every path of
    /// every load is verified (its verdict counted as expected) and appears in the report.
    #[test]
    fn this_build_against_a_copy_of_itself() {
        if !guard_tests::privilege::require_privileges("this_build_against_a_copy_of_itself") {
            return;
        }
        let dir = std::env::temp_dir().join(format!("guard-ab-self-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("guard.o");
        std::fs::write(&path, guard_user::object::OBJECT).unwrap();
        let copy = Build::parse(&format!("copy={}", path.display())).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let p = Params {
            repeat: 1_000,
            rounds: 1,
            ..Params::quick()
        };
        let lists = Lists::generate(p.seed, PREFIXES, 1_000);
        let report = run(&p, &lists, &[Build::this(), copy]).unwrap();
        for path in testrun::paths(&lists) {
            for build in ["this build", "copy"] {
                let row = format!("| {} | {build} |", path.id);
                assert!(report.contains(&row), "no row {row:?} in\n{report}");
            }
        }
    }
}
