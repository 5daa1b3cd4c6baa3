//! A guarded interface renamed after attach (udev, an operator's `ip link set NAME name NEW`):
//! its link stays on the interface, so `status` must report it attached, not stale, and
//! `attach` and `detach` must know it by its new name. The pin follows the name on the next
//! attach, also when the old name is reused by another interface.

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
    assert!(table.contains("renamed w0"), "{table}");

    // Attaching under the new name finds guard's own link: nothing new, the pin follows.
    let out = guard.ok(&["attach", "w0"]).expect("attach w0");
    assert!(
        out.contains("already attached") && out.contains("as v0"),
        "{out}"
    );
    assert_eq!(interfaces(&guard), [entry("w0", None)]);

    // And detaching by the new name detaches it.
    rename(&ns, "w0", "x0");
    assert_eq!(
        guard.ok(&["detach", "x0"]).expect("detach x0").trim(),
        "x0: detached (its link was pinned as w0)"
    );
    assert_eq!(interfaces(&guard), []);
    let link = lab_link(&ns, "x0");
    assert!(!link.contains("xdp"), "x0 still has XDP: {link}");
}

#[test]
fn a_reused_name_gets_its_own_link_and_the_old_one_follows_its_interface() {
    if !require_privileges("a_reused_name_gets_its_own_link_and_the_old_one_follows_its_interface")
    {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    guard.ok(&["attach", "v0"]).expect("attach v0");
    rename(&ns, "v0", "w0");
    // A new interface takes the old name.
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v9"])
        .expect("second veth pair");
    for dev in ["v0", "v9"] {
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }

    let out = guard.ok(&["attach", "v0"]).expect("attach the new v0");
    assert!(out.contains("v0: attached"), "{out}");
    assert!(out.contains("w0: still attached"), "{out}");
    // Both guarded: the renamed one under its new name, not detached as stale.
    assert_eq!(interfaces(&guard), [entry("v0", None), entry("w0", None)]);
    for dev in ["v0", "w0"] {
        let link = lab_link(&ns, dev);
        assert!(link.contains("xdp"), "{dev} lost its XDP program: {link}");
    }
    guard.ok(&["detach", "--all"]).expect("detach --all");
}

#[test]
fn detaching_a_reused_name_does_not_detach_the_renamed_interface() {
    if !require_privileges("detaching_a_reused_name_does_not_detach_the_renamed_interface") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    guard.ok(&["attach", "v0"]).expect("attach v0");
    rename(&ns, "v0", "w0");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v9"])
        .expect("second veth pair");
    // v0 is now another, unguarded interface: detaching it is an error that names w0.
    let out = guard.run(&["detach", "v0"]).expect("running guard");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("guards w0"), "{err}");
    assert!(
        lab_link(&ns, "w0").contains("xdp"),
        "w0 lost its XDP program"
    );
    assert_eq!(interfaces(&guard), [entry("v0", Some("w0"))]);
}

#[test]
fn swapped_names_detach_nothing() {
    if !require_privileges("swapped_names_detach_nothing") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    guard.ok(&["attach", "v0", "v1"]).expect("attach v0 v1");
    rename(&ns, "v0", "t0");
    rename(&ns, "v1", "v0");
    rename(&ns, "t0", "v1");
    // Each pin names the other interface now; attaching must not move one pin over the other
    // (which would detach its link).
    for name in ["v0", "v1"] {
        let out = guard.ok(&["attach", name]).expect("attach");
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
    // Detaching by the current name detaches that interface.
    let out = guard.ok(&["detach", "v0"]).expect("detach v0");
    assert_eq!(out.trim(), "v0: detached (its link was pinned as v1)");
    assert!(!lab_link(&ns, "v0").contains("xdp"), "v0 still has XDP");
    assert!(
        lab_link(&ns, "v1").contains("xdp"),
        "v1 lost its XDP program"
    );
}

#[test]
fn the_config_file_follows_a_rename() {
    if !require_privileges("the_config_file_follows_a_rename") {
        return;
    }
    let ns = sandbox();
    let guard = Guard::new(&ns);
    // Removed on drop, also when the test fails.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("guard.toml");
    std::fs::write(
        &config,
        format!(
            "interfaces = [\"v0\"]\npin_path = \"{}\"\n",
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
    let interfaces_in_file = || {
        let text = std::fs::read_to_string(&config).expect("config");
        let v: toml::Value = toml::from_str(&text).expect("config parses");
        let mut names: Vec<String> = v["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .map(|n| n.as_str().expect("a name").to_owned())
            .collect();
        names.sort();
        names
    };
    with_config(&["attach", "v0"]).expect("attach v0");
    rename(&ns, "v0", "w0");
    with_config(&["attach", "w0"]).expect("attach w0");
    assert_eq!(interfaces_in_file(), ["w0"]);
    with_config(&["detach", "w0"]).expect("detach w0");
    assert_eq!(interfaces_in_file(), Vec::<String>::new());
}

/// `ip link show dev DEV` in the namespace.
fn lab_link(ns: &Netns, dev: &str) -> String {
    guard_tests::lab::run_ok(ns.command("ip").args(["link", "show", "dev", dev])).expect("ip link")
}
