//! `guard run`, the daemon, end to end. Root only.
//!
//! A real memcached (UDP on) runs in a server namespace; clients sit in another, joined by a
//! veth pair. `guard --config FILE run` runs inside the server namespace (it looks the
//! interface up there and serves metrics on the server's veth address), with a config in a
//! temporary directory and a pin path of its own. Every test checks what real requests got
//! back, and what guard counted, against what was sent.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use guard_tests::{
    lab::{self, Daemon, Guard, MEMCACHED_PORT, Memcached, Metrics, Netns, UdpAnswer, VethEnd},
    privilege::require_privileges,
};
use ipnet::IpNet;

const SRV_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 1));
/// Allowlisted in every test.
const ALLOWED_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 2));
/// Never allowlisted.
const ATTACKER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 3));
/// Allowlisted by a reload.
const NEWCOMER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 4));
/// Allowlisted at start, removed by a reload.
const LEAVER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 5));
/// Allowlisted through the include file.
const INCLUDED_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 78, 1, 6));
const SRV_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 1));
const ALLOWED_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 2));
const ATTACKER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x78, 0, 0, 0, 0, 0, 3));

/// The server's interface, where guard attaches.
const SRV_IF: &str = "srv0";
/// Where guard run serves metrics: the server's veth address, inside its namespace.
const METRICS: SocketAddr = SocketAddr::new(SRV_V4, 9211);

/// How long to wait for an answer that should come.
const ANSWER: Duration = Duration::from_secs(2);
/// How long to wait before concluding that no answer comes.
const SILENCE: Duration = Duration::from_millis(400);
/// How long guard run may take to start (load, attach, serve metrics).
const START: Duration = Duration::from_secs(15);
/// How long a reload may take to show in the log (guard polls every second).
const RELOAD: Duration = Duration::from_secs(5);

fn cidr(addr: IpAddr) -> String {
    IpNet::from(addr).to_string()
}

/// A running lab. Fields drop in order: guard run (killed), the pins (unload needs the
/// server namespace), memcached, the namespaces, then the config directory.
struct Lab {
    daemon: Option<Daemon>,
    guard: Guard,
    _memcached: Memcached,
    cli: Netns,
    srv: Netns,
    dir: tempfile::TempDir,
    runs: u32,
}

impl Lab {
    /// Namespaces, memcached, and a config allowlisting `allow` (plus the empty include file
    /// allow.txt) with `extra` lines appended. guard run is not started yet.
    fn new(allow: &[&str], extra: &str) -> Lab {
        let srv = Netns::new("gdsrv").expect("server namespace");
        let cli = Netns::new("gdcli").expect("client namespace");
        lab::veth(
            VethEnd {
                ns: &srv,
                ifname: SRV_IF,
                addrs: &["10.78.1.1/24", "fd00:78::1/64"],
            },
            VethEnd {
                ns: &cli,
                ifname: "cli0",
                addrs: &[
                    "10.78.1.2/24",
                    "10.78.1.3/24",
                    "10.78.1.4/24",
                    "10.78.1.5/24",
                    "10.78.1.6/24",
                    "fd00:78::2/64",
                    "fd00:78::3/64",
                ],
            },
        )
        .expect("veth pair");
        let memcached = Memcached::start(&srv, &[SRV_V4, SRV_V6]).expect("memcached");
        let dir = tempfile::Builder::new()
            .prefix("guard-daemon-test-")
            .tempdir()
            .expect("temporary directory");
        let lab = Lab {
            daemon: None,
            guard: Guard::new(&srv),
            _memcached: memcached,
            cli,
            srv,
            dir,
            runs: 0,
        };
        lab.write_include(&[]);
        lab.write_config(allow, extra);
        lab
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("guard.toml")
    }

    fn config_arg(&self) -> String {
        self.config_path().display().to_string()
    }

    fn config_text(&self, allow: &[&str], extra: &str) -> String {
        let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "# written by tests/tests/daemon.rs\n\
             interfaces = [\"{SRV_IF}\"]\n\
             allow = [{}]\n\
             allow_include = [\"allow.txt\"]\n\
             metrics_addr = \"{METRICS}\"\n\
             pin_path = \"{}\"\n\
             {extra}\n",
            allow.join(", "),
            self.guard.pin_path().display()
        )
    }

    /// Replaces the config (atomically: guard run never reads half a file).
    fn write_config(&self, allow: &[&str], extra: &str) {
        self.write_raw_config(&self.config_text(allow, extra));
    }

    fn write_raw_config(&self, text: &str) {
        lab::write_file_atomically(&self.config_path(), text).expect("writing the config");
    }

    /// Replaces the include file allow.txt.
    fn write_include(&self, prefixes: &[&str]) {
        let mut text = String::from("# allowlist include of tests/tests/daemon.rs\n");
        for p in prefixes {
            text.push_str(p);
            text.push('\n');
        }
        lab::write_file_atomically(&self.dir.path().join("allow.txt"), &text)
            .expect("writing the include file");
    }

    /// Starts guard run and waits until it serves metrics (it has applied the config then).
    fn start_daemon(&mut self) -> &mut Daemon {
        assert!(self.daemon.is_none(), "guard run is running already");
        self.runs += 1;
        let log = self.dir.path().join(format!("guard-run-{}.log", self.runs));
        let mut daemon =
            Daemon::start(&self.srv, &self.config_path(), &log).expect("starting guard run");
        daemon
            .wait_log(
                0,
                &format!("serving metrics on http://{METRICS}/metrics"),
                START,
            )
            .expect("guard run starting");
        self.daemon.insert(daemon)
    }

    fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("guard run is not running")
    }

    /// GET /metrics from inside the server namespace, checked and parsed.
    fn scrape(&self) -> Metrics {
        let r = self
            .srv
            .run(|| lab::http_get(METRICS, "/metrics", ANSWER))
            .expect("server namespace")
            .expect("GET /metrics");
        assert_eq!(r.status, 200, "GET /metrics: {r:?}");
        let ctype = r.header("content-type").unwrap_or("");
        assert!(
            ctype.starts_with("application/openmetrics-text"),
            "content-type {ctype:?}"
        );
        assert!(r.body.ends_with("# EOF\n"), "no # EOF trailer: {}", r.body);
        lab::parse_metrics(&r.body).expect("parsing /metrics")
    }

    /// `guard --pin-path PIN --config CONFIG ARGS...`, which must succeed.
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let config = self.config_arg();
        let mut full = vec!["--config", config.as_str()];
        full.extend_from_slice(args);
        self.guard.ok(&full)
    }

    /// `guard list --json`'s allowlist.
    fn list(&self) -> BTreeSet<String> {
        self.guard
            .allowlist()
            .expect("guard list --json")
            .into_iter()
            .collect()
    }

    /// `guard status --json`.
    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.guard.ok(&["status", "--json"]).expect("guard status"))
            .expect("parsing guard status --json")
    }

    /// The status of the server interface: (state, link id), or None when not attached.
    fn link(&self) -> Option<(String, u64)> {
        let status = self.status();
        let ifaces = status["interfaces"].as_array().expect("interfaces array");
        ifaces.iter().find(|i| i["name"] == SRV_IF).map(|i| {
            (
                i["state"].as_str().unwrap_or("?").to_owned(),
                i["link_id"].as_u64().expect("link_id"),
            )
        })
    }

    fn udp(&self, source: IpAddr) -> UdpSocket {
        self.cli
            .run(|| UdpSocket::bind(SocketAddr::new(source, 0)))
            .expect("client namespace")
            .expect("binding a client UDP socket")
    }

    fn request(&self, source: IpAddr, timeout: Duration) -> UdpAnswer {
        lab::udp_request(&self.udp(source), server(source), 7, "get k\r\n", timeout)
            .expect("sending a memcached UDP request")
    }

    /// Asserts that `source` is answered, and counts it as allowlisted.
    fn expect_answer(&self, source: IpAddr, tally: &mut Tally) {
        let a = self.request(source, ANSWER);
        assert!(a.complete, "{source} should be answered, got {a:?}");
        assert_eq!(a.text(), "END\r\n");
        tally.allowed.add(source, &a);
    }

    /// Asserts that `source` is not answered, and counts it as dropped.
    fn expect_silence(&self, source: IpAddr, tally: &mut Tally) {
        let a = self.request(source, SILENCE);
        assert!(!a.answered(), "{source} should be dropped, got {a:?}");
        tally.dropped.add(source, &a);
    }
}

fn server(source: IpAddr) -> SocketAddr {
    SocketAddr::new(
        if source.is_ipv4() { SRV_V4 } else { SRV_V6 },
        MEMCACHED_PORT,
    )
}

/// Packets and frame bytes sent with one expected verdict.
#[derive(Clone, Copy, Debug, Default)]
struct Count {
    packets: u64,
    bytes: u64,
}

impl Count {
    fn add(&mut self, source: IpAddr, answer: &UdpAnswer) {
        self.add_sent(source, answer.sent);
    }

    fn add_sent(&mut self, source: IpAddr, payload: usize) {
        self.packets += 1;
        self.bytes += lab::udp_frame_len(source, payload) as u64;
    }
}

/// What the test sent, by expected verdict.
#[derive(Debug, Default)]
struct Tally {
    allowed: Count,
    dropped: Count,
}

/// Asserts guard's packet and byte counters for `reason` on the server interface.
fn assert_counted(m: &Metrics, reason: &str, want: Count) {
    let labels = [("interface", SRV_IF), ("reason", reason)];
    assert_eq!(
        m.int("guard_packets_total", &labels),
        want.packets,
        "guard_packets_total{{reason={reason}}}"
    );
    assert_eq!(
        m.int("guard_bytes_total", &labels),
        want.bytes,
        "guard_bytes_total{{reason={reason}}}"
    );
}

/// A reload counter, 0 while guard run has not counted that result yet.
fn reloads(m: &Metrics, result: &str) -> u64 {
    m.find("guard_config_reloads_total", &[("result", result)])
        .first()
        .map_or(0, |s| s.value as u64)
}

/// Sets the flag when dropped, so a helper thread stops even when the test panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a steady client saw.
#[derive(Debug, Default)]
struct Steady {
    sent: u64,
    answered: u64,
    payload: usize,
    worst: Duration,
    /// Request ids that got no (complete) answer.
    lost: Vec<u16>,
}

/// Sends `get k` from `sock` every 10 ms until `stop`, waiting for each answer (up to
/// ANSWER).
fn steady_client(sock: &UdpSocket, server: SocketAddr, stop: &AtomicBool) -> Steady {
    let mut s = Steady::default();
    let mut id: u16 = 1000;
    while !stop.load(Ordering::SeqCst) {
        id = id.wrapping_add(1);
        let started = Instant::now();
        let a = lab::udp_request(sock, server, id, "get k\r\n", ANSWER).expect("steady client");
        s.sent += 1;
        s.payload = a.sent;
        if a.complete {
            s.answered += 1;
            s.worst = s.worst.max(started.elapsed());
        } else {
            s.lost.push(id);
        }
        thread::sleep(Duration::from_millis(10));
    }
    s
}

#[test]
fn metrics_report_what_guard_run_judged() {
    if !require_privileges("metrics_report_what_guard_run_judged") {
        return;
    }
    let mut lab = Lab::new(&[&cidr(ALLOWED_V4), &cidr(ALLOWED_V6)], "");
    lab.start_daemon();

    let m = lab.scrape();
    assert_eq!(m.int("guard_up", &[]), 1);
    let attached = m.find("guard_attached", &[("interface", SRV_IF)]);
    assert_eq!(attached.len(), 1, "guard_attached: {attached:?}");
    assert_eq!(attached[0].value, 1.0);
    let mode = attached[0].labels.get("mode").map(String::as_str);
    assert!(
        matches!(mode, Some("native" | "skb")),
        "guard_attached mode {mode:?}"
    );
    assert_eq!(m.int("guard_allowlist_prefixes", &[("family", "ipv4")]), 1);
    assert_eq!(m.int("guard_allowlist_prefixes", &[("family", "ipv6")]), 1);
    assert_eq!(m.int("guard_denylist_prefixes", &[("family", "ipv4")]), 0);
    assert_eq!(m.int("guard_dry_run", &[]), 0);
    assert_eq!(m.int("guard_policy", &[("policy", "drop")]), 1);
    assert_eq!(m.int("guard_policy", &[("policy", "rate-limit")]), 0);
    assert_eq!(m.int("guard_protected_ports", &[]), 1);
    let info = m.find("guard_build_info", &[]);
    assert_eq!(info.len(), 1, "guard_build_info: {info:?}");
    assert_eq!(info[0].value, 1.0);
    assert_eq!(
        info[0].labels.get("version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "{info:?}"
    );
    for (family, kind) in [
        ("guard_packets", "counter"),
        ("guard_bytes", "counter"),
        ("guard_bucket_inserts", "counter"),
        ("guard_attached", "gauge"),
        ("guard_up", "gauge"),
    ] {
        assert_eq!(
            m.types.get(family).map(String::as_str),
            Some(kind),
            "TYPE of {family}: {:?}",
            m.types
        );
    }
    assert_counted(&m, "dropped", Count::default());
    assert_counted(&m, "allowlisted", Count::default());

    // Known traffic: N requests from unlisted sources, M from allowlisted ones.
    let mut tally = Tally::default();
    for attacker in [
        ATTACKER_V4,
        ATTACKER_V4,
        ATTACKER_V4,
        ATTACKER_V6,
        ATTACKER_V6,
    ] {
        lab.expect_silence(attacker, &mut tally);
    }
    for client in [ALLOWED_V4, ALLOWED_V4, ALLOWED_V6, ALLOWED_V6] {
        lab.expect_answer(client, &mut tally);
    }
    let m = lab.scrape();
    assert_counted(&m, "dropped", tally.dropped);
    assert_counted(&m, "allowlisted", tally.allowed);
    for reason in ["would_drop", "rate_limited", "denied", "malformed"] {
        assert_counted(&m, reason, Count::default());
    }
    eprintln!(
        "metrics: dropped {:?}, allowlisted {:?}",
        tally.dropped, tally.allowed
    );

    // `guard stats --format prometheus` prints the same numbers, in the text format.
    let text = lab
        .guard
        .ok(&["stats", "--format", "prometheus"])
        .expect("guard stats --format prometheus");
    assert!(!text.contains("# EOF"), "{text}");
    let p = lab::parse_metrics(&text).expect("parsing guard stats --format prometheus");
    assert_eq!(
        p.types.get("guard_packets_total").map(String::as_str),
        Some("counter"),
        "{:?}",
        p.types
    );
    assert_counted(&p, "dropped", tally.dropped);
    assert_counted(&p, "allowlisted", tally.allowed);
    let mut compared = 0;
    for s in &p.samples {
        // Neighbour discovery on the veth may move not_protected between the two reads.
        if s.labels.get("reason").is_some_and(|r| r == "not_protected") {
            continue;
        }
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let served = m.value(&s.name, &labels).unwrap_or_else(|e| {
            panic!("guard stats has {s:?}, /metrics does not: {e:#}");
        });
        assert_eq!(served, s.value, "{} {:?}", s.name, s.labels);
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} samples compared");

    // And `guard stats --json` agrees.
    let json = lab.guard.stats().expect("guard stats --json");
    assert_eq!(json.get("dropped").packets, tally.dropped.packets);
    assert_eq!(json.get("allowlisted").bytes, tally.allowed.bytes);
}

#[test]
fn reload_applies_changes_without_dropping_allowlisted_requests() {
    if !require_privileges("reload_applies_changes_without_dropping_allowlisted_requests") {
        return;
    }
    let allowed = cidr(ALLOWED_V4);
    let mut lab = Lab::new(&[&allowed, &cidr(LEAVER_V4)], "");
    lab.start_daemon();
    let mut tally = Tally::default();
    lab.expect_answer(LEAVER_V4, &mut tally);
    lab.expect_silence(NEWCOMER_V4, &mut tally);
    lab.expect_silence(INCLUDED_V4, &mut tally);

    let sock = lab.udp(ALLOWED_V4);
    let stop = AtomicBool::new(false);
    let steady = thread::scope(|s| {
        let client = s.spawn(|| steady_client(&sock, server(ALLOWED_V4), &stop));
        let _stop = StopOnDrop(&stop);
        thread::sleep(Duration::from_millis(300));

        // An edit and SIGHUP: one prefix added, an unrelated one removed. (guard may notice
        // the file change by itself before the signal arrives; either way the SIGHUP reload
        // comes after it.)
        let mark = lab.daemon().log_mark();
        lab.write_config(&[&allowed, &cidr(NEWCOMER_V4)], "");
        lab.daemon().signal(libc::SIGHUP).expect("SIGHUP");
        lab.daemon()
            .wait_log(mark, "reloaded (SIGHUP)", RELOAD)
            .expect("reload on SIGHUP");
        lab.daemon()
            .wait_log(mark, "allowlist +1 -1", RELOAD)
            .expect("the reload's changes");
        assert_eq!(
            lab.list(),
            BTreeSet::from([allowed.clone(), cidr(NEWCOMER_V4)])
        );
        lab.expect_answer(NEWCOMER_V4, &mut tally);
        lab.expect_silence(LEAVER_V4, &mut tally);

        // The include file changes, no signal: guard's polling picks it up.
        let mark = lab.daemon().log_mark();
        lab.write_include(&[&cidr(INCLUDED_V4)]);
        let line = lab
            .daemon()
            .wait_log(mark, "reloaded (a config file changed)", RELOAD)
            .expect("reload on an include file change");
        assert!(line.contains("allowlist +1 -0"), "{line}");
        lab.expect_answer(INCLUDED_V4, &mut tally);

        let mark = lab.daemon().log_mark();
        lab.write_include(&[]);
        let line = lab
            .daemon()
            .wait_log(mark, "reloaded (a config file changed)", RELOAD)
            .expect("reload on an include file change");
        assert!(line.contains("allowlist +0 -1"), "{line}");
        lab.expect_silence(INCLUDED_V4, &mut tally);
        assert_eq!(
            lab.list(),
            BTreeSet::from([allowed.clone(), cidr(NEWCOMER_V4)])
        );

        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        client.join().expect("steady client thread")
    });
    eprintln!(
        "steady allowlisted client during 3 reloads: sent {}, answered {}, slowest answer {:?}",
        steady.sent, steady.answered, steady.worst
    );
    assert!(steady.sent >= 100, "only {} requests sent", steady.sent);
    assert_eq!(
        steady.answered, steady.sent,
        "allowlisted requests lost during reloads: ids {:?}",
        steady.lost
    );

    // Guard counted every steady request as allowlisted, nothing else as dropped.
    let mut allowed_count = tally.allowed;
    for _ in 0..steady.sent {
        allowed_count.add_sent(ALLOWED_V4, steady.payload);
    }
    let m = lab.scrape();
    assert_counted(&m, "allowlisted", allowed_count);
    assert_counted(&m, "dropped", tally.dropped);
    assert_eq!(
        m.types.get("guard_config_reloads").map(String::as_str),
        Some("counter")
    );
    assert!(
        reloads(&m, "ok") >= 3,
        "{:?}",
        m.find("guard_config_reloads_total", &[])
    );
    assert_eq!(reloads(&m, "rejected"), 0);
    assert_eq!(reloads(&m, "error"), 0);
}

#[test]
fn invalid_config_is_rejected_and_running_state_kept() {
    if !require_privileges("invalid_config_is_rejected_and_running_state_kept") {
        return;
    }
    let allowed = cidr(ALLOWED_V4);
    let mut lab = Lab::new(&[&allowed], "");
    lab.start_daemon();
    let mut tally = Tally::default();
    lab.expect_answer(ALLOWED_V4, &mut tally);
    lab.expect_silence(ATTACKER_V4, &mut tally);
    let list = lab.list();
    let ok = reloads(&lab.scrape(), "ok");

    // An invalid CIDR. Were the rest applied, ALLOWED would lose its entry.
    let mark = lab.daemon().log_mark();
    lab.write_config(&["10.78.1.300/32"], "");
    lab.daemon().signal(libc::SIGHUP).expect("SIGHUP");
    let line = lab
        .daemon()
        .wait_log(mark, "config rejected (SIGHUP)", RELOAD)
        .expect("rejection on SIGHUP");
    assert!(
        line.contains("keeping the running state")
            && line.contains("line 3")
            && line.contains("10.78.1.300"),
        "{line}"
    );
    let m = lab.scrape();
    let rejected = reloads(&m, "rejected");
    assert!(
        rejected >= 1,
        "{:?}",
        m.find("guard_config_reloads_total", &[])
    );
    assert_eq!(reloads(&m, "ok"), ok);
    assert_eq!(lab.list(), list);
    lab.expect_answer(ALLOWED_V4, &mut tally);
    lab.expect_silence(ATTACKER_V4, &mut tally);

    // The command line refuses to build on an invalid config, and changes nothing.
    let out = lab
        .guard
        .run(&["--config", &lab.config_arg(), "allow", "10.78.1.9/32"])
        .expect("running guard allow");
    assert!(
        !out.status.success(),
        "guard allow succeeded on a bad config"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config file is invalid"), "{err}");
    assert_eq!(lab.list(), list);

    // Broken TOML, noticed by polling alone.
    let mark = lab.daemon().log_mark();
    lab.write_raw_config(
        &lab.config_text(&[], "")
            .replace("interfaces = [", "interfaces = [[["),
    );
    lab.daemon()
        .wait_log(mark, "config rejected (a config file changed)", RELOAD)
        .expect("rejection of broken TOML");
    lab.expect_answer(ALLOWED_V4, &mut tally);

    // A fixed file is applied by polling.
    let mark = lab.daemon().log_mark();
    lab.write_config(&[&allowed, &cidr(NEWCOMER_V4)], "");
    let line = lab
        .daemon()
        .wait_log(mark, "reloaded (a config file changed)", RELOAD)
        .expect("reload of the fixed config");
    assert!(line.contains("allowlist +1 -0"), "{line}");
    lab.expect_answer(NEWCOMER_V4, &mut tally);
    lab.expect_answer(ALLOWED_V4, &mut tally);
    let m = lab.scrape();
    assert_eq!(reloads(&m, "ok"), ok + 1);
    assert!(reloads(&m, "rejected") > rejected);
    assert_counted(&m, "allowlisted", tally.allowed);
    assert_counted(&m, "dropped", tally.dropped);
}

/// What an attacker's socket saw.
#[derive(Debug, Default)]
struct Attack {
    sent: u64,
    answers: u64,
}

/// Sends `get k` from `sock` every 2 ms until `stop`, counting every datagram the server
/// sends back (there should be none); then listens 500 ms more.
fn attack(sock: &UdpSocket, server: SocketAddr, stop: &AtomicBool) -> Attack {
    let mut a = Attack::default();
    let mut buf = [0u8; 2048];
    let mut count = |sock: &UdpSocket, a: &mut Attack| loop {
        match sock.recv_from(&mut buf) {
            Ok((_, from)) if from == server => a.answers += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    };
    sock.set_read_timeout(Some(Duration::from_millis(2)))
        .expect("read timeout");
    let mut id: u16 = 0;
    while !stop.load(Ordering::SeqCst) {
        id = id.wrapping_add(1);
        sock.send_to(&lab::memcached_udp_request(id, "get k\r\n"), server)
            .expect("attacker send");
        a.sent += 1;
        count(sock, &mut a);
    }
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("read timeout");
    count(sock, &mut a);
    a
}

#[test]
fn kill_9_keeps_guarding_and_restart_adopts_without_reattach() {
    if !require_privileges("kill_9_keeps_guarding_and_restart_adopts_without_reattach") {
        return;
    }
    let mut lab = Lab::new(&[&cidr(ALLOWED_V4), &cidr(ALLOWED_V6), "192.0.2.0/24"], "");
    lab.start_daemon();
    let (state, link_id) = lab.link().expect("attached to the server interface");
    assert_eq!(state, "attached");
    let list = lab.list();
    assert_eq!(list.len(), 3, "{list:?}");

    let sock = lab.udp(ATTACKER_V4);
    let stop = AtomicBool::new(false);
    let (attack, dropped) = thread::scope(|s| {
        let attacker = s.spawn(|| attack(&sock, server(ATTACKER_V4), &stop));
        let _stop = StopOnDrop(&stop);
        thread::sleep(Duration::from_millis(300));
        let before = lab.guard.stats().expect("stats").get("dropped").packets;
        let status = lab.daemon().kill().expect("kill -9 guard run");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{status}"
        );
        let mut dropped = vec![before];
        for _ in 0..3 {
            thread::sleep(Duration::from_millis(300));
            dropped.push(lab.guard.stats().expect("stats").get("dropped").packets);
        }
        // Still attached, same link, and allowlisted clients still answered.
        assert_eq!(lab.link(), Some(("attached".to_owned(), link_id)));
        lab.expect_answer(ALLOWED_V4, &mut Tally::default());
        stop.store(true, Ordering::SeqCst);
        (attacker.join().expect("attacker thread"), dropped)
    });
    eprintln!(
        "attacker across kill -9: sent {}, answers {}; dropped counter {dropped:?}",
        attack.sent, attack.answers
    );
    assert!(attack.sent >= 100, "only {} attack requests", attack.sent);
    assert_eq!(attack.answers, 0, "attack requests were answered");
    assert!(
        dropped.windows(2).all(|w| w[0] < w[1]),
        "the dropped counter did not keep growing after kill -9: {dropped:?}"
    );

    // A new guard run adopts what is pinned: no change, same link, same allowlist.
    lab.daemon = None;
    lab.start_daemon();
    let log = lab.daemon().log();
    assert!(log.contains("applied: no change"), "{log}");
    assert_eq!(lab.link(), Some(("attached".to_owned(), link_id)));
    assert_eq!(lab.list(), list);
    let m = lab.scrape();
    assert!(
        m.int(
            "guard_packets_total",
            &[("interface", SRV_IF), ("reason", "dropped")]
        ) >= *dropped.last().expect("samples"),
        "counters were reset"
    );
    lab.expect_silence(ATTACKER_V4, &mut Tally::default());
}

/// The parallel `guard allow`/`guard revoke` workload of the concurrency tests, and what
/// the allowlist should be afterwards.
struct Workload {
    expected: BTreeSet<String>,
    failures: Vec<String>,
    invocations: usize,
    took: Duration,
}

const WORKERS: usize = 8;

/// The config's allowlist for the concurrency tests: the two allowlisted clients and one
/// seed prefix per worker.
fn workload_config() -> Vec<String> {
    let mut allow = vec![cidr(ALLOWED_V4), cidr(ALLOWED_V6)];
    allow.extend((0..WORKERS).map(|k| format!("10.90.{k}.0/24")));
    allow
}

/// Eight processes at a time, each with `--config`: worker k adds `each` prefixes of its own,
/// one command at a time (with `check_each`, checking after each that `guard list` has it),
/// checks they are all listed, then revokes two of them in one command, and its seed.
fn run_workload(lab: &Lab, each: usize, check_each: bool) -> Workload {
    let started = Instant::now();
    let failures: Vec<String> = thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|k| {
                // A failed command ends the worker; a failed check is recorded and the worker
                // goes on, so that the final state is still the one asked for.
                s.spawn(move || -> (Vec<String>, anyhow::Result<()>) {
                    let mut problems = Vec::new();
                    let result = (|| {
                        let mine: Vec<String> =
                            (0..each).map(|j| format!("10.100.{k}.{j}/32")).collect();
                        for p in &mine {
                            lab.cli(&["allow", p])?;
                            if check_each && !lab.guard.allowlist()?.contains(p) {
                                problems.push(format!(
                                    "worker {k}: `guard allow {p}` succeeded, but guard list \
                                     no longer has it"
                                ));
                            }
                        }
                        let list = lab.guard.allowlist()?;
                        let missing: Vec<&String> =
                            mine.iter().filter(|p| !list.contains(p)).collect();
                        if !missing.is_empty() {
                            problems.push(format!(
                                "worker {k}: allowed, then gone from guard list: {missing:?}"
                            ));
                        }
                        lab.cli(&["revoke", &mine[0], &mine[1]])?;
                        lab.cli(&["revoke", &format!("10.90.{k}.0/24")])?;
                        anyhow::Ok(())
                    })();
                    (problems, result)
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                let (mut problems, result) = w.join().expect("worker thread");
                if let Err(e) = result {
                    problems.push(format!("{e:#}"));
                }
                problems
            })
            .collect()
    });
    let mut expected: BTreeSet<String> = [cidr(ALLOWED_V4), cidr(ALLOWED_V6)].into();
    for k in 0..WORKERS {
        for j in 2..each {
            expected.insert(format!("10.100.{k}.{j}/32"));
        }
    }
    let checks = if check_each { each } else { 0 };
    Workload {
        expected,
        failures,
        invocations: WORKERS * (each + checks + 3),
        took: started.elapsed(),
    }
}

/// The config file's inline allowlist (the include file stays empty in these tests).
fn config_allow(lab: &Lab) -> BTreeSet<String> {
    let text = std::fs::read_to_string(lab.config_path()).expect("reading the config");
    let table: toml::Table = toml::from_str(&text).expect("the config is valid TOML");
    table["allow"]
        .as_array()
        .expect("allow is an array")
        .iter()
        .map(|v| {
            let net: IpNet = v.as_str().expect("a string").parse().expect("a CIDR");
            net.to_string()
        })
        .collect()
}

/// Asserts that the config file, the live allowlist and the expectation agree, that no
/// worker failed, and that no temporary file was left behind.
fn assert_in_step(lab: &Lab, w: &Workload) {
    let file = config_allow(lab);
    let live = lab.list();
    let report = |what: &str| {
        format!(
            "{what}\nin the config, not live: {:?}\nlive, not in the config: {:?}\n\
             expected, not live: {:?}\nlive, not expected: {:?}\nworker failures: {:#?}",
            file.difference(&live).collect::<Vec<_>>(),
            live.difference(&file).collect::<Vec<_>>(),
            w.expected.difference(&live).collect::<Vec<_>>(),
            live.difference(&w.expected).collect::<Vec<_>>(),
            w.failures,
        )
    };
    assert!(
        file == live,
        "{}",
        report("the config file and the live allowlist differ")
    );
    assert!(
        live == w.expected,
        "{}",
        report("the live allowlist is not what the commands asked for")
    );
    assert!(w.failures.is_empty(), "{}", report("workers failed"));
    lab.cli(&["check-config"])
        .expect("the config still validates");
    let leftovers: Vec<_> = std::fs::read_dir(lab.dir.path())
        .expect("reading the config directory")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn concurrent_cli_edits_keep_config_and_maps_in_step() {
    if !require_privileges("concurrent_cli_edits_keep_config_and_maps_in_step") {
        return;
    }
    let initial = workload_config();
    let initial: Vec<&str> = initial.iter().map(String::as_str).collect();
    let mut lab = Lab::new(&initial, "");
    // guard run loads and attaches the guard, then stops; the guard stays.
    lab.start_daemon();
    lab.daemon().signal(libc::SIGTERM).expect("SIGTERM");
    lab.daemon().wait_exit(RELOAD).expect("guard run exiting");
    assert_eq!(lab.list().len(), initial.len());

    let w = run_workload(&lab, 10, false);
    eprintln!(
        "{} guard invocations from {WORKERS} concurrent processes in {:?}",
        w.invocations, w.took
    );
    assert_in_step(&lab, &w);
    let mut tally = Tally::default();
    lab.expect_answer(ALLOWED_V4, &mut tally);
    lab.expect_silence(ATTACKER_V4, &mut tally);
}

#[test]
fn concurrent_cli_edits_while_guard_run_reloads() {
    if !require_privileges("concurrent_cli_edits_while_guard_run_reloads") {
        return;
    }
    let initial = workload_config();
    let initial: Vec<&str> = initial.iter().map(String::as_str).collect();
    let mut lab = Lab::new(&initial, "");
    lab.start_daemon();

    // The same workload, longer, while guard run reloads on every file change it sees.
    let w = run_workload(&lab, 50, true);
    let reloaded = lab.daemon().log().matches("reloaded (").count();
    eprintln!(
        "{} guard invocations from {WORKERS} concurrent processes in {:?}; guard run reloaded \
         {reloaded} times meanwhile",
        w.invocations, w.took
    );
    // Let guard run see the last change, then nothing may have moved.
    thread::sleep(Duration::from_millis(2500));
    assert_in_step(&lab, &w);
    let m = lab.scrape();
    assert_eq!(
        m.int("guard_allowlist_prefixes", &[("family", "ipv4")])
            + m.int("guard_allowlist_prefixes", &[("family", "ipv6")]),
        w.expected.len() as u64
    );
}

/// Holds the pin root's lock (flock, as every guard command and reload takes it) until
/// dropped.
struct PinLock {
    _dir: std::fs::File,
}

impl PinLock {
    fn take(lab: &Lab) -> PinLock {
        use std::os::fd::AsRawFd as _;
        let dir = std::fs::File::open(lab.guard.pin_path()).expect("opening the pin root");
        // SAFETY: flock on a valid fd.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        PinLock { _dir: dir }
    }
}

/// The interleaving behind the concurrency test, made deterministic: guard run reads a
/// changed config, then waits for the pin lock that a `guard allow` holds; that command
/// writes the config again (as it does, under the lock). The second change must be applied
/// too, however late.
#[test]
fn config_change_made_while_a_reload_waits_is_applied() {
    if !require_privileges("config_change_made_while_a_reload_waits_is_applied") {
        return;
    }
    let allowed = cidr(ALLOWED_V4);
    let mut lab = Lab::new(&[&allowed], "");
    lab.start_daemon();

    let lock = PinLock::take(&lab);
    let mark = lab.daemon().log_mark();
    lab.write_config(&[&allowed, &cidr(NEWCOMER_V4)], "");
    // guard run polls every second: by now it has read the file and waits for the lock.
    thread::sleep(Duration::from_millis(1500));
    let log = lab.daemon().log();
    assert!(
        !log[mark..].contains("reloaded"),
        "guard run reloaded without the pin lock: {log}"
    );
    lab.write_config(&[&allowed, &cidr(NEWCOMER_V4), &cidr(INCLUDED_V4)], "");
    drop(lock);
    lab.daemon()
        .wait_log(mark, "reloaded (a config file changed)", RELOAD)
        .expect("the reload");
    // Three more polls.
    thread::sleep(Duration::from_millis(3000));
    let want = BTreeSet::from([allowed, cidr(NEWCOMER_V4), cidr(INCLUDED_V4)]);
    assert_eq!(
        lab.list(),
        want,
        "the config says {want:?}, and guard run never applied its last change; log:\n{}",
        lab.daemon().log()
    );
    let mut tally = Tally::default();
    lab.expect_answer(INCLUDED_V4, &mut tally);
}

#[test]
fn sigterm_leaves_guard_attached_unless_detach_on_exit() {
    if !require_privileges("sigterm_leaves_guard_attached_unless_detach_on_exit") {
        return;
    }
    let allowed = cidr(ALLOWED_V4);
    let mut lab = Lab::new(&[&allowed], "");
    lab.start_daemon();
    let (_, link_id) = lab.link().expect("attached");

    // Default: SIGTERM, and the guard stays (fail closed).
    lab.daemon().signal(libc::SIGTERM).expect("SIGTERM");
    let status = lab.daemon().wait_exit(RELOAD).expect("guard run exiting");
    assert!(status.success(), "guard run exited with {status}");
    let log = lab.daemon().log();
    assert!(log.contains("the guard stays attached"), "{log}");
    assert_eq!(lab.link(), Some(("attached".to_owned(), link_id)));
    let mut tally = Tally::default();
    lab.expect_silence(ATTACKER_V4, &mut tally);
    lab.expect_answer(ALLOWED_V4, &mut tally);

    // detach_on_exit = true: a new guard run adopts the guard, and SIGTERM detaches it.
    lab.write_config(&[&allowed], "detach_on_exit = true");
    lab.daemon = None;
    lab.start_daemon();
    assert!(lab.daemon().log().contains("applied: no change"));
    assert_eq!(lab.link(), Some(("attached".to_owned(), link_id)));
    lab.daemon().signal(libc::SIGTERM).expect("SIGTERM");
    let status = lab.daemon().wait_exit(RELOAD).expect("guard run exiting");
    assert!(status.success(), "guard run exited with {status}");
    let log = lab.daemon().log();
    assert!(
        log.contains(&format!("detached from {SRV_IF} (detach_on_exit)")),
        "{log}"
    );
    assert_eq!(lab.link(), None, "{}", lab.status());
    // Unguarded now: the attacker is answered, and guard counts nothing more.
    let before = lab.guard.stats().expect("stats");
    let a = lab.request(ATTACKER_V4, ANSWER);
    assert!(a.complete, "detached, yet the attacker got {a:?}");
    assert_eq!(lab.guard.stats().expect("stats"), before);
    // The allowlist is still loaded: the pins are for `guard unload` to remove.
    assert_eq!(lab.list(), BTreeSet::from([allowed]));
}
