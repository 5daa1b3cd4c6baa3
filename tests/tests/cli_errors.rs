//! The CLI's failure paths: bad input gets one line on stderr starting `guard: error: `, exit
//! status 1, nothing on stdout, and changes nothing.
//!
//! Parsing errors are checked without privileges; everything that needs a loaded guard, an
//! interface or a user switch runs in a namespace of its own and needs root.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Output,
};

use guard_tests::{
    lab::{self, Guard, Netns},
    privilege::{guard_bin, require_privileges},
};

/// Asserts that `out` is a guard error: exit status 1, one line on stderr starting
/// `guard: error: `, nothing on stdout. Returns that line.
#[track_caller]
fn assert_error(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "`{what}`: expected exit status 1, got {}; stdout {stdout:?}, stderr {stderr:?}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "`{what}`: stderr must be exactly one line: {stderr:?}"
    );
    assert!(
        lines[0].starts_with("guard: error: "),
        "`{what}`: stderr must start with `guard: error: `: {stderr:?}"
    );
    assert!(stdout.is_empty(), "`{what}`: printed on stdout: {stdout:?}");
    lines[0].to_owned()
}

/// Runs `guard ARGS` and asserts it fails cleanly; returns the error line.
#[track_caller]
fn expect_error(guard: &Guard, args: &[&str]) -> String {
    let out = guard.run(args).expect("running guard");
    assert_error(&out, &format!("guard {}", args.join(" ")))
}

/// Whether anything is at `pin` (a directory with entries counts; an empty one does not).
fn has_pins(pin: &Path) -> bool {
    match std::fs::read_dir(pin) {
        Ok(mut entries) => entries.next().is_some(),
        Err(_) => false,
    }
}

/// A namespace with a veth pair `v0`/`v1` inside it (both ends up), for attaching.
fn sandbox() -> Netns {
    let ns = Netns::new("gerr").expect("namespace");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .expect("veth pair");
    for dev in ["v0", "v1"] {
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }
    ns
}

/// What a loaded guard looks like from outside: allowlist, ports and status.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    allow: Vec<String>,
    ports: String,
    status: String,
}

fn snapshot(guard: &Guard) -> Snapshot {
    let mut allow = guard.allowlist().expect("guard list --json");
    allow.sort();
    Snapshot {
        allow,
        ports: guard.ok(&["ports"]).expect("guard ports"),
        status: guard
            .ok(&["status", "--json"])
            .expect("guard status --json"),
    }
}

/// A guard loaded in `ns`, attached to v0 with two allowlist entries.
fn loaded(ns: &Netns) -> Guard {
    let guard = Guard::new(ns);
    guard
        .ok(&[
            "attach",
            "v0",
            "--allow",
            "10.77.0.0/16",
            "--allow",
            "fd00:77::/64",
        ])
        .expect("guard attach v0");
    guard
}

#[test]
fn bad_cidrs_are_rejected_before_anything_else() {
    // Parsing comes before privilege checks and before opening pins: no root needed.
    let guard = Guard::on_host();
    let e = expect_error(&guard, &["allow", "10.0.0.0/33"]);
    assert!(e.contains("10.0.0.0/33"), "{e}");
    let e = expect_error(&guard, &["allow", "foo"]);
    assert!(e.contains("foo"), "{e}");
    let e = expect_error(&guard, &["allow", "10.0.0.1/8"]);
    assert!(e.contains("10.0.0.0/8"), "must suggest the network: {e}");
    let e = expect_error(&guard, &["allow", "fd00:77::1/64"]);
    assert!(e.contains("fd00:77::/64"), "must suggest the network: {e}");
    let e = expect_error(&guard, &["allow", "2001:db8::/129"]);
    assert!(e.contains("2001:db8::/129"), "{e}");
    expect_error(&guard, &["allow", "10.1.0.0/16", "foo", "10.2.0.0/16"]);
    expect_error(&guard, &["revoke", "10.0.0.1/8"]);
    expect_error(&guard, &["attach", "lo", "--allow", "300.0.0.0/8"]);
    let e = expect_error(&guard, &["ports", "0"]);
    assert!(e.contains("0 is not a port"), "{e}");
    // An IPv4-mapped address matches no packet: refused, with the IPv4 form to use.
    let e = expect_error(&guard, &["allow", "::ffff:10.9.0.3"]);
    assert!(e.contains("10.9.0.3/32"), "must name the IPv4 form: {e}");
    // Zero-padded octets, which other tools read as octal, are refused alike everywhere.
    for padded in ["010.0.0.1", "010.0.0.0/8", "10.0.0.0/08"] {
        let e = expect_error(&guard, &["allow", padded]);
        assert!(e.contains("leading zero"), "{padded}: {e}");
    }
    let e = expect_error(&guard, &["stats", "--watch", "0"]);
    assert!(e.contains('0'), "{e}");
    assert!(
        !guard.pin_path().exists(),
        "a rejected command created {}",
        guard.pin_path().display()
    );
}

#[test]
fn bad_input_changes_nothing() {
    if !require_privileges("bad_input_changes_nothing") {
        return;
    }
    let ns = sandbox();
    let guard = loaded(&ns);
    let before = snapshot(&guard);
    assert_eq!(before.allow, ["10.77.0.0/16", "fd00:77::/64"]);
    assert_eq!(before.ports.trim(), "11211");

    let seventeen: Vec<String> = (1000..1017).map(|p: u16| p.to_string()).collect();
    let mut too_many = vec!["ports"];
    too_many.extend(seventeen.iter().map(String::as_str));

    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["allow", "10.0.0.0/33"], Some("10.0.0.0/33")),
        (vec!["allow", "foo"], Some("foo")),
        (vec!["allow", "10.0.0.1/8"], Some("10.0.0.0/8")),
        // A mix of good and bad adds nothing.
        (
            vec!["allow", "10.1.0.0/16", "foo", "10.2.0.0/16"],
            Some("foo"),
        ),
        (
            vec!["allow", "10.3.0.0/16", "10.0.0.1/8"],
            Some("10.0.0.0/8"),
        ),
        (
            vec!["allow", "fd00:78::/64", "fd00:78::1/64"],
            Some("fd00:78::/64"),
        ),
        // Revoking what is not there revokes nothing, also alongside what is.
        (vec!["revoke", "10.9.0.0/16"], Some("10.9.0.0/16")),
        (
            vec!["revoke", "10.77.0.0/16", "10.9.0.0/16"],
            Some("10.9.0.0/16"),
        ),
        // Only the exact prefix counts, not one inside an allowed one.
        (vec!["revoke", "10.77.1.0/24"], Some("10.77.1.0/24")),
        // Every prefix that is not there is named.
        (
            vec!["revoke", "10.9.0.0/16", "10.77.0.0/16", "10.8.0.0/16"],
            Some("10.8.0.0/16, 10.9.0.0/16 are not on the allowlist"),
        ),
        // Mapped addresses: refused on add, with the IPv4 form; alone or in a mix.
        (vec!["allow", "::ffff:10.78.0.5"], Some("10.78.0.5/32")),
        (
            vec!["allow", "10.4.0.0/16", "::ffff:10.0.0.0/104"],
            Some("10.0.0.0/8"),
        ),
        (vec!["deny", "::ffff:198.51.100.7"], Some("198.51.100.7/32")),
        (vec!["allow", "010.78.0.0/16"], Some("leading zero")),
        // Switching an attached interface's mode takes a detach: refused, and the port,
        // allowlist and dry-run asked for in the same call are not applied.
        (
            vec![
                "attach",
                "v0",
                "--mode",
                "skb",
                "--port",
                "11212",
                "--allow",
                "10.5.0.0/16",
                "--dry-run",
            ],
            Some("guard detach v0"),
        ),
        (vec!["ports", "0"], Some("0")),
        (vec!["ports", "11211", "0"], Some("0")),
        (too_many, Some("16")),
        (vec!["attach", "nosuchif0"], Some("nosuchif0")),
        (vec!["attach", "v1", "nosuchif0"], Some("nosuchif0")),
        (vec!["attach", "v1", "--port", "0"], Some("0")),
        (vec!["detach", "v1"], Some("v1")),
        (vec!["detach", "nosuchif0"], Some("nosuchif0")),
        (vec!["detach", "v0", "v1"], Some("v1")),
    ];
    for (args, mention) in &cases {
        let e = expect_error(&guard, args);
        if let Some(m) = mention {
            assert!(
                e.contains(m),
                "`guard {}`: {e:?} should mention {m}",
                args.join(" ")
            );
        }
        assert_eq!(
            snapshot(&guard),
            before,
            "`guard {}` failed but changed something",
            args.join(" ")
        );
    }
    let e = expect_error(&guard, &["allow", "10.0.0.1/8"]);
    assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
}

#[test]
fn commands_without_a_loaded_guard_say_so() {
    if !require_privileges("commands_without_a_loaded_guard_say_so") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    let pin = guard.pin_path().display().to_string();
    for args in [
        &["allow", "10.0.0.0/8"][..],
        &["revoke", "10.0.0.0/8"],
        &["list"],
        &["list", "--json"],
        &["stats", "--json"],
        &["status"],
        &["ports"],
        &["ports", "53"],
        &["dry-run", "on"],
        &["detach", "v0"],
        &["detach", "--all"],
        &["unload"],
    ] {
        let e = expect_error(&guard, args);
        assert!(
            e.contains("no guard is loaded") && e.contains(&pin),
            "`guard {}` should say no guard is loaded at {pin}: {e}",
            args.join(" ")
        );
        assert!(
            !guard.pin_path().exists(),
            "`guard {}` created {pin}",
            args.join(" ")
        );
    }
}

#[test]
fn attach_to_unknown_interface_changes_nothing() {
    if !require_privileges("attach_to_unknown_interface_changes_nothing") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    let e = expect_error(&guard, &["attach", "nosuchif0"]);
    assert!(e.contains("nosuchif0"), "{e}");
    // A good interface next to a bad one is not attached either.
    let e = expect_error(
        &guard,
        &["attach", "v0", "nosuchif0", "--allow", "10.0.0.0/8"],
    );
    assert!(e.contains("nosuchif0"), "{e}");
    assert!(
        !has_pins(guard.pin_path()),
        "a failed attach left pins at {}",
        guard.pin_path().display()
    );
    let link = lab::run_ok(ns.command("ip").args(["link", "show", "dev", "v0"])).expect("ip");
    assert!(!link.contains("xdp"), "v0 has an XDP program: {link}");
}

/// A copy of the guard binary that any user can run (the build tree may not be readable by
/// nobody), removed on drop.
struct WorldCopy {
    dir: PathBuf,
    bin: PathBuf,
}

impl WorldCopy {
    fn new() -> WorldCopy {
        let dir = PathBuf::from(format!("/tmp/guard-test-{}", lab::unique_suffix()));
        std::fs::create_dir(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = dir.join("guard");
        std::fs::copy(guard_bin(), &bin).expect("copying the guard binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        WorldCopy { dir, bin }
    }
}

impl Drop for WorldCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn missing_privileges_are_named() {
    if !require_privileges("missing_privileges_are_named") {
        return;
    }
    let ns = sandbox();
    let guard = loaded(&ns);
    let before = snapshot(&guard);
    let copy = WorldCopy::new();
    let pin = guard.pin_path().to_owned();

    // As nobody: no capabilities at all.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["allow", "10.5.0.0/16"],
        &["revoke", "10.77.0.0/16"],
        &["list"],
        &["stats"],
        &["ports", "53"],
        &["dry-run", "on"],
        &["attach", "v1"],
        &["detach", "v0"],
        &["unload"],
    ] {
        let mut cmd = ns.command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy.bin)
            .arg("--pin-path")
            .arg(&pin)
            .args(args)
            .env_remove("RUST_LOG");
        let out = cmd.output().expect("running setpriv");
        let what = format!("guard {} as nobody", args.join(" "));
        let e = assert_error(&out, &what);
        assert!(e.contains("CAP_BPF"), "{what} should name CAP_BPF: {e}");
        assert_eq!(snapshot(&guard), before, "{what} changed something");
    }

    // Root without CAP_NET_ADMIN may use maps but not attach or detach.
    for args in [&["attach", "v1"][..], &["detach", "v0"], &["unload"]] {
        let mut cmd = ns.command("setpriv");
        cmd.args(["--inh-caps=-net_admin", "--bounding-set=-net_admin"])
            .arg(&copy.bin)
            .arg("--pin-path")
            .arg(&pin)
            .args(args)
            .env_remove("RUST_LOG");
        let out = cmd.output().expect("running setpriv");
        let what = format!("guard {} without CAP_NET_ADMIN", args.join(" "));
        let e = assert_error(&out, &what);
        assert!(
            e.contains("CAP_NET_ADMIN"),
            "{what} should name CAP_NET_ADMIN: {e}"
        );
        assert_eq!(snapshot(&guard), before, "{what} changed something");
    }
}

#[test]
fn second_guard_on_a_guarded_interface_is_refused() {
    if !require_privileges("second_guard_on_a_guarded_interface_is_refused") {
        return;
    }
    let ns = sandbox();
    let first = loaded(&ns);
    let before = snapshot(&first);
    let link_before =
        lab::run_ok(ns.command("ip").args(["link", "show", "dev", "v0"])).expect("ip");

    let second = Guard::new(&ns);
    for args in [
        &["attach", "v0"][..],
        &["attach", "v0", "--allow", "10.1.0.0/16", "--port", "53"],
        // A free interface named first is not attached either.
        &["attach", "v1", "v0"],
    ] {
        let what = format!("second guard: guard {}", args.join(" "));
        let e = expect_error(&second, args);
        assert!(e.contains("does not own"), "{what}: {e}");
        assert!(e.contains("v0"), "{what}: {e}");
        let leftovers: Vec<String> = std::fs::read_dir(second.pin_path())
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path().display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            leftovers.is_empty() && !second.pin_path().exists(),
            "{what}: the refused attach left pins behind at {}: {leftovers:?}",
            second.pin_path().display()
        );
        let v1 = lab::run_ok(ns.command("ip").args(["link", "show", "dev", "v1"])).expect("ip");
        assert!(!v1.contains("xdp"), "{what}: v1 got an XDP program: {v1}");
    }

    // The first guard is untouched.
    assert_eq!(snapshot(&first), before);
    let link_after = lab::run_ok(ns.command("ip").args(["link", "show", "dev", "v0"])).expect("ip");
    assert_eq!(link_before, link_after, "v0 changed");
}
