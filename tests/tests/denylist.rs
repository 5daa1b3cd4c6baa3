//! The denylist: dropped under either policy, and the precedence rule against the allowlist
//! (the more specific prefix wins; on equal lengths the denylist), in the host model and in
//! the kernel.

use guard_common::{
    Verdict,
    config::{MEMCACHED_PORT, POLICY_RATE_LIMIT},
    ratelimit::RateSpec,
};
use guard_tests::{
    kernel::Loaded,
    packets::{HostBuckets, HostLists, V4, host_verdict, table_config, v4_probe, v6_probe},
    privilege::require_privileges,
};
use guard_user::loader::MapSizes;
use ipnet::IpNet;

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|n| n.parse().unwrap()).collect()
}

/// Allowlist, denylist, source, expected verdict.
type Row = (Vec<IpNet>, Vec<IpNet>, [u8; 4], Verdict);

fn rows() -> Vec<Row> {
    use Verdict::*;
    vec![
        (
            nets(&["10.0.0.0/8"]),
            nets(&["10.1.0.0/16"]),
            [10, 1, 2, 3],
            Denied,
        ),
        (
            nets(&["10.0.0.0/8"]),
            nets(&["10.1.0.0/16"]),
            [10, 2, 2, 3],
            Allowlisted,
        ),
        (
            nets(&["10.1.2.3/32"]),
            nets(&["10.1.2.0/24"]),
            [10, 1, 2, 3],
            Allowlisted,
        ),
        (
            nets(&["10.1.2.3/32"]),
            nets(&["10.1.2.0/24"]),
            [10, 1, 2, 4],
            Denied,
        ),
        (
            nets(&["10.1.2.0/24"]),
            nets(&["10.1.2.0/24"]),
            [10, 1, 2, 9],
            Denied,
        ),
        (nets(&[]), nets(&["0.0.0.0/0"]), [203, 0, 113, 9], Denied),
        (
            nets(&["0.0.0.0/0"]),
            nets(&["0.0.0.0/0"]),
            [203, 0, 113, 9],
            Denied,
        ),
        (
            nets(&["0.0.0.0/0"]),
            nets(&["203.0.113.9/32"]),
            [203, 0, 113, 8],
            Allowlisted,
        ),
        (
            nets(&[]),
            nets(&["192.0.2.0/24"]),
            [203, 0, 113, 9],
            DroppedNotAllowlisted,
        ),
    ]
}

#[test]
fn precedence_in_the_host_model() {
    for (allow, deny, src, want) in rows() {
        let mut config = table_config();
        config.set_has_deny(!deny.is_empty());
        let got = host_verdict(
            &v4_probe(&[], V4::from(src), MEMCACHED_PORT),
            &config,
            &HostLists::with_deny(&allow, &deny),
            &HostBuckets::at(1),
        );
        assert_eq!(got, want, "allow {allow:?} deny {deny:?} source {src:?}");
    }
}

#[test]
fn precedence_in_the_kernel() {
    if !require_privileges("precedence_in_the_kernel") {
        return;
    }
    let config = table_config();
    for (allow, deny, src, want) in rows() {
        let mut k = Loaded::new(&config, &allow, &deny, &MapSizes::default());
        let got = k.verdict(&v4_probe(&[], V4::from(src), MEMCACHED_PORT));
        assert_eq!(got, want, "allow {allow:?} deny {deny:?} source {src:?}");
    }
}

#[test]
fn denied_sources_are_dropped_under_the_rate_limit_policy_too() {
    if !require_privileges("denied_sources_are_dropped_under_the_rate_limit_policy_too") {
        return;
    }
    let mut config = table_config();
    config.policy = POLICY_RATE_LIMIT;
    let roomy = RateSpec::new(1_000_000, 1_000_000).unwrap();
    config.rate.source = roomy;
    config.rate.prefix = roomy;
    config.rate.global = roomy;
    let deny = nets(&["203.0.113.0/24", "2001:db8:b::/48"]);
    let mut k = Loaded::new(&config, &[], &deny, &MapSizes::default());
    let mut other = guard_tests::packets::V6_OTHER;
    assert_eq!(
        k.verdict(&v6_probe(other, 17, &[], MEMCACHED_PORT)),
        Verdict::Denied
    );
    other[4] = 0xcc;
    assert_eq!(
        k.verdict(&v6_probe(other, 17, &[], MEMCACHED_PORT)),
        Verdict::RatePassed
    );
    for _ in 0..5 {
        let v = k.verdict(&v4_probe(&[], V4::from([203, 0, 113, 77]), MEMCACHED_PORT));
        assert_eq!(v, Verdict::Denied);
    }
    let v = k.verdict(&v4_probe(&[], V4::from([198, 51, 100, 77]), MEMCACHED_PORT));
    assert_eq!(v, Verdict::RatePassed);
    // Denied traffic created no rate-limit state.
    assert_eq!(k.maps.source_buckets.keys().count(), 2);
}
