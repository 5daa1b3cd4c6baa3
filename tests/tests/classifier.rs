//! The reference classifier on the table of crafted frames (host only, no privileges).

use guard_common::{GuardConfig, Verdict, config::MEMCACHED_PORT};
use guard_tests::packets::{
    HostBuckets, HostLists, V4, V4_OTHER, V6_OTHER, cases, host_verdict, table_allowlist,
    table_config, truncations, v4_probe, v6_probe,
};
use ipnet::IpNet;

fn judge(frame: &[u8], config: &GuardConfig, allow: &[IpNet]) -> Verdict {
    host_verdict(frame, config, &HostLists::new(allow), &HostBuckets::at(1))
}

#[test]
fn every_case_gets_its_expected_verdict() {
    let (config, allow) = (table_config(), table_allowlist());
    let mut wrong = Vec::new();
    for c in cases() {
        let got = judge(&c.frame, &config, &allow);
        if got != c.expected {
            wrong.push(format!(
                "{}: expected {:?}, got {got:?}",
                c.name, c.expected
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_truncation_is_malformed_until_the_headers_are_whole() {
    let (config, allow) = (table_config(), table_allowlist());
    let mut wrong = Vec::new();
    for c in truncations() {
        // A truncated tiny fragment may still be a tiny fragment once its IP header is whole.
        let got = judge(&c.frame, &config, &allow);
        if got != c.expected {
            wrong.push(format!(
                "{}: expected {:?}, got {got:?}",
                c.name, c.expected
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn dry_run_passes_every_drop_as_would_drop() {
    let mut config = table_config();
    config.set_dry_run(true);
    let allow = table_allowlist();
    for c in cases() {
        let got = judge(&c.frame, &config, &allow);
        let want = c.expected.dry_run(true);
        assert_eq!(got, want, "{}", c.name);
    }
}

#[test]
fn only_configured_ports_are_protected() {
    let mut config = GuardConfig::EMPTY;
    config.protect(11212);
    config.protect(22122);
    let allow = table_allowlist();
    let v4 = |port| judge(&v4_probe(&[], V4::from(V4_OTHER), port), &config, &allow);
    assert_eq!(v4(MEMCACHED_PORT), Verdict::NotProtected);
    assert_eq!(v4(11212), Verdict::DroppedNotAllowlisted);
    assert_eq!(v4(22122), Verdict::DroppedNotAllowlisted);
    let none = GuardConfig::EMPTY;
    assert_eq!(
        judge(
            &v4_probe(&[], V4::from(V4_OTHER), MEMCACHED_PORT),
            &none,
            &allow
        ),
        Verdict::NotProtected
    );
}

#[test]
fn cidr_edges() {
    let config = table_config();
    let nets = |s: &[&str]| -> Vec<IpNet> { s.iter().map(|n| n.parse().unwrap()).collect() };
    let v4 = |src| v4_probe(&[], V4::from(src), MEMCACHED_PORT);
    let v6 = |src| v6_probe(src, 17, &[], MEMCACHED_PORT);
    // /0 allows every source of its family, and only of its family.
    let all4 = nets(&["0.0.0.0/0"]);
    assert_eq!(judge(&v4(V4_OTHER), &config, &all4), Verdict::Allowlisted);
    assert_eq!(judge(&v4([255; 4]), &config, &all4), Verdict::Allowlisted);
    assert_eq!(
        judge(&v6(V6_OTHER), &config, &all4),
        Verdict::DroppedNotAllowlisted
    );
    let all6 = nets(&["::/0"]);
    assert_eq!(judge(&v6(V6_OTHER), &config, &all6), Verdict::Allowlisted);
    assert_eq!(
        judge(&v4(V4_OTHER), &config, &all6),
        Verdict::DroppedNotAllowlisted
    );
    // /32 and /128 match exactly one address.
    let host4 = nets(&["203.0.113.9/32"]);
    assert_eq!(judge(&v4(V4_OTHER), &config, &host4), Verdict::Allowlisted);
    assert_eq!(
        judge(&v4([203, 0, 113, 8]), &config, &host4),
        Verdict::DroppedNotAllowlisted
    );
    assert_eq!(
        judge(&v4([203, 0, 113, 10]), &config, &host4),
        Verdict::DroppedNotAllowlisted
    );
    let host6 = nets(&["2001:db8:b::1/128"]);
    assert_eq!(judge(&v6(V6_OTHER), &config, &host6), Verdict::Allowlisted);
    let mut next = V6_OTHER;
    next[15] = 2;
    assert_eq!(
        judge(&v6(next), &config, &host6),
        Verdict::DroppedNotAllowlisted
    );
    // An empty allowlist drops every protected datagram.
    assert_eq!(
        judge(&v4(V4_OTHER), &config, &[]),
        Verdict::DroppedNotAllowlisted
    );
}
