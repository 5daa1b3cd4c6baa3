//! The per-packet cost of the list lookups at 100,000 IPv4 prefixes, measured with
//! BPF_PROG_TEST_RUN against a floor: a trivial XDP program (`r0 = XDP_DROP; exit`) loaded
//! with a raw bpf(BPF_PROG_LOAD) and run on the same frame.
//!
//! Ignored by default (it measures, it does not check correctness, and it wants a quiet
//! machine). Run it in release:
//!
//! ```sh
//! cargo test --release -p guard-tests --test lookup_cost -- --ignored --nocapture
//! ```
//!
//! Environment: `GUARD_COST_REPEAT` (runs per test run, default 1,000,000),
//! `GUARD_COST_TRIALS` (test runs per path, the median is reported, default 7),
//! `GUARD_COST_PREFIXES` (default 100,000), `GUARD_COST_SEED`, `GUARD_COST_CPU` (the CPU to
//! pin to, default the last one).
//!
//! The prefixes are random over the whole IPv4 space: 50% /32, 30% /24 and 20% /16 to /30
//! (uniform lengths). The frames:
//! - `allow /32`: the address of a /32 entry (the deepest hit);
//! - `allow /24`: an address inside a /24 entry and inside no longer one;
//! - `drop deep`: a /32 entry's address with its last bit flipped, allowlisted by nothing (the
//!   deepest miss: the longest walk in a trie, a chunk in the direct tables);
//! - `drop shallow`: an address no prefix shares a /16 with;
//! - `not protected (port 53)` and `drop, empty lists`: the program's own cost without a list
//!   lookup, for reference.
//!
//! It also times the list changes: loading the prefixes, adding them again, adding and
//! removing one /32, and removing them all.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Instant,
};

use aya::programs::{TestRun as _, TestRunOptions};
use guard_common::{Lists as _, config::MEMCACHED_PORT};
use guard_tests::{
    packets::{HostLists, V4, table_config, v4_probe},
    privilege::require_privileges,
};
use guard_user::{
    lists::{self, List},
    loader::{self, MapSizes},
    maps::GuardMaps,
};
use ipnet::{IpNet, Ipv4Net};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, writable bpf_attr of the given size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// `r0 = XDP_DROP; exit`, loaded with a raw BPF_PROG_LOAD.
fn load_floor() -> OwnedFd {
    let insns: [u8; 16] = [
        0xb7, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // r0 = 1 (XDP_DROP)
        0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
    ];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
    put_u32(&mut attr, 4, 2);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..53].copy_from_slice(b"floor");
    let fd = bpf(BPF_PROG_LOAD, &mut attr).expect("BPF_PROG_LOAD of the floor program");
    // SAFETY: the kernel just returned this fd to us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// One raw BPF_PROG_TEST_RUN: (return value, mean ns per run).
fn test_run_raw(fd: &OwnedFd, frame: &[u8], repeat: u32) -> (u32, u32) {
    let mut attr = [0u8; 80];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u32(&mut attr, 8, frame.len() as u32);
    put_u64(&mut attr, 16, frame.as_ptr() as u64);
    put_u32(&mut attr, 32, repeat);
    bpf(BPF_PROG_TEST_RUN, &mut attr).expect("BPF_PROG_TEST_RUN of the floor program");
    let retval = u32::from_ne_bytes(attr[4..8].try_into().unwrap());
    let duration = u32::from_ne_bytes(attr[36..40].try_into().unwrap());
    (retval, duration)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pin_cpu() -> Option<usize> {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let cpu = env("GUARD_COST_CPU", cpus - 1);
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        (libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0).then_some(cpu)
    }
}

/// Random prefixes: 50% /32, 30% /24, 20% /16 to /30, over the whole IPv4 space.
fn random_prefixes(rng: &mut StdRng, n: usize) -> Vec<IpNet> {
    let mut set = BTreeSet::new();
    while set.len() < n {
        let roll = rng.random_range(0..10);
        let len = match roll {
            0..5 => 32,
            5..8 => 24,
            _ => rng.random_range(16..=30),
        };
        let addr = Ipv4Addr::from(rng.random::<u32>());
        set.insert(IpNet::V4(Ipv4Net::new(addr, len).unwrap().trunc()));
    }
    set.into_iter().collect()
}

struct Path {
    name: &'static str,
    source: [u8; 4],
    expect: u32,
}

fn pick_paths(nets: &[IpNet], host: &HostLists) -> Vec<Path> {
    let v4 = |n: &IpNet| match n {
        IpNet::V4(n) => Some(*n),
        IpNet::V6(_) => None,
    };
    let hit32 = nets
        .iter()
        .filter_map(v4)
        .find(|n| n.prefix_len() == 32)
        .expect("a /32")
        .addr()
        .octets();
    let hit24 = nets
        .iter()
        .filter_map(v4)
        .filter(|n| n.prefix_len() == 24)
        .map(|n| n.addr().octets())
        .map(|a| [a[0], a[1], a[2], 77])
        .find(|a| host.allow_v4(a) == guard_common::matched(24))
        .expect("a /24 with no longer prefix at .77");
    let deep = nets
        .iter()
        .filter_map(v4)
        .filter(|n| n.prefix_len() == 32)
        .map(|n| {
            let mut a = n.addr().octets();
            a[3] ^= 1;
            a
        })
        .find(|a| host.allow_v4(a) == 0)
        .expect("a deep miss");
    let sixteens: BTreeSet<[u8; 2]> = nets
        .iter()
        .filter_map(v4)
        .filter(|n| n.prefix_len() >= 16)
        .map(|n| {
            let a = n.addr().octets();
            [a[0], a[1]]
        })
        .collect();
    let shallow = (0..=u16::MAX)
        .map(|x| x.to_be_bytes())
        .find(|b| !sixteens.contains(b) && host.allow_v4(&[b[0], b[1], 9, 9]) == 0)
        .map(|b| [b[0], b[1], 9, 9])
        .expect("a /16 without prefixes");
    vec![
        Path {
            name: "allow /32",
            source: hit32,
            expect: XDP_PASS,
        },
        Path {
            name: "allow /24",
            source: hit24,
            expect: XDP_PASS,
        },
        Path {
            name: "drop deep",
            source: deep,
            expect: XDP_DROP,
        },
        Path {
            name: "drop shallow",
            source: shallow,
            expect: XDP_DROP,
        },
    ]
}

/// Median ns per run of the floor and of the guard on `frame`, interleaved so that drift hits
/// both alike.
#[allow(clippy::too_many_arguments)]
fn measure_one(
    prog: &mut aya::programs::Xdp,
    floor_fd: &OwnedFd,
    frame: &[u8],
    repeat: u32,
    trials: usize,
    expect: u32,
    name: &'static str,
    source: [u8; 4],
) -> (&'static str, [u8; 4], f64, f64) {
    let mut floor = Vec::new();
    let mut guard = Vec::new();
    for _ in 0..trials {
        let (ret, ns) = test_run_raw(floor_fd, frame, repeat);
        assert_eq!(ret, XDP_DROP);
        floor.push(f64::from(ns));
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(r.return_value, expect, "{name}");
        guard.push(r.duration.as_nanos() as f64);
    }
    (name, source, median(floor), median(guard))
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn lookup_cost_at_100k_prefixes_against_the_floor() {
    if !require_privileges("lookup_cost_at_100k_prefixes_against_the_floor") {
        return;
    }
    let repeat: u32 = env("GUARD_COST_REPEAT", 1_000_000);
    let trials: usize = env("GUARD_COST_TRIALS", 7);
    let count: usize = env("GUARD_COST_PREFIXES", 100_000);
    let seed: u64 = env("GUARD_COST_SEED", 0x636f_7374);
    let cpu = pin_cpu();

    let mut rng = StdRng::seed_from_u64(seed);
    let nets = random_prefixes(&mut rng, count);
    let config = table_config();
    let mut ebpf = loader::load_unpinned(&MapSizes::default()).expect("load");
    let mut maps = GuardMaps::take(&mut ebpf).expect("maps");
    maps.write_config(&config).expect("config");
    let started = Instant::now();
    let report = lists::add(&mut maps, List::Allow, &nets).expect("allowlist");
    let load_time = started.elapsed();
    assert_eq!(report.added.len(), count);

    let host = HostLists::new(&nets);
    let paths = pick_paths(&nets, &host);
    let floor_fd = load_floor();
    let prog = loader::program(&mut ebpf).expect("program");

    println!(
        "lookup cost: {count} IPv4 prefixes (seed {seed:#x}), loaded in {:.1} ms; repeat \
         {repeat}, median of {trials}, pinned to CPU {cpu:?}",
        load_time.as_secs_f64() * 1e3
    );
    let mut rows = Vec::new();
    for path in &paths {
        let frame = v4_probe(&[], V4::from(path.source), MEMCACHED_PORT);
        rows.push(measure_one(
            prog,
            &floor_fd,
            &frame,
            repeat,
            trials,
            path.expect,
            path.name,
            path.source,
        ));
    }
    // The program's own cost without a list lookup: a frame to an unprotected port (it exits
    // before any lookup), and the drop path against empty lists.
    let frame = v4_probe(&[], V4::from(paths[2].source), 53);
    rows.push(measure_one(
        prog,
        &floor_fd,
        &frame,
        repeat,
        trials,
        XDP_PASS,
        "not protected (port 53)",
        paths[2].source,
    ));
    let mut empty = loader::load_unpinned(&MapSizes::default()).expect("load");
    let mut empty_maps = GuardMaps::take(&mut empty).expect("maps");
    empty_maps.write_config(&config).expect("config");
    let frame = v4_probe(&[], V4::from(paths[2].source), MEMCACHED_PORT);
    let prog = loader::program(&mut empty).expect("program");
    rows.push(measure_one(
        prog,
        &floor_fd,
        &frame,
        repeat,
        trials,
        XDP_DROP,
        "drop, empty lists",
        paths[2].source,
    ));
    // The list changes, timed.
    let one: Vec<IpNet> = vec!["198.18.7.9/32".parse().unwrap()];
    let mut timed = |what: &str, f: &mut dyn FnMut(&mut GuardMaps)| {
        let started = Instant::now();
        f(&mut maps);
        println!("{what}: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    };
    timed("adding them all again (all present)", &mut |m| {
        assert_eq!(
            lists::add(m, List::Allow, &nets).unwrap().present.len(),
            count
        );
    });
    timed("adding one /32", &mut |m| {
        lists::add(m, List::Allow, &one).unwrap();
    });
    timed("removing one /32", &mut |m| {
        lists::remove_all(m, List::Allow, &one).unwrap();
    });
    timed("listing them", &mut |m| {
        assert_eq!(lists::entries(m, List::Allow).unwrap().len(), count);
    });
    timed("removing them all", &mut |m| {
        lists::remove_all(m, List::Allow, &nets).unwrap();
    });
    println!("| path | source | floor ns | guard ns | guard / floor |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, source, f, g) in rows {
        println!(
            "| {name} | {} | {f:.0} | {g:.0} | {:.2}x |",
            Ipv4Addr::from(source),
            g / f
        );
    }
}
