//! Control plane: loading 100,000 CIDRs through guard-user's `lists::add` (unpinned maps, and
//! the pinned maps of a guard attached by the CLI), one `guard allow` as a whole process, and
//! the kernel memory an allowlist entry really takes.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use guard_tests::{lab::Guard, privilege};
use guard_user::{
    lists::{self, List},
    maps::GuardMaps,
    pins::PinLayout,
};
use ipnet::IpNet;
use serde::Serialize;

use super::{
    Params,
    guard::{Instance, Policy},
    prefixes::{CLI_NET, Lists},
    sys, topo,
};

/// Kernel memory of one list, measured around inserting it.
#[derive(Debug, Serialize)]
pub struct Memory {
    /// Prefixes inserted.
    pub entries: usize,
    /// Median over runs of the growth of /proc/meminfo `SUnreclaim` (unreclaimable slab, where
    /// BPF map nodes live), bytes per entry.
    pub slab_per_entry: f64,
    /// Every run's value.
    pub slab_samples: Vec<f64>,
    /// The growth of the maps' `memlock` (fdinfo), bytes per entry: the kernel's own estimate.
    pub memlock_per_entry: f64,
}

/// Everything this part measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// IPv4 CIDRs per load.
    pub cidrs: usize,
    /// Median seconds of `lists::add` of 100,000 IPv4 CIDRs into fresh unpinned maps.
    pub load_unpinned_s: f64,
    /// Every run's value.
    pub load_unpinned_samples: Vec<f64>,
    /// Seconds of the same into the pinned maps of a guard attached with `guard attach`.
    pub load_pinned_s: f64,
    /// Median seconds of `lists::add` of 10,000 IPv6 CIDRs.
    pub load_v6_s: f64,
    /// Median wall time of one `guard allow CIDR` process, milliseconds (100,000 prefixes
    /// already allowlisted).
    pub cli_allow_ms: f64,
    /// Every run's value.
    pub cli_allow_samples: Vec<f64>,
    /// Median wall time of `true` started the same way: process start-up alone.
    pub cli_true_ms: f64,
    /// IPv4 allowlist memory.
    pub memory_v4: Memory,
    /// IPv6 allowlist memory.
    pub memory_v6: Memory,
}

/// Runs the whole part.
pub fn run(p: &Params, l: &Lists) -> anyhow::Result<Results> {
    let v4: Vec<IpNet> = l.v4.iter().map(|n| IpNet::V4(*n)).collect();
    let v6: Vec<IpNet> = l.v6.iter().map(|n| IpNet::V6(*n)).collect();

    let mut loads = Vec::new();
    let mut loads6 = Vec::new();
    let (mut slab4, mut slab6, mut lock4, mut lock6) = (vec![], vec![], vec![], vec![]);
    for run in 0..p.load_runs {
        sys::check_interrupted()?;
        eprintln!("bench: control plane: load {}/{}", run + 1, p.load_runs);
        let mut g = Instance::load(&[], Policy::Drop)?;
        settle();
        let (s0, m0) = (sys::meminfo("SUnreclaim")?, sys::maps_memlock()?.0);
        let t = Instant::now();
        lists::add(&mut g.maps, List::Allow, &v4)?;
        loads.push(t.elapsed().as_secs_f64());
        settle();
        let (s1, m1) = (sys::meminfo("SUnreclaim")?, sys::maps_memlock()?.0);
        let t = Instant::now();
        lists::add(&mut g.maps, List::Allow, &v6)?;
        loads6.push(t.elapsed().as_secs_f64());
        settle();
        let (s2, m2) = (sys::meminfo("SUnreclaim")?, sys::maps_memlock()?.0);
        let per = |a: u64, b: u64, n: usize| (b as f64 - a as f64) / n as f64;
        slab4.push(per(s0, s1, v4.len()));
        slab6.push(per(s1, s2, v6.len()));
        lock4.push(per(m0, m1, v4.len()));
        lock6.push(per(m1, m2, v6.len()));
    }

    // A guard attached by the CLI, in a namespace of ours, with a pin path of its own.
    let ns = topo::netns("ctl")?;
    topo::veth(
        &topo::End {
            ns: &ns,
            name: "c0",
            mac: "02:00:00:00:00:21",
        },
        &topo::End {
            ns: &ns,
            name: "c1",
            mac: "02:00:00:00:00:22",
        },
        1,
    )?;
    let no_config =
        std::env::temp_dir().join(format!("guard-bench-{}-no-config.toml", std::process::id()));
    let no_config = no_config.to_string_lossy().into_owned();
    let guard = Guard::new(&ns);
    guard
        .ok(&["--config", &no_config, "attach", "c1"])
        .context("guard attach (is the guard binary built? GUARD_BIN)")?;
    let mut maps = GuardMaps::open(&PinLayout::new(guard.pin_path()))?;
    let t = Instant::now();
    lists::add(&mut maps, List::Allow, &v4)?;
    let load_pinned_s = t.elapsed().as_secs_f64();
    drop(maps);

    let bin = privilege::guard_bin();
    let pin = guard.pin_path().to_string_lossy().into_owned();
    let mut allow = Vec::new();
    let mut truth = Vec::new();
    for i in 0..p.cli_runs {
        sys::check_interrupted()?;
        truth.push(time(Command::new("true"))?);
        let cidr = format!(
            "{}.{}.{}.{}/32",
            CLI_NET[0],
            CLI_NET[1],
            CLI_NET[2],
            i % 256
        );
        let mut cmd = Command::new(&bin);
        cmd.args(["--pin-path", &pin, "--config", &no_config, "allow", &cidr]);
        allow.push(time(cmd).with_context(|| format!("guard allow {cidr}"))?);
    }
    drop(guard);

    Ok(Results {
        cidrs: v4.len(),
        load_unpinned_s: sys::median(&loads),
        load_unpinned_samples: loads,
        load_pinned_s,
        load_v6_s: sys::median(&loads6),
        cli_allow_ms: sys::median(&allow),
        cli_allow_samples: allow,
        cli_true_ms: sys::median(&truth),
        memory_v4: Memory {
            entries: v4.len(),
            slab_per_entry: sys::median(&slab4),
            slab_samples: slab4,
            memlock_per_entry: sys::median(&lock4),
        },
        memory_v6: Memory {
            entries: v6.len(),
            slab_per_entry: sys::median(&slab6),
            slab_samples: slab6,
            memlock_per_entry: sys::median(&lock6),
        },
    })
}

/// Lets deferred allocations and frees (BPF's memory allocator refills its caches from irq
/// work, and frees after an RCU grace period) settle before /proc/meminfo is read.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// Wall time of running `cmd` to completion, in milliseconds; fails unless it succeeds.
fn time(mut cmd: Command) -> anyhow::Result<f64> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .env_remove("GUARD_PIN_PATH")
        .env_remove("GUARD_CONFIG");
    let t = Instant::now();
    let out = cmd.output()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(ms)
}
