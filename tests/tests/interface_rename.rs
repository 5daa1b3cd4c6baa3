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
    add_pair(&ns, "v0", "v1");
    ns
}

/// Adds a veth pair `a`/`b` to the namespace, both up.
fn add_pair(ns: &Netns, a: &str, b: &str) {
    ns.ip(&["link", "add", a, "type", "veth", "peer", "name", b])
        .expect("veth pair");
    for dev in [a, b] {
        ns.ip(&["link", "set", dev, "up"]).expect("link up");
    }
}

/// The id of the link pinned as `pin`.
fn link_id(guard: &Guard, pin: &str) -> u32 {
    let layout = guard_user::pins::PinLayout::new(guard.pin_path());
    guard_user::sys::link_details(&layout.link(pin))
        .expect("a pinned link")
        .id
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
    add_pair(ns, "v0", "v9");
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
    let config = ConfigFile::new(&guard, &["v0", "v1"]);
    config.ok(&guard, &["attach", "v0", "v1"]);
    rename(&ns, "v0", "t0");
    rename(&ns, "v1", "v0");
    rename(&ns, "t0", "v1");
    // Each pin names the other interface now.
    for name in ["v0", "v1"] {
        let out = config.ok(&guard, &["attach", name]);
        assert!(out.contains("already attached"), "{out}");
    }
    assert_guarded(&ns, &["v0", "v1"], &[]);
    assert_eq!(
        interfaces(&guard),
        [entry("v0", Some("v1")), entry("v1", Some("v0"))]
    );
    // Detaching by the current name detaches that interface; the config forgets the name v0
    // and names the other interface by its name now, v1 (its link is pinned as v0).
    let out = config.ok(&guard, &["detach", "v0"]);
    assert_eq!(out.trim(), "v0: detached (its link was pinned as v1)");
    assert_guarded(&ns, &["v1"], &["v0"]);
    assert_eq!(config.interfaces(), ["v1"]);
    // `guard run` on that config keeps v1 (re-pinned under its name) and leaves v0 alone.
    config.reconcile(&ns, &guard);
    assert_guarded(&ns, &["v1"], &["v0"]);
    assert_eq!(interfaces(&guard), [entry("v1", None)]);
}

#[test]
fn detach_by_either_name_forgets_both_in_the_config() {
    if !require_privileges("detach_by_either_name_forgets_both_in_the_config") {
        return;
    }
    for detach in [
        &["detach", "v0"][..],
        &["detach", "w0"],
        &["detach", "--all"],
    ] {
        let ns = sandbox();
        let guard = Guard::new(&ns);
        let config = ConfigFile::new(&guard, &[]);
        config.ok(&guard, &["attach", "v0"]);
        rename(&ns, "v0", "w0");
        // Already attached; the config learns the new name too.
        config.ok(&guard, &["attach", "w0"]);
        assert_eq!(config.interfaces(), ["v0", "w0"]);
        config.ok(&guard, detach);
        assert_eq!(config.interfaces(), Vec::<String>::new(), "{detach:?}");
        // `guard run` does not guard it again.
        config.reconcile(&ns, &guard);
        assert_guarded(&ns, &[], &["w0"]);
    }
}

#[test]
fn guard_run_guards_a_reused_name_and_the_renamed_interface_when_it_names_both() {
    if !require_privileges(
        "guard_run_guards_a_reused_name_and_the_renamed_interface_when_it_names_both",
    ) {
        return;
    }
    for names in [["w0", "v0"], ["v0", "w0"]] {
        let ns = sandbox();
        let guard = Guard::new(&ns);
        reconcile_names(&ns, &guard, &["v0"]);
        rename(&ns, "v0", "w0");
        add_pair(&ns, "v0", "v9");
        let w0_link = link_id(&guard, "v0");
        // w0's link moves to the pin w0 (the same link: never detached), and the new v0 gets
        // the pin v0.
        reconcile_names(&ns, &guard, &names);
        assert_guarded(&ns, &["v0", "w0"], &[]);
        assert_eq!(link_id(&guard, "w0"), w0_link, "{names:?}");
        assert_eq!(
            interfaces(&guard),
            [entry("v0", None), entry("w0", None)],
            "{names:?}"
        );
        // Stable: another reconcile changes nothing.
        reconcile_names(&ns, &guard, &names);
        assert_guarded(&ns, &["v0", "w0"], &[]);
    }
}

#[test]
fn guard_run_re_pins_through_stale_pins_and_chains_of_renames() {
    if !require_privileges("guard_run_re_pins_through_stale_pins_and_chains_of_renames") {
        return;
    }
    // v0 takes the name w0 and a new v0 appears, after w0 either went (its pin is stale) or
    // became x0, which the config does not name (its pin is taken over, x0 let go): the
    // config's w0 is the old v0 now, which keeps its link, pinned as w0.
    for w0_deleted in [true, false] {
        let ns = sandbox();
        let guard = Guard::new(&ns);
        add_pair(&ns, "w0", "p0");
        reconcile_names(&ns, &guard, &["w0", "v0"]);
        let v0_link = link_id(&guard, "v0");
        let unguarded: &[&str] = if w0_deleted {
            ns.ip(&["link", "del", "w0"]).expect("delete w0");
            &[]
        } else {
            rename(&ns, "w0", "x0");
            &["x0"]
        };
        rename(&ns, "v0", "w0");
        add_pair(&ns, "v0", "p9");
        reconcile_names(&ns, &guard, &["w0", "v0"]);
        assert_guarded(&ns, &["v0", "w0"], unguarded);
        assert_eq!(link_id(&guard, "w0"), v0_link, "w0's link was replaced");
        assert_eq!(interfaces(&guard), [entry("v0", None), entry("w0", None)]);
    }

    // A chain: w0 becomes x0, v0 becomes w0, a new v0 appears; the config names all three.
    let ns = sandbox();
    let guard = Guard::new(&ns);
    add_pair(&ns, "w0", "p0");
    let all = ["x0", "w0", "v0"];
    reconcile_names(&ns, &guard, &all);
    let (v0_link, w0_link) = (link_id(&guard, "v0"), link_id(&guard, "w0"));
    rename(&ns, "w0", "x0");
    rename(&ns, "v0", "w0");
    add_pair(&ns, "v0", "p9");
    reconcile_names(&ns, &guard, &all);
    assert_guarded(&ns, &["v0", "w0", "x0"], &[]);
    assert_eq!(link_id(&guard, "x0"), w0_link, "x0's link was replaced");
    assert_eq!(link_id(&guard, "w0"), v0_link, "w0's link was replaced");
    assert_eq!(
        interfaces(&guard),
        [entry("v0", None), entry("w0", None), entry("x0", None)]
    );
}

#[test]
fn detach_goes_to_the_live_link_past_a_stale_pin_of_the_same_name() {
    if !require_privileges("detach_goes_to_the_live_link_past_a_stale_pin_of_the_same_name") {
        return;
    }
    for name in ["w0", "v0"] {
        let ns = sandbox();
        add_pair(&ns, "w0", "p0");
        let guard = Guard::new(&ns);
        let config = ConfigFile::new(&guard, &[]);
        config.ok(&guard, &["attach", "v0", "w0"]);
        // The pin v0 goes stale; w0 takes the name v0.
        ns.ip(&["link", "del", "v0"]).expect("delete v0");
        rename(&ns, "w0", "v0");
        // By its pin's name or its name now, the live link is detached and the config
        // forgets both names: `guard run` guards nothing.
        let out = config.ok(&guard, &["detach", name]);
        assert!(out.contains("detached"), "{out}");
        assert_guarded(&ns, &[], &["v0"]);
        assert_eq!(config.interfaces(), Vec::<String>::new(), "detach {name}");
        config.reconcile(&ns, &guard);
        assert_guarded(&ns, &[], &["v0"]);
    }
}

#[test]
fn attach_removes_a_stale_pin_of_an_interface_guarded_under_another() {
    if !require_privileges("attach_removes_a_stale_pin_of_an_interface_guarded_under_another") {
        return;
    }
    let ns = sandbox();
    add_pair(&ns, "w0", "p0");
    let guard = Guard::new(&ns);
    guard.ok(&["attach", "v0", "w0"]).expect("attach v0 w0");
    ns.ip(&["link", "del", "v0"]).expect("delete v0");
    rename(&ns, "w0", "v0");
    // status tells which command removes the stale pin v0 and which detaches v0.
    let table = guard.ok(&["status"]).expect("status");
    assert!(
        table.contains("`guard attach v0` removes the stale link only"),
        "{table}"
    );
    let out = guard.ok(&["attach", "v0"]).expect("attach v0");
    assert!(out.contains("already attached"), "{out}");
    assert_eq!(interfaces(&guard), [entry("w0", Some("v0"))]);
    assert_guarded(&ns, &["v0"], &[]);
    let table = guard.ok(&["status"]).expect("status");
    assert!(!table.contains("stale"), "{table}");
    assert!(table.contains("native"), "v0's mode is lost: {table}");
}

#[test]
fn guard_run_keeps_a_renamed_interface_its_config_names_by_either_name() {
    if !require_privileges("guard_run_keeps_a_renamed_interface_its_config_names_by_either_name") {
        return;
    }
    let ns = sandbox();
    // Its drop unloads what the reconciles below load.
    let guard = Guard::new(&ns);
    let reconcile = |names: &[&str]| reconcile_names(&ns, &guard, names);
    reconcile(&["v0"]);
    rename(&ns, "v0", "w0");
    // The config still names v0, which no interface has: the link stays.
    reconcile(&["v0"]);
    assert!(
        lab_link(&ns, "w0").contains("xdp"),
        "w0 lost its XDP program"
    );
    // The config now names w0: the same link, kept (not attached again) and pinned as w0.
    reconcile(&["w0"]);
    assert!(
        lab_link(&ns, "w0").contains("xdp"),
        "w0 lost its XDP program"
    );
    assert_eq!(interfaces(&guard), [entry("w0", None)]);
    // The config names v0 and a new v0 appears: the config's names decide, so v0 is guarded
    // and w0, which it no longer names, is not.
    add_pair(&ns, "v0", "v9");
    reconcile(&["v0"]);
    assert!(lab_link(&ns, "v0").contains("xdp"), "v0 is not guarded");
    assert!(!lab_link(&ns, "w0").contains("xdp"), "w0 is still guarded");
    assert_eq!(interfaces(&guard), [entry("v0", None)]);
}

/// A config file naming `interfaces` and the guard's pin path, driven through the CLI
/// (`guard --config FILE ...`, which records every change in it) and `guard run`'s reconcile.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl ConfigFile {
    fn new(guard: &Guard, interfaces: &[&str]) -> ConfigFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("guard.toml");
        std::fs::write(&path, config_text(guard, interfaces)).expect("config");
        ConfigFile { _dir: dir, path }
    }

    /// `guard --config FILE ARGS...`, which must succeed.
    fn ok(&self, guard: &Guard, args: &[&str]) -> String {
        let path = self.path.display().to_string();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        guard.ok(&all).expect("guard --config")
    }

    /// The interfaces the file names now.
    fn interfaces(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.path).expect("config");
        let v: toml::Value = toml::from_str(&text).expect("config parses");
        v["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .map(|n| n.as_str().expect("a name").to_owned())
            .collect()
    }

    /// What `guard run` does with the file (its reconcile), in the namespace.
    fn reconcile(&self, ns: &Netns, guard: &Guard) {
        reconcile_text(
            ns,
            guard,
            &std::fs::read_to_string(&self.path).expect("config"),
        );
    }
}

/// A config naming `interfaces` and the guard's pin path.
fn config_text(guard: &Guard, interfaces: &[&str]) -> String {
    let names: Vec<String> = interfaces.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "interfaces = [{}]\npin_path = \"{}\"\n",
        names.join(", "),
        guard.pin_path().display()
    )
}

/// `guard run`'s reconcile of a config naming `interfaces`, in the namespace.
fn reconcile_names(ns: &Netns, guard: &Guard, interfaces: &[&str]) {
    reconcile_text(ns, guard, &config_text(guard, interfaces));
}

/// `guard run`'s reconcile of the config `text`, in the namespace.
fn reconcile_text(ns: &Netns, guard: &Guard, text: &str) {
    let layout = guard_user::pins::PinLayout::new(guard.pin_path());
    let desired =
        guard_user::config::parse(std::path::Path::new("/tmp/guard.toml"), text).expect("config");
    ns.run(|| guard_user::reconcile::reconcile(&layout, &desired).map(|_| ()))
        .expect("entering the namespace")
        .expect("reconcile");
}

/// Asserts which of the namespace's interfaces have XDP.
#[track_caller]
fn assert_guarded(ns: &Netns, guarded: &[&str], unguarded: &[&str]) {
    for dev in guarded {
        assert!(lab_link(ns, dev).contains("xdp"), "{dev} is not guarded");
    }
    for dev in unguarded {
        assert!(!lab_link(ns, dev).contains("xdp"), "{dev} is guarded");
    }
}

/// `ip link show dev DEV` in the namespace.
fn lab_link(ns: &Netns, dev: &str) -> String {
    guard_tests::lab::run_ok(ns.command("ip").args(["link", "show", "dev", dev])).expect("ip link")
}
