//! A guarded interface renamed after attach (udev, an operator's `ip link set NAME name NEW`):
//! its link stays on the interface, under the pin of its old name. `status` must report it
//! attached (not stale) with its new name, `attach` and `detach` must know it by its new
//! name, and nothing guard does for another interface that takes the old name, or for names
//! swapped between two guarded interfaces, may detach it.

use guard_tests::{
    lab::{Guard, Netns},
    privilege::require_privileges,
};
use serde_json::Value;

/// A namespace with a veth pair `v0`/`v1`, both up.
fn sandbox() -> Netns {
    let ns = Netns::new("gren").expect("namespace");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .expect("veth pair");
    for dev in ["v0", "v1"] {
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }
    ns
}

/// Renames an interface (it has to be down for that).
fn rename(ns: &Netns, from: &str, to: &str) {
    ns.ip(&["link", "set", from, "down"]).expect("link down");
    ns.ip(&["link", "set", from, "name", to]).expect("rename");
    ns.ip(&["link", "set", to, "up"]).expect("link up");
}

/// `guard status --json`'s interfaces: (name, state, renamed_to).
fn interfaces(guard: &Guard) -> Vec<(String, String, Option<String>)> {
    let v: Value = serde_json::from_str(&guard.ok(&["status", "--json"]).expect("status"))
        .expect("status --json parses");
    let mut out: Vec<_> = v["interfaces"]
        .as_array()
        .expect("interfaces array")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().expect("name").to_owned(),
                i["state"].as_str().expect("state").to_owned(),
                i["renamed_to"].as_str().map(str::to_owned),
            )
        })
        .collect();
    out.sort();
    out
}

fn entry(name: &str, renamed_to: Option<&str>) -> (String, String, Option<String>) {
    (name.into(), "attached".into(), renamed_to.map(Into::into))
}

#[test]
fn a_renamed_interface_stays_guarded_and_is_known_by_its_new_name() {
    if !require_privileges("a_renamed_interface_stays_guarded_and_is_known_by_its_new_name") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    guard.ok(&["attach", "v0"]).expect("attach v0");
    rename(&ns, "v0", "w0");

    // Still attached, under its pinned name, with the new one beside it.
    assert_eq!(interfaces(&guard), [entry("v0", Some("w0"))]);
    let table = guard.ok(&["status"]).expect("status");
    assert!(!table.contains("stale"), "{table}");
    assert!(table.contains("now named w0"), "{table}");

    // Attaching under the new name finds guard's own link: nothing new.
    let out = guard.ok(&["attach", "w0"]).expect("attach w0");
    assert!(
        out.contains("already attached") && out.contains("pinned as v0"),
        "{out}"
    );
    assert_eq!(interfaces(&guard), [entry("v0", Some("w0"))]);

    // Detaching by the new name detaches it.
    rename(&ns, "w0", "x0");
    assert_eq!(
        guard.ok(&["detach", "x0"]).expect("detach x0").trim(),
        "x0: detached (its link was pinned as v0)"
    );
    assert_eq!(interfaces(&guard), []);
    let link = lab_link(&ns, "x0");
    assert!(!link.contains("xdp"), "x0 still has XDP: {link}");
}

#[test]
fn the_old_name_detaches_a_renamed_interface_when_no_interface_has_it() {
    if !require_privileges("the_old_name_detaches_a_renamed_interface_when_no_interface_has_it") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    guard.ok(&["attach", "v0"]).expect("attach v0");
    rename(&ns, "v0", "w0");
    assert_eq!(
        guard.ok(&["detach", "v0"]).expect("detach v0").trim(),
        "v0: detached"
    );
    assert!(!lab_link(&ns, "w0").contains("xdp"), "w0 still has XDP");
}

/// v0 renamed to w0 after attach, and a new, unguarded interface named v0.
fn reused_name(ns: &Netns, guard: &Guard) {
    guard.ok(&["attach", "v0"]).expect("attach v0");
    rename(ns, "v0", "w0");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v9"])
        .expect("second veth pair");
    for dev in ["v0", "v9"] {
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }
}

/// Asserts a guard command fails with exit status 1 and an error that mentions `mention`.
#[track_caller]
fn assert_refused(guard: &Guard, args: &[&str], mention: &str) {
    let out = guard.run(args).expect("running guard");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "guard {}: {err}",
        args.join(" ")
    );
    assert!(err.contains(mention), "guard {}: {err}", args.join(" "));
}

#[test]
fn a_reused_name_is_not_attached_over_the_renamed_interface() {
    if !require_privileges("a_reused_name_is_not_attached_over_the_renamed_interface") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    reused_name(&ns, &guard);
    let before = interfaces(&guard);
    assert_eq!(before, [entry("v0", Some("w0"))]);
    // The pin of the name v0 holds w0's link: attaching the new v0 is refused, naming the way
    // out, and changes nothing (w0 stays guarded).
    assert_refused(
        &guard,
        &["attach", "v0", "--port", "11212"],
        "guard detach w0",
    );
    assert!(
        lab_link(&ns, "w0").contains("xdp"),
        "w0 lost its XDP program"
    );
    assert!(!lab_link(&ns, "v0").contains("xdp"), "v0 got XDP");
    assert_eq!(interfaces(&guard), before);
    assert_eq!(guard.ok(&["ports"]).expect("ports").trim(), "11211");
    // Detaching the new v0 is an error too, naming w0.
    assert_refused(&guard, &["detach", "v0"], "guards w0");
    assert!(
        lab_link(&ns, "w0").contains("xdp"),
        "w0 lost its XDP program"
    );
    // The way out works: both guarded.
    guard.ok(&["detach", "w0"]).expect("detach w0");
    guard.ok(&["attach", "v0", "w0"]).expect("attach v0 w0");
    assert_eq!(interfaces(&guard), [entry("v0", None), entry("w0", None)]);
}

#[test]
fn swapped_names_detach_nothing() {
    if !require_privileges("swapped_names_detach_nothing") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("guard.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"v0\", \"v1\"]\npin_path = \"{}\"\n",
            guard.pin_path().display()
        ),
    )
    .expect("config");
    let config_arg = config.display().to_string();
    let with_config = |args: &[&str]| {
        let mut all = vec!["--config", config_arg.as_str()];
        all.extend_from_slice(args);
        guard.ok(&all)
    };
    with_config(&["attach", "v0", "v1"]).expect("attach v0 v1");
    rename(&ns, "v0", "t0");
    rename(&ns, "v1", "v0");
    rename(&ns, "t0", "v1");
    // Each pin names the other interface now.
    for name in ["v0", "v1"] {
        let out = with_config(&["attach", name]).expect("attach");
        assert!(out.contains("already attached"), "{out}");
    }
    for dev in ["v0", "v1"] {
        assert!(
            lab_link(&ns, dev).contains("xdp"),
            "{dev} lost its XDP program"
        );
    }
    assert_eq!(
        interfaces(&guard),
        [entry("v0", Some("v1")), entry("v1", Some("v0"))]
    );
    // Detaching by the current name detaches that interface, and the config forgets its
    // link's pin name only: the other link is pinned as v0.
    let out = with_config(&["detach", "v0"]).expect("detach v0");
    assert_eq!(out.trim(), "v0: detached (its link was pinned as v1)");
    assert!(!lab_link(&ns, "v0").contains("xdp"), "v0 still has XDP");
    assert!(
        lab_link(&ns, "v1").contains("xdp"),
        "v1 lost its XDP program"
    );
    let text = std::fs::read_to_string(&config).expect("config");
    let v: toml::Value = toml::from_str(&text).expect("config parses");
    assert_eq!(
        v["interfaces"].as_array().expect("interfaces"),
        &[toml::Value::from("v0")],
        "{text}"
    );
}

#[test]
fn guard_run_keeps_a_renamed_interface_its_config_names_by_either_name() {
    if !require_privileges("guard_run_keeps_a_renamed_interface_its_config_names_by_either_name") {
        return;
    }
    let ns = sandbox();
    // Its drop unloads what the reconciles below load.
    let guard = Guard::new(&ns);
    let layout = guard_user::pins::PinLayout::new(guard.pin_path());
    let reconcile = |interfaces: &str| {
        let text = format!(
            "interfaces = [{interfaces}]\npin_path = \"{}\"\n",
            guard.pin_path().display()
        );
        let desired = guard_user::config::parse(std::path::Path::new("/tmp/guard.toml"), &text)
            .expect("config");
        ns.run(|| guard_user::reconcile::reconcile(&layout, &desired).map(|_| ()))
            .expect("entering the namespace")
            .expect("reconcile");
    };
    reconcile("\"v0\"");
    rename(&ns, "v0", "w0");
    // The config still names v0, which no interface has: the link stays.
    reconcile("\"v0\"");
    assert!(
        lab_link(&ns, "w0").contains("xdp"),
        "w0 lost its XDP program"
    );
    // The config now names w0: the same link, kept, not attached again.
    reconcile("\"w0\"");
    assert!(
        lab_link(&ns, "w0").contains("xdp"),
        "w0 lost its XDP program"
    );
    assert_eq!(interfaces(&guard), [entry("v0", Some("w0"))]);
    // The config names v0 and a new v0 appears: the config's names decide, so v0 is guarded
    // and w0, which it no longer names, is not.
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v9"])
        .expect("second veth pair");
    ns.ip(&["link", "set", "v0", "up"]).expect("link up");
    reconcile("\"v0\"");
    assert!(lab_link(&ns, "v0").contains("xdp"), "v0 is not guarded");
    assert!(!lab_link(&ns, "w0").contains("xdp"), "w0 is still guarded");
    assert_eq!(interfaces(&guard), [entry("v0", None)]);
}

/// `ip link show dev DEV` in the namespace.
fn lab_link(ns: &Netns, dev: &str) -> String {
    guard_tests::lab::run_ok(ns.command("ip").args(["link", "show", "dev", dev])).expect("ip link")
}
