//! The rate-limit policy through BPF_PROG_TEST_RUN: bursts pass exactly, the excess drops,
//! the global bucket caps many sources together without creating state for refused ones,
//! allowlisted sources are never limited, and the kernel agrees with the host model.
//! (Limited buckets here refill once an hour, so the clock cannot refill one during a test,
//! however slowly it runs, e.g. under emulation in `cargo xtask vm-test`.)

use guard_common::{
    GuardConfig, Verdict,
    config::{MEMCACHED_PORT, POLICY_RATE_LIMIT},
    parse::ETH_P_8021Q,
    ratelimit::RateSpec,
};
use guard_tests::{
    kernel::{Loaded, test_run_totals},
    packets::{
        HostBuckets, HostLists, V4, V6_OTHER, dstopts_chain, host_verdict, table_config, v4_probe,
        v6_probe,
    },
    privilege::require_privileges,
};
use guard_user::{loader::MapSizes, top};
use ipnet::IpNet;

/// Never the limit in these tests.
const ROOMY: u64 = 0;

/// A bucket of `burst` that refills one datagram an hour; `ROOMY` for one that never limits.
fn bucket(burst: u64) -> RateSpec {
    if burst == ROOMY {
        return RateSpec::new(1_000_000, 1_000_000).unwrap();
    }
    let hour = 3600 * 1_000_000_000;
    RateSpec {
        interval_ns: hour,
        tolerance_ns: burst * hour,
    }
}

/// A rate-limit policy with these bursts (per source, per prefix, global).
fn policy(source: u64, prefix: u64, global: u64) -> GuardConfig {
    let mut c = table_config();
    c.policy = POLICY_RATE_LIMIT;
    c.rate.source = bucket(source);
    c.rate.prefix = bucket(prefix);
    c.rate.global = bucket(global);
    c.top_sample = 1;
    c
}

fn probe(src: [u8; 4]) -> Vec<u8> {
    v4_probe(&[], V4::from(src), MEMCACHED_PORT)
}

/// Runs `frames` through the kernel and the host model (same order, a clock that does not
/// move); returns the kernel's verdicts after checking that they agree.
fn both(config: &GuardConfig, allow: &[IpNet], frames: &[Vec<u8>]) -> (Loaded, Vec<Verdict>) {
    let mut k = Loaded::new(config, allow, &[], &MapSizes::default());
    let lists = HostLists::new(allow);
    let buckets = HostBuckets::at(1_000_000_000_000);
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let kernel = k.verdict(f);
        let host = host_verdict(f, config, &lists, &buckets);
        assert_eq!(
            kernel, host,
            "frame {i}: kernel {kernel:?}, host model {host:?}"
        );
        out.push(kernel);
    }
    (k, out)
}

fn count(vs: &[Verdict], v: Verdict) -> usize {
    vs.iter().filter(|x| **x == v).count()
}

#[test]
fn a_source_gets_exactly_its_burst() {
    if !require_privileges("a_source_gets_exactly_its_burst") {
        return;
    }
    let config = policy(5, ROOMY, ROOMY);
    let frames: Vec<_> = (0..13).map(|_| probe([203, 0, 113, 9])).collect();
    let (_k, v) = both(&config, &[], &frames);
    assert_eq!(count(&v, Verdict::RatePassed), 5);
    assert_eq!(count(&v, Verdict::RateLimited), 8);
    assert!(v[..5].iter().all(|x| *x == Verdict::RatePassed));
}

#[test]
fn a_prefix_shares_one_bucket() {
    if !require_privileges("a_prefix_shares_one_bucket") {
        return;
    }
    let config = policy(ROOMY, 3, ROOMY);
    // Ten sources in 203.0.113.0/24, then one in another /24.
    let mut frames: Vec<_> = (1..=10).map(|h| probe([203, 0, 113, h])).collect();
    frames.push(probe([198, 51, 100, 1]));
    let (_k, v) = both(&config, &[], &frames);
    assert_eq!(count(&v[..10], Verdict::RatePassed), 3);
    assert_eq!(v[10], Verdict::RatePassed);
}

#[test]
fn the_global_bucket_caps_many_sources_and_refused_ones_leave_no_state() {
    if !require_privileges("the_global_bucket_caps_many_sources_and_refused_ones_leave_no_state") {
        return;
    }
    let config = policy(ROOMY, ROOMY, 10);
    // 200 spoofed sources, each in its own /24.
    let frames: Vec<_> = (0..200u32)
        .map(|i| probe([100, 64 + (i / 256) as u8, (i % 256) as u8, 1]))
        .collect();
    let (k, v) = both(&config, &[], &frames);
    assert_eq!(count(&v, Verdict::RatePassed), 10);
    assert_eq!(count(&v, Verdict::RateLimited), 190);
    // Only admitted sources got bucket entries: 10 sources and their 10 prefixes.
    assert_eq!(k.maps.source_buckets.keys().count(), 10);
    assert_eq!(k.maps.prefix_buckets.keys().count(), 10);
    assert_eq!(test_run_totals(&k.maps).1.bucket_inserts, 20);
}

#[test]
fn allowlisted_sources_are_never_limited() {
    if !require_privileges("allowlisted_sources_are_never_limited") {
        return;
    }
    let config = policy(1, 1, 1);
    let allow: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let mut frames = vec![probe([203, 0, 113, 9]), probe([203, 0, 113, 9])];
    frames.extend((0..50).map(|_| probe([10, 1, 2, 3])));
    let (_k, v) = both(&config, &allow, &frames);
    assert_eq!(&v[..2], &[Verdict::RatePassed, Verdict::RateLimited]);
    assert!(v[2..].iter().all(|x| *x == Verdict::Allowlisted));
}

#[test]
fn dry_run_passes_limited_datagrams_as_would_drop() {
    if !require_privileges("dry_run_passes_limited_datagrams_as_would_drop") {
        return;
    }
    let mut config = policy(2, ROOMY, ROOMY);
    config.set_dry_run(true);
    let frames: Vec<_> = (0..6).map(|_| probe([203, 0, 113, 9])).collect();
    let (_k, v) = both(&config, &[], &frames);
    assert_eq!(count(&v, Verdict::RatePassed), 2);
    assert_eq!(count(&v, Verdict::WouldDrop), 4);
}

/// The drop policy with every drop recorded in top talkers.
fn every_drop_recorded() -> GuardConfig {
    let mut c = table_config();
    c.top_sample = 1;
    c
}

#[test]
fn top_talkers_count_drops_per_source() {
    if !require_privileges("top_talkers_count_drops_per_source") {
        return;
    }
    let config = every_drop_recorded();
    let mut frames = Vec::new();
    for _ in 0..7 {
        frames.push(probe([203, 0, 113, 9]));
    }
    for _ in 0..3 {
        frames.push(probe([198, 51, 100, 4]));
    }
    frames.push(probe([10, 9, 9, 9]));
    let allow: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    let (k, _) = both(&config, &allow, &frames);
    let talkers = top::top(&k.maps, 10).unwrap();
    assert_eq!(talkers.len(), 2, "{talkers:?}");
    assert_eq!(talkers[0].source.to_string(), "203.0.113.9");
    assert_eq!(talkers[0].packets, 7);
    assert_eq!(talkers[0].bytes, 7 * frames[0].len() as u64);
    assert_eq!(talkers[0].verdict, "dropped");
    assert_eq!(talkers[1].source.to_string(), "198.51.100.4");
    assert_eq!(talkers[1].packets, 3);
}

#[test]
fn top_talkers_read_the_source_of_every_kind_of_frame() {
    if !require_privileges("top_talkers_read_the_source_of_every_kind_of_frame") {
        return;
    }
    // The XDP program reads a sampled drop's source again from the frame: plain IPv4, VLAN
    // tags, IPv4 options, IPv6 with extension headers.
    let config = every_drop_recorded();
    let tagged = V4::from([203, 0, 113, 21]);
    let mut options = V4::from([203, 0, 113, 22]);
    options.ihl = 6;
    let (first, exts) = dstopts_chain(2);
    let frames = vec![
        probe([203, 0, 113, 20]),
        v4_probe(&[ETH_P_8021Q, ETH_P_8021Q], tagged, MEMCACHED_PORT),
        v4_probe(&[], options, MEMCACHED_PORT),
        v6_probe(V6_OTHER, first, &exts, MEMCACHED_PORT),
    ];
    let (k, verdicts) = both(&config, &[], &frames);
    assert!(
        verdicts
            .iter()
            .all(|v| *v == Verdict::DroppedNotAllowlisted),
        "{verdicts:?}"
    );
    let mut sources: Vec<String> = top::top(&k.maps, 10)
        .unwrap()
        .iter()
        .map(|t| t.source.to_string())
        .collect();
    sources.sort();
    let mut expected = vec![
        "203.0.113.20".to_string(),
        "203.0.113.21".to_string(),
        "203.0.113.22".to_string(),
        std::net::Ipv6Addr::from(V6_OTHER).to_string(),
    ];
    expected.sort();
    assert_eq!(sources, expected);
}

#[test]
fn sampled_top_talkers_are_weighted() {
    if !require_privileges("sampled_top_talkers_are_weighted") {
        return;
    }
    let mut config = table_config();
    config.top_sample = 4;
    let frames: Vec<_> = (0..64).map(|_| probe([203, 0, 113, 9])).collect();
    let (k, _) = both(&config, &[], &frames);
    let talkers = top::top(&k.maps, 10).unwrap();
    // BPF_PROG_TEST_RUN runs on one CPU: every fourth drop is recorded, weighted by 4.
    assert_eq!(talkers.len(), 1);
    assert_eq!(talkers[0].packets, 64);
}
