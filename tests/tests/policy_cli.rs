//! The CLI of the rate-limit policy, the denylist and top talkers: bad input gets one line on
//! stderr starting `guard: error: `, exit status 1, nothing on stdout, and changes nothing;
//! good input round-trips through `guard policy --json`, `guard status --json` and
//! `guard list --json`. Root only: each test loads a guard of its own, in a namespace of its
//! own.

use std::process::Output;

use guard_tests::{
    lab::{self, Guard, Netns},
    privilege::require_privileges,
};
use serde_json::{Value, json};

/// Checks that `out` is a guard error: exit status 1, one line on stderr starting
/// `guard: error: `, nothing on stdout. Returns that line, or what is wrong.
fn check_error(out: &Output, what: &str) -> Result<String, String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.code() != Some(1) {
        return Err(format!(
            "`{what}`: expected exit status 1, got {}; stdout {stdout:?}, stderr {stderr:?}",
            out.status
        ));
    }
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.len() != 1 || !lines[0].starts_with("guard: error: ") {
        return Err(format!(
            "`{what}`: stderr must be one line starting `guard: error: `: {stderr:?}"
        ));
    }
    if !stdout.is_empty() {
        return Err(format!("`{what}`: printed on stdout: {stdout:?}"));
    }
    Ok(lines[0].to_owned())
}

/// Asserts that `out` is a guard error (see `check_error`); returns the error line.
#[track_caller]
fn assert_error(out: &Output, what: &str) -> String {
    check_error(out, what).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `guard ARGS` and asserts it fails cleanly; returns the error line.
#[track_caller]
fn expect_error(guard: &Guard, args: &[&str]) -> String {
    let out = guard.run(args).expect("running guard");
    assert_error(&out, &format!("guard {}", args.join(" ")))
}

/// A namespace with a veth pair `v0`/`v1` inside it (both ends up), for attaching.
fn sandbox() -> Netns {
    let ns = Netns::new("gpol").expect("namespace");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .expect("veth pair");
    for dev in ["v0", "v1"] {
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }
    ns
}

/// Whether `dev` in `ns` has an XDP program.
fn has_xdp(ns: &Netns, dev: &str) -> bool {
    lab::run_ok(ns.command("ip").args(["link", "show", "dev", dev]))
        .expect("ip link show")
        .contains("xdp")
}

/// What a loaded guard looks like from outside.
#[derive(Debug, PartialEq)]
struct Snapshot {
    status: Value,
    policy: Value,
    lists: Value,
    ports: String,
}

fn snapshot(guard: &Guard) -> Snapshot {
    Snapshot {
        status: guard
            .json(&["status", "--json"])
            .expect("guard status --json"),
        policy: guard
            .json(&["policy", "--json"])
            .expect("guard policy --json"),
        lists: guard.json(&["list", "--json"]).expect("guard list --json"),
        ports: guard.ok(&["ports"]).expect("guard ports"),
    }
}

/// `guard policy --json`.
fn policy(guard: &Guard) -> Value {
    guard
        .json(&["policy", "--json"])
        .expect("guard policy --json")
}

#[test]
fn bad_policy_deny_and_attach_input_changes_nothing() {
    if !require_privileges("bad_policy_deny_and_attach_input_changes_nothing") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    guard
        .ok(&[
            "attach",
            "v0",
            "--allow",
            "10.77.0.0/16",
            "--policy",
            "rate-limit",
            "--per-source",
            "200/20",
            "--per-prefix",
            "2000/400",
            "--global",
            "5000/500",
            "--prefix-v4",
            "24",
            "--prefix-v6",
            "64",
            "--top-sample",
            "4",
        ])
        .expect("guard attach v0");
    guard
        .ok(&["deny", "10.99.0.0/16", "2001:db8:b::/48"])
        .expect("guard deny");
    let before = snapshot(&guard);
    assert_eq!(
        before.policy,
        json!({
            "policy": "rate-limit",
            "per_source": "200/20",
            "per_prefix": "2000/400",
            "global": "5000/500",
            "prefix_v4": 24,
            "prefix_v6": 64,
        })
    );
    assert_eq!(
        before.lists,
        json!({"allow": ["10.77.0.0/16"], "deny": ["10.99.0.0/16", "2001:db8:b::/48"]})
    );
    assert_eq!(before.status["top_sample"], 4, "{}", before.status);
    assert_eq!(before.status["deny_v4"], 1, "{}", before.status);
    assert_eq!(before.status["deny_v6"], 1, "{}", before.status);

    // (arguments, what the error line must mention)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // Rates: at least 1 per second, a burst of at least 1, numbers.
        (vec!["policy", "rate-limit", "--per-source", "0"], "0"),
        (vec!["policy", "rate-limit", "--global", "-5"], "-5"),
        (vec!["policy", "rate-limit", "--global=-5"], "-5"),
        (vec!["policy", "rate-limit", "--per-prefix", "10/0"], "10/0"),
        (vec!["policy", "rate-limit", "--global", "abc"], "abc"),
        (
            vec!["policy", "rate-limit", "--per-source", "10/5/2"],
            "10/5/2",
        ),
        (vec!["policy", "rate-limit", "--prefix-v4", "33"], "33"),
        (vec!["policy", "rate-limit", "--prefix-v6", "129"], "129"),
        // Rates belong to the rate-limit policy.
        (vec!["policy", "drop", "--global", "100"], "rate"),
        (vec!["policy", "--per-source", "10"], "rate"),
        // Attach: rates without --policy rate-limit, a sample rate that is not a power of
        // two, a prefix length out of range, map sizes other than the loaded ones.
        (
            vec!["attach", "v1", "--per-source", "10"],
            "--policy rate-limit",
        ),
        (
            vec!["attach", "v0", "--per-source", "10"],
            "--policy rate-limit",
        ),
        (
            vec![
                "attach",
                "v1",
                "--policy",
                "rate-limit",
                "--top-sample",
                "3",
            ],
            "3",
        ),
        (vec!["attach", "v1", "--top-sample", "3"], "3"),
        (
            vec![
                "attach",
                "v1",
                "--policy",
                "rate-limit",
                "--prefix-v4",
                "33",
            ],
            "33",
        ),
        (
            vec!["attach", "v1", "--policy", "drop", "--global", "100"],
            "rate",
        ),
        (vec!["attach", "v1", "--source-buckets", "4096"], "4096"),
        (vec!["attach", "v1", "--prefix-buckets", "4096"], "4096"),
        (vec!["attach", "v1", "--top-talkers", "64"], "64"),
        // The denylist: networks only, exactly as denied when removing.
        (vec!["deny", "10.0.0.1/8"], "10.0.0.0/8"),
        (vec!["deny", "10.0.0.0/33"], "10.0.0.0/33"),
        (vec!["deny", "foo"], "foo"),
        (vec!["deny", "10.1.0.0/16", "foo"], "foo"),
        (vec!["undeny", "10.98.0.0/16"], "10.98.0.0/16"),
        (
            vec!["undeny", "10.99.0.0/16", "10.98.0.0/16"],
            "10.98.0.0/16",
        ),
        (vec!["undeny", "10.99.1.0/24"], "10.99.1.0/24"),
        (vec!["undeny", "10.77.0.0/16"], "10.77.0.0/16"),
    ];
    let mut failures = Vec::new();
    for (args, mention) in &cases {
        let what = format!("guard {}", args.join(" "));
        let out = guard.run(args).expect("running guard");
        // Collect every failing case before failing, for one complete report.
        match check_error(&out, &what) {
            Ok(line) if !line.contains(mention) => {
                failures.push(format!("`{what}`: {line:?} should mention {mention:?}"))
            }
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
        assert_eq!(
            snapshot(&guard),
            before,
            "`{what}` failed but changed something"
        );
        assert!(!has_xdp(&ns, "v1"), "`{what}` attached to v1");
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs did not get a one-line `guard: error:` with exit status 1:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let e = expect_error(&guard, &["deny", "10.0.0.1/8"]);
    assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
}

#[test]
fn a_second_interface_with_other_bucket_sizes_is_refused() {
    if !require_privileges("a_second_interface_with_other_bucket_sizes_is_refused") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    guard
        .ok(&[
            "attach",
            "v0",
            "--policy",
            "rate-limit",
            "--source-buckets",
            "4096",
            "--prefix-buckets",
            "2048",
            "--top-talkers",
            "128",
        ])
        .expect("guard attach v0");
    let before = snapshot(&guard);
    for args in [
        &["attach", "v1", "--source-buckets", "8192"][..],
        &[
            "attach",
            "v1",
            "--source-buckets",
            "4096",
            "--prefix-buckets",
            "4096",
        ],
        &["attach", "v1", "--top-talkers", "1024"],
    ] {
        let what = format!("guard {}", args.join(" "));
        let e = expect_error(&guard, args);
        assert!(
            e.contains("unload"),
            "`{what}` should say how to get other sizes: {e}"
        );
        assert!(!has_xdp(&ns, "v1"), "`{what}` attached to v1");
        assert_eq!(snapshot(&guard), before, "`{what}` changed something");
    }
    let fill = lab::pinned_map_fill(&lab::pinned_map_path(&guard, "GUARD_SRC_BKT"))
        .expect("bpftool on GUARD_SRC_BKT");
    assert_eq!(fill.max_entries, 4096);
    // The same sizes, or none, are fine.
    guard
        .ok(&[
            "attach",
            "v1",
            "--source-buckets",
            "4096",
            "--prefix-buckets",
            "2048",
            "--top-talkers",
            "128",
        ])
        .expect("attach v1 with the loaded sizes");
    assert!(has_xdp(&ns, "v1"));
    guard.ok(&["detach", "v1"]).expect("detach v1");
    guard
        .ok(&["attach", "v1"])
        .expect("attach v1 without sizes");
    assert!(has_xdp(&ns, "v1"));
}

#[test]
fn policy_round_trip() {
    if !require_privileges("policy_round_trip") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    guard.ok(&["attach", "v0"]).expect("guard attach v0");
    let p = policy(&guard);
    assert_eq!(p["policy"], "drop", "{p}");
    assert_eq!(guard.ok(&["policy"]).expect("guard policy").trim(), "drop");

    let out = guard
        .ok(&[
            "policy",
            "rate-limit",
            "--per-source",
            "50/5",
            "--per-prefix",
            "500/50",
            "--global",
            "5000/500",
            "--prefix-v4",
            "20",
            "--prefix-v6",
            "48",
        ])
        .expect("guard policy rate-limit");
    assert!(out.contains("rate-limit"), "{out}");
    let want = json!({
        "policy": "rate-limit",
        "per_source": "50/5",
        "per_prefix": "500/50",
        "global": "5000/500",
        "prefix_v4": 20,
        "prefix_v6": 48,
    });
    assert_eq!(policy(&guard), want);
    let status = guard.json(&["status", "--json"]).expect("status");
    assert_eq!(status["policy"], want, "{status}");
    let text = guard.ok(&["policy"]).expect("guard policy");
    for part in ["rate-limit", "50/5", "500/50", "5000/500", "/20", "/48"] {
        assert!(
            text.contains(part),
            "guard policy should show {part}: {text}"
        );
    }

    // A partial update keeps the others; a bare RATE means a burst of one second's worth.
    guard
        .ok(&["policy", "rate-limit", "--global", "7000"])
        .expect("guard policy rate-limit --global 7000");
    let mut want = want;
    want["global"] = json!("7000/7000");
    assert_eq!(policy(&guard), want);
    guard
        .ok(&["policy", "rate-limit", "--per-source", "60/6"])
        .expect("guard policy rate-limit --per-source 60/6");
    want["per_source"] = json!("60/6");
    assert_eq!(policy(&guard), want);

    // Drop, then rate-limit with no rates: the last rates come back.
    guard.ok(&["policy", "drop"]).expect("guard policy drop");
    let p = policy(&guard);
    assert_eq!(p["policy"], "drop", "{p}");
    assert!(
        p["per_source"].is_null() && p["global"].is_null(),
        "drop shows no rates: {p}"
    );
    let status = guard.json(&["status", "--json"]).expect("status");
    assert_eq!(status["policy"]["policy"], "drop", "{status}");
    guard
        .ok(&["policy", "rate-limit"])
        .expect("guard policy rate-limit");
    assert_eq!(policy(&guard), want);
    guard.ok(&["policy", "drop"]).expect("guard policy drop");
    assert_eq!(policy(&guard)["policy"], "drop");

    // Re-attaching without --policy keeps the live policy.
    guard
        .ok(&["policy", "rate-limit"])
        .expect("guard policy rate-limit");
    guard.ok(&["attach", "v1"]).expect("guard attach v1");
    assert_eq!(policy(&guard), want);
}

#[test]
fn a_fresh_rate_limit_policy_has_the_documented_defaults() {
    if !require_privileges("a_fresh_rate_limit_policy_has_the_documented_defaults") {
        return;
    }
    let want = json!({
        "policy": "rate-limit",
        "per_source": "10/20",
        "per_prefix": "100/200",
        "global": "1000/2000",
        "prefix_v4": 24,
        "prefix_v6": 64,
    });
    let ns = sandbox();
    // Switched to live after a drop-policy attach...
    let guard = Guard::new(&ns);
    guard.ok(&["attach", "v0"]).expect("guard attach v0");
    guard
        .ok(&["policy", "rate-limit"])
        .expect("guard policy rate-limit");
    let live = policy(&guard);
    drop(guard);
    // ...and chosen at attach.
    let guard = Guard::new(&ns);
    guard
        .ok(&["attach", "v0", "--policy", "rate-limit"])
        .expect("guard attach --policy rate-limit");
    let at_attach = policy(&guard);
    let status = guard.json(&["status", "--json"]).expect("status");
    assert_eq!(
        status["top_sample"],
        guard_common::config::DEFAULT_TOP_SAMPLE,
        "default --top-sample: {status}"
    );
    assert_eq!(live, want, "guard policy rate-limit on a fresh guard");
    assert_eq!(at_attach, want, "guard attach --policy rate-limit");
}

#[test]
fn deny_entries_in_list_and_status() {
    if !require_privileges("deny_entries_in_list_and_status") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    guard
        .ok(&["attach", "v0", "--allow", "198.51.100.7/32"])
        .expect("guard attach v0");
    assert_eq!(
        guard.json(&["list", "--json"]).expect("list"),
        json!({"allow": ["198.51.100.7/32"], "deny": []})
    );
    let out = guard
        .ok(&["deny", "198.51.100.0/24", "2001:db8:b::/48", "203.0.113.9"])
        .expect("guard deny");
    for p in ["198.51.100.0/24", "2001:db8:b::/48", "203.0.113.9/32"] {
        assert!(out.contains(p), "guard deny should print {p}: {out}");
    }
    let (allow, deny) = guard.lists().expect("guard list --json");
    assert_eq!(allow, ["198.51.100.7/32"]);
    assert_eq!(
        deny,
        ["198.51.100.0/24", "2001:db8:b::/48", "203.0.113.9/32"]
    );
    let mut plain: Vec<String> = guard
        .ok(&["list", "--deny"])
        .expect("guard list --deny")
        .lines()
        .map(str::to_owned)
        .collect();
    plain.sort();
    assert_eq!(plain, deny);
    let plain_allow = guard.ok(&["list"]).expect("guard list");
    assert_eq!(plain_allow.trim(), "198.51.100.7/32");
    let status = guard.json(&["status", "--json"]).expect("status");
    assert_eq!(status["deny_v4"], 2, "{status}");
    assert_eq!(status["deny_v6"], 1, "{status}");
    assert_eq!(status["allow_v4"], 1, "{status}");

    // Denying again is not an error and adds nothing.
    let out = guard
        .ok(&["deny", "198.51.100.0/24"])
        .expect("guard deny again");
    assert!(out.contains("198.51.100.0/24"), "{out}");
    assert_eq!(guard.lists().expect("list").1.len(), 3);

    guard
        .ok(&["undeny", "198.51.100.0/24", "2001:db8:b::/48"])
        .expect("guard undeny");
    assert_eq!(
        guard.json(&["list", "--json"]).expect("list"),
        json!({"allow": ["198.51.100.7/32"], "deny": ["203.0.113.9/32"]})
    );
    let status = guard.json(&["status", "--json"]).expect("status");
    assert_eq!(status["deny_v4"], 1, "{status}");
    assert_eq!(status["deny_v6"], 0, "{status}");
    guard.ok(&["undeny", "203.0.113.9/32"]).expect("undeny");
    assert_eq!(
        guard.json(&["list", "--json"]).expect("list"),
        json!({"allow": ["198.51.100.7/32"], "deny": []})
    );
    // Top talkers on an idle guard: an empty list.
    assert_eq!(
        guard.json(&["top", "--json"]).expect("top"),
        json!({"top": []})
    );
}
