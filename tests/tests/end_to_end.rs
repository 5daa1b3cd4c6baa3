//! End to end: a real memcached with UDP on in one namespace, clients in another, joined by a
//! veth pair, and `guard attach` on the server's end. Root only.
//!
//! The client namespace has an allowlisted address and an unlisted ("attacker") one for each
//! family. Every check sends real memcached requests and compares what came back, and what
//! `guard stats --json` counted, with what was sent.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use guard_tests::{
    lab::{self, Counter, Counters, Guard, MEMCACHED_PORT, Memcached, Netns, UdpAnswer, VethEnd},
    privilege::require_privileges,
};

const SRV_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 1));
const ALLOWED_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 2));
const ATTACKER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 3));
const SRV_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1));
const ALLOWED_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2));
const ATTACKER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 3));

/// The server's interface, where guard attaches.
const SRV_IF: &str = "srv0";

/// How long to wait for an answer that should come.
const ANSWER: Duration = Duration::from_secs(2);
/// How long to wait before concluding that no answer comes.
const SILENCE: Duration = Duration::from_millis(400);

/// A running lab. Fields drop in order: guard (unload needs the server namespace), memcached,
/// then the namespaces.
struct Lab {
    guard: Guard,
    _memcached: Memcached,
    cli: Netns,
    _srv: Netns,
}

impl Lab {
    /// Server and client namespaces, memcached, and guard attached to the server's veth end
    /// with the allowlisted /32 and /128 plus `extra` attach arguments.
    fn start(extra: &[&str]) -> Lab {
        let srv = Netns::new("gsrv").expect("server namespace");
        let cli = Netns::new("gcli").expect("client namespace");
        lab::veth(
            VethEnd {
                ns: &srv,
                ifname: SRV_IF,
                addrs: &["10.77.1.1/24", "fd00:77::1/64"],
            },
            VethEnd {
                ns: &cli,
                ifname: "cli0",
                addrs: &[
                    "10.77.1.2/24",
                    "10.77.1.3/24",
                    "fd00:77::2/64",
                    "fd00:77::3/64",
                ],
            },
        )
        .expect("veth pair");
        let memcached = Memcached::start(&srv, &[SRV_V4, SRV_V6]).expect("memcached");
        let guard = Guard::new(&srv);
        let mut args = vec![
            "attach",
            SRV_IF,
            "--allow",
            "10.77.1.2/32",
            "--allow",
            "fd00:77::2/128",
        ];
        args.extend_from_slice(extra);
        let out = guard.ok(&args).expect("guard attach");
        assert!(
            out.contains(&format!("{SRV_IF}: attached in")),
            "unexpected attach output: {out}"
        );
        Lab {
            guard,
            _memcached: memcached,
            cli,
            _srv: srv,
        }
    }

    /// A UDP socket in the client namespace bound to `source`.
    fn udp(&self, source: IpAddr) -> UdpSocket {
        self.cli
            .run(|| UdpSocket::bind(SocketAddr::new(source, 0)))
            .expect("client namespace")
            .expect("binding a client UDP socket")
    }

    /// Sends `command` over UDP from `source` to the server of the same family.
    fn request(&self, source: IpAddr, command: &str, timeout: Duration) -> UdpAnswer {
        let server = SocketAddr::new(server_for(source), MEMCACHED_PORT);
        lab::udp_request(&self.udp(source), server, 7, command, timeout)
            .expect("sending a memcached UDP request")
    }

    /// Stores `key` = `value` over TCP from `source`.
    fn tcp_set(&self, source: IpAddr, key: &str, value: &[u8]) {
        let server = SocketAddr::new(server_for(source), MEMCACHED_PORT);
        self.cli
            .run(|| {
                let mut s = lab::tcp_connect_from(source, server, ANSWER)?;
                lab::tcp_set(&mut s, key, value)
            })
            .expect("client namespace")
            .expect("memcached set over TCP");
    }

    fn stats(&self) -> Counters {
        self.guard.stats().expect("guard stats --json")
    }
}

fn server_for(source: IpAddr) -> IpAddr {
    if source.is_ipv4() { SRV_V4 } else { SRV_V6 }
}

/// Tallies what was sent, to compare with guard's counters.
#[derive(Default)]
struct Tally {
    packets: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, source: IpAddr, answer: &UdpAnswer) {
        self.packets += 1;
        self.bytes += lab::udp_frame_len(source, answer.sent) as u64;
    }

    fn counter(&self) -> Counter {
        Counter {
            packets: self.packets,
            bytes: self.bytes,
        }
    }
}

/// Asserts that every counter except not_protected and the named ones is zero.
fn assert_only(counters: &Counters, expected: &[(&str, Counter)]) {
    for (name, c) in &counters.0 {
        if name == "not_protected" {
            continue;
        }
        let want = expected
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        assert_eq!(*c, want, "counter {name}; all counters: {counters:?}");
    }
    for (name, _) in expected {
        assert!(
            counters.0.contains_key(*name),
            "guard stats has no counter {name}: {counters:?}"
        );
    }
}

#[test]
fn udp_from_unlisted_sources_is_dropped_and_allowlisted_is_answered() {
    if !require_privileges("udp_from_unlisted_sources_is_dropped_and_allowlisted_is_answered") {
        return;
    }
    let lab = Lab::start(&[]);
    lab.tcp_set(ALLOWED_V4, "k", b"hello");

    let mut dropped = Tally::default();
    let mut allowed = Tally::default();
    for attacker in [ATTACKER_V4, ATTACKER_V6] {
        for command in ["get k\r\n", "stats\r\n", "get k\r\n"] {
            let a = lab.request(attacker, command, SILENCE);
            assert!(
                !a.answered(),
                "{attacker} is not allowlisted but got an answer to {command:?}: {:?}",
                a.text()
            );
            dropped.add(attacker, &a);
        }
    }
    for client in [ALLOWED_V4, ALLOWED_V6] {
        let a = lab.request(client, "get k\r\n", ANSWER);
        assert!(a.complete, "{client} is allowlisted but got {a:?}");
        assert_eq!(a.text(), "VALUE k 0 5\r\nhello\r\nEND\r\n");
        allowed.add(client, &a);
        let a = lab.request(client, "stats\r\n", ANSWER);
        assert!(a.complete, "{client} is allowlisted but got {a:?}");
        assert!(a.text().starts_with("STAT pid "), "stats: {}", a.text());
        assert!(a.text().ends_with("END\r\n"), "stats: {}", a.text());
        allowed.add(client, &a);
    }

    let counters = lab.stats();
    assert_only(
        &counters,
        &[
            ("dropped", dropped.counter()),
            ("allowlisted", allowed.counter()),
        ],
    );
    assert_eq!(dropped.packets, 6);
    assert_eq!(allowed.packets, 4);
}

#[test]
fn tcp_from_unlisted_source_still_works() {
    if !require_privileges("tcp_from_unlisted_source_still_works") {
        return;
    }
    let lab = Lab::start(&[]);
    for (attacker, key) in [(ATTACKER_V4, "tcp4"), (ATTACKER_V6, "tcp6")] {
        let server = SocketAddr::new(server_for(attacker), MEMCACHED_PORT);
        let got = lab
            .cli
            .run(|| {
                let mut s = lab::tcp_connect_from(attacker, server, ANSWER)?;
                lab::tcp_set(&mut s, key, b"over tcp")?;
                lab::tcp_get(&mut s, key)
            })
            .expect("client namespace")
            .unwrap_or_else(|e| panic!("TCP from {attacker} to {server} failed: {e}"));
        assert_eq!(got.as_deref(), Some(&b"over tcp"[..]));
        // And UDP from the same source stays dropped.
        let a = lab.request(attacker, &format!("get {key}\r\n"), SILENCE);
        assert!(!a.answered(), "UDP from {attacker} answered: {a:?}");
    }
    let counters = lab.stats();
    assert_eq!(counters.get("dropped").packets, 2, "{counters:?}");
    assert_eq!(counters.get("allowlisted").packets, 0, "{counters:?}");
}

#[test]
fn live_allow_and_revoke() {
    if !require_privileges("live_allow_and_revoke") {
        return;
    }
    let lab = Lab::start(&[]);
    lab.tcp_set(ALLOWED_V4, "k", b"v");
    let mut dropped = Tally::default();
    let mut allowed = Tally::default();

    for (attacker, prefix) in [
        (ATTACKER_V4, "10.77.1.3/32"),
        (ATTACKER_V6, "fd00:77::3/128"),
    ] {
        let a = lab.request(attacker, "get k\r\n", SILENCE);
        assert!(!a.answered(), "before allow, {attacker} got {a:?}");
        dropped.add(attacker, &a);

        let out = lab.guard.ok(&["allow", prefix]).expect("guard allow");
        assert!(out.contains(prefix), "guard allow printed {out:?}");
        let list = lab.guard.allowlist().expect("guard list");
        assert!(list.iter().any(|p| p == prefix), "{prefix} not in {list:?}");
        let a = lab.request(attacker, "get k\r\n", ANSWER);
        assert!(
            a.complete,
            "after guard allow {prefix}, {attacker} got {a:?}"
        );
        assert_eq!(a.text(), "VALUE k 0 1\r\nv\r\nEND\r\n");
        allowed.add(attacker, &a);

        lab.guard.ok(&["revoke", prefix]).expect("guard revoke");
        let list = lab.guard.allowlist().expect("guard list");
        assert!(
            !list.iter().any(|p| p == prefix),
            "{prefix} still in {list:?}"
        );
        let a = lab.request(attacker, "get k\r\n", SILENCE);
        assert!(
            !a.answered(),
            "after guard revoke {prefix}, {attacker} got {a:?}"
        );
        dropped.add(attacker, &a);
    }
    // The attach-time entries are untouched.
    let mut list = lab.guard.allowlist().expect("guard list");
    list.sort();
    assert_eq!(list, ["10.77.1.2/32", "fd00:77::2/128"]);

    assert_only(
        &lab.stats(),
        &[
            ("dropped", dropped.counter()),
            ("allowlisted", allowed.counter()),
        ],
    );
}

#[test]
fn dry_run_counts_would_drop_and_lets_requests_through() {
    if !require_privileges("dry_run_counts_would_drop_and_lets_requests_through") {
        return;
    }
    let lab = Lab::start(&["--dry-run"]);
    lab.tcp_set(ALLOWED_V4, "k", b"dry");
    let mut would_drop = Tally::default();
    let mut dropped = Tally::default();
    let mut allowed = Tally::default();

    for attacker in [ATTACKER_V4, ATTACKER_V6] {
        let a = lab.request(attacker, "get k\r\n", ANSWER);
        assert!(a.complete, "dry-run, yet {attacker} got {a:?}");
        assert_eq!(a.text(), "VALUE k 0 3\r\ndry\r\nEND\r\n");
        would_drop.add(attacker, &a);
    }
    let a = lab.request(ALLOWED_V4, "get k\r\n", ANSWER);
    assert!(a.complete, "allowlisted client got {a:?}");
    allowed.add(ALLOWED_V4, &a);
    assert_only(
        &lab.stats(),
        &[
            ("would_drop", would_drop.counter()),
            ("allowlisted", allowed.counter()),
        ],
    );

    // Enforce, live.
    lab.guard
        .ok(&["dry-run", "off"])
        .expect("guard dry-run off");
    for attacker in [ATTACKER_V4, ATTACKER_V6] {
        let a = lab.request(attacker, "get k\r\n", SILENCE);
        assert!(!a.answered(), "dry-run off, yet {attacker} got {a:?}");
        dropped.add(attacker, &a);
    }
    // And back to observing.
    lab.guard.ok(&["dry-run", "on"]).expect("guard dry-run on");
    let a = lab.request(ATTACKER_V4, "get k\r\n", ANSWER);
    assert!(a.complete, "dry-run on again, yet {ATTACKER_V4} got {a:?}");
    would_drop.add(ATTACKER_V4, &a);

    assert_only(
        &lab.stats(),
        &[
            ("would_drop", would_drop.counter()),
            ("dropped", dropped.counter()),
            ("allowlisted", allowed.counter()),
        ],
    );
}

#[test]
fn guard_dry_run_on_after_attach() {
    if !require_privileges("guard_dry_run_on_after_attach") {
        return;
    }
    let lab = Lab::start(&[]);
    lab.tcp_set(ALLOWED_V4, "k", b"x");
    let a = lab.request(ATTACKER_V4, "get k\r\n", SILENCE);
    assert!(!a.answered(), "enforcing, yet {ATTACKER_V4} got {a:?}");
    let mut dropped = Tally::default();
    dropped.add(ATTACKER_V4, &a);

    lab.guard.ok(&["dry-run", "on"]).expect("guard dry-run on");
    let a = lab.request(ATTACKER_V6, "get k\r\n", ANSWER);
    assert!(a.complete, "dry-run on, yet {ATTACKER_V6} got {a:?}");
    let mut would_drop = Tally::default();
    would_drop.add(ATTACKER_V6, &a);

    assert_only(
        &lab.stats(),
        &[
            ("dropped", dropped.counter()),
            ("would_drop", would_drop.counter()),
        ],
    );
}
