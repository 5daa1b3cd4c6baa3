//! The files under packaging/: the systemd unit, the example config, the Kubernetes
//! manifests and the Grafana dashboard, checked against the guard binary they go with.
//!
//! Host tests need `systemd-analyze` and the built guard (`cargo build -p guard-user`). One
//! root test runs `guard run` the way the unit would (the unit's capability bounding set and
//! no_new_privs, under strace) and checks every system call and socket family it used
//! against the unit's SystemCallFilter and RestrictAddressFamilies.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use guard_common::Verdict;
use guard_tests::{
    lab::{self, Daemon, Guard, MEMCACHED_PORT, Memcached, Netns, VethEnd},
    privilege::{self, require_privileges},
};
use serde_json::Value;

/// The series guard run serves (and `guard stats --format prometheus` prints, but for the
/// reload counter). `unit_sandbox_is_enough_for_guard_run` checks this list against a live
/// guard run, so that the dashboard check below cannot go stale.
const SERIES: &[&str] = &[
    "guard_up",
    "guard_packets_total",
    "guard_bytes_total",
    "guard_bucket_inserts_total",
    "guard_attached",
    "guard_allowlist_prefixes",
    "guard_denylist_prefixes",
    "guard_dry_run",
    "guard_policy",
    "guard_protected_ports",
    "guard_build_info",
    "guard_config_reloads_total",
];

/// Label names a dashboard query may use: guard's, and those Prometheus adds.
const LABELS: &[&str] = &[
    "interface",
    "reason",
    "mode",
    "family",
    "policy",
    "result",
    "version",
    "abi",
    "instance",
    "job",
];

fn packaging(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(rel)
}

fn read(rel: &str) -> String {
    let path = packaging(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The guard binary, as an absolute path that exists.
fn guard_bin() -> PathBuf {
    let bin = privilege::guard_bin();
    std::fs::canonicalize(&bin).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build it first: cargo build -p guard-user)",
            bin.display()
        )
    })
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn guard(args: &[&OsStr]) -> Output {
    run(Command::new(guard_bin())
        .args(args)
        .env_remove("GUARD_CONFIG")
        .env_remove("GUARD_PIN_PATH"))
}

/// `guard check-config FILE`; panics with guard's message unless the file is valid.
fn check_config(file: &Path) -> String {
    let out = guard(&[OsStr::new("check-config"), file.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "guard check-config {}: {}{}",
        file.display(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok:"), "{stdout}");
    stdout
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("guard-packaging-test-")
        .tempdir()
        .expect("temporary directory")
}

// ---------------------------------------------------------------------------------------------
// systemd

/// A unit file's `Key=value` lines, by section, in order (values of repeated keys kept).
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not Key=value: {line:?}"));
        out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

/// The values of `key` in `section`.
fn unit_values(text: &str, section: &str, key: &str) -> Vec<String> {
    unit_entries(text)
        .into_iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v)
        .collect()
}

/// The one value of `key` in `section`.
fn unit_value(text: &str, section: &str, key: &str) -> String {
    match unit_values(text, section, key).as_slice() {
        [v] => v.clone(),
        other => panic!("[{section}] {key}: expected one value, found {other:?}"),
    }
}

/// The unit with /usr/local/bin/guard replaced by the built binary, written to `dir`.
fn unit_for_verify(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("guard.service");
    let text = text.replace("/usr/local/bin/guard", &guard_bin().display().to_string());
    std::fs::write(&path, text).expect("writing the unit");
    path
}

/// `systemd-analyze verify --man=no UNIT`: Ok only if it exits 0 and prints nothing (it
/// only warns, exit status 0, about unknown keys and values it cannot parse).
fn verify(unit: &Path) -> Result<(), String> {
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", out.status, said.trim()))
    }
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let text = read("systemd/guard.service");
    let dir = tempdir();
    let unit = unit_for_verify(dir.path(), &text);
    verify(&unit).unwrap_or_else(|e| panic!("systemd-analyze verify {}: {e}", unit.display()));

    // The check above fails on a broken unit: an unknown key, a bad value, a missing binary.
    let broken = [
        (
            "an unknown key",
            text.replace(
                "NoNewPrivileges=yes",
                "NoNewPrivileges=yes\nNoNewPrivilege=yes",
            ),
        ),
        (
            "a bad value",
            text.replace("ProtectSystem=strict", "ProtectSystem=stric"),
        ),
        (
            "a missing binary",
            text.replace(
                "/usr/local/bin/guard --config",
                "/nonexistent/guard --config",
            ),
        ),
    ];
    for (what, bad) in broken {
        assert_ne!(bad, text, "the unit no longer has what {what} replaces");
        let bad_dir = tempdir();
        let bad_unit = unit_for_verify(bad_dir.path(), &bad);
        assert!(
            verify(&bad_unit).is_err(),
            "systemd-analyze verify accepted a unit with {what}"
        );
    }

    // What it runs.
    let s = "Service";
    assert_eq!(unit_value(&text, s, "Type"), "simple");
    assert_eq!(
        unit_value(&text, s, "ExecStart"),
        "/usr/local/bin/guard --config /etc/guard/guard.toml run"
    );
    assert_eq!(
        unit_value(&text, s, "ExecReload"),
        "/bin/kill -HUP $MAINPID"
    );
    assert_eq!(unit_value(&text, s, "Restart"), "on-failure");
    for pre in unit_values(&text, s, "ExecStartPre") {
        assert!(
            pre.starts_with("/usr/local/bin/guard ") && pre.contains("check-config"),
            "ExecStartPre={pre}"
        );
    }

    // Hardening.
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("RestrictNamespaces", "yes"),
    ] {
        assert_eq!(unit_value(&text, s, key), want, "{key}");
    }
    let rw: Vec<String> = unit_values(&text, s, "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(
        rw.iter().any(|p| p == "/sys/fs/bpf"),
        "ReadWritePaths {rw:?}"
    );
    let families: BTreeSet<String> = unit_value(&text, s, "RestrictAddressFamilies")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        families,
        ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]
            .map(String::from)
            .into()
    );
    let caps = |key: &str| -> BTreeSet<String> {
        unit_value(&text, s, key)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let bounding = caps("CapabilityBoundingSet");
    for needed in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(
            bounding.contains(needed),
            "CapabilityBoundingSet {bounding:?}"
        );
    }
    let allowed_caps: BTreeSet<String> =
        ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
            .map(String::from)
            .into();
    assert!(
        bounding.is_subset(&allowed_caps),
        "CapabilityBoundingSet {bounding:?}"
    );
    assert_eq!(caps("AmbientCapabilities"), bounding);

    // bpf(2) is allowed: guard cannot work without it.
    let filter = syscall_filter(&text);
    assert!(
        filter.contains("bpf"),
        "SystemCallFilter does not allow bpf"
    );
    for needed in ["ioctl", "socket", "sendto", "recvfrom", "flock", "rename"] {
        assert!(filter.contains(needed), "SystemCallFilter lacks {needed}");
    }

    // And systemd's own exposure score stays low (it was 2.4 "OK" when written).
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=30", "--no-pager"])
        .arg(&unit));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let score = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall exposure line");
    eprintln!("systemd-analyze security: {score}");
    assert!(
        out.status.success(),
        "exposure above 3.0: {score}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every system call `systemd-analyze syscall-filter` puts in each group, groups expanded.
fn syscall_groups() -> BTreeMap<String, BTreeSet<String>> {
    let out = run(Command::new("systemd-analyze").arg("syscall-filter"));
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter failed"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut raw: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut group = None;
    for line in text.lines() {
        if line.starts_with('@') {
            group = Some(line.trim().to_owned());
            raw.entry(line.trim().to_owned()).or_default();
        } else if line.trim().is_empty() || !line.starts_with(' ') {
            group = None;
        } else if let Some(g) = &group {
            let item = line.trim();
            if !item.starts_with('#') {
                raw.get_mut(g).expect("group").push(item.to_owned());
            }
        }
    }
    fn expand(
        name: &str,
        raw: &BTreeMap<String, Vec<String>>,
        out: &mut BTreeSet<String>,
        seen: &mut BTreeSet<String>,
    ) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        for item in raw.get(name).map(Vec::as_slice).unwrap_or_default() {
            if item.starts_with('@') {
                expand(item, raw, out, seen);
            } else {
                out.insert(item.clone());
            }
        }
    }
    raw.keys()
        .map(|g| {
            let mut set = BTreeSet::new();
            expand(g, &raw, &mut set, &mut BTreeSet::new());
            (g.clone(), set)
        })
        .collect()
}

/// The system calls the unit's SystemCallFilter allows (an allow list; a deny list, `~...`,
/// fails the test).
fn syscall_filter(unit: &str) -> BTreeSet<String> {
    let groups = syscall_groups();
    let mut allowed = BTreeSet::new();
    for value in unit_values(unit, "Service", "SystemCallFilter") {
        assert!(
            !value.starts_with('~'),
            "SystemCallFilter={value}: keep it an allow list"
        );
        for item in value.split_whitespace() {
            if item.starts_with('@') {
                let set = groups
                    .get(item)
                    .unwrap_or_else(|| panic!("unknown system call group {item}"));
                allowed.extend(set.iter().cloned());
            } else {
                allowed.insert(item.to_owned());
            }
        }
    }
    // systemd always allows @default.
    allowed.extend(groups.get("@default").cloned().unwrap_or_default());
    assert!(
        allowed.len() > 100,
        "SystemCallFilter allows only {allowed:?}"
    );
    allowed
}

// ---------------------------------------------------------------------------------------------
// The example config

#[test]
fn example_config_is_valid_with_and_without_its_commented_options() {
    let example = packaging("guard.toml");
    let out = check_config(&example);
    assert!(out.contains("policy drop"), "{out}");
    assert_eq!(
        unit_value(&read("systemd/guard.service"), "Service", "ExecStart"),
        "/usr/local/bin/guard --config /etc/guard/guard.toml run",
        "the unit runs another config than the one documented"
    );

    // Uncomment every option (and the [rate_limit] table, with policy = "rate-limit"): each
    // example value must be valid too, and in a valid place.
    let text = read("guard.toml");
    let mut uncommented = 0;
    let mut all = String::new();
    for line in text.lines() {
        let trimmed = line.strip_prefix("# ").unwrap_or("");
        let is_option = trimmed == "[rate_limit]"
            || trimmed.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
            });
        if is_option {
            all.push_str(trimmed);
            uncommented += 1;
        } else if line.starts_with("policy = ") {
            all.push_str("policy = \"rate-limit\"");
        } else {
            all.push_str(line);
        }
        all.push('\n');
    }
    assert!(
        uncommented >= 10,
        "only {uncommented} commented options found"
    );
    let dir = tempdir();
    std::fs::write(dir.path().join("allow.txt"), "192.0.2.0/24\n").expect("allow.txt");
    std::fs::write(dir.path().join("deny.txt"), "198.51.100.0/24\n").expect("deny.txt");
    let path = dir.path().join("guard.toml");
    std::fs::write(&path, &all).expect("writing the uncommented config");
    let out = check_config(&path);
    assert!(out.contains("policy rate-limit"), "{out}\n{all}");
    assert!(out.contains("1 denylisted"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// Every document of a YAML file, as JSON values.
fn yaml_documents(rel: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let v = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{rel} does not parse: {e}"));
            serde_json::to_value(v).unwrap_or_else(|e| panic!("{rel}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v:#}"))
}

#[test]
fn kubernetes_manifests_parse_and_agree_with_each_other() {
    let ds_docs = yaml_documents("kubernetes/daemonset.yaml");
    let cm_docs = yaml_documents("kubernetes/configmap.yaml");
    let all: Vec<&Value> = ds_docs.iter().chain(&cm_docs).collect();
    let ds = all
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let cm = all
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    for d in &all {
        assert!(
            d.pointer("/metadata/namespace").is_none(),
            "{} sets a namespace: apply it where you like",
            d["kind"]
        );
    }

    // The DaemonSet.
    assert_eq!(str_at(ds, "/apiVersion"), "apps/v1");
    assert_eq!(
        ds.pointer("/spec/selector/matchLabels"),
        ds.pointer("/spec/template/metadata/labels"),
        "the selector does not select the pods"
    );
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "XDP needs the node's interfaces");
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let command: Vec<&str> = c["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|a| a.as_str().expect("string argument"))
        .collect();
    assert_eq!(command.last(), Some(&"run"), "{command:?}");
    let config_at = command
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("--config in the command");
    let sc = &c["securityContext"];
    let caps: BTreeSet<&str> = sc
        .pointer("/capabilities/add")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        sc["privileged"] == true
            || ["BPF", "PERFMON", "NET_ADMIN"]
                .iter()
                .all(|n| caps.contains(n)),
        "neither privileged nor CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN: {sc:#}"
    );

    // Volumes: the node's bpffs at /sys/fs/bpf, the ConfigMap where --config points.
    let volumes = pod["volumes"].as_array().expect("volumes");
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let mount_of = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}: {mounts:?}"))
    };
    let bpffs = mount_of("/sys/fs/bpf");
    let bpffs_volume = volume(str_at(bpffs, "/name"));
    assert_eq!(str_at(bpffs_volume, "/hostPath/path"), "/sys/fs/bpf");
    assert_ne!(bpffs["readOnly"], true, "the pins need a writable bpffs");
    let config_dir = Path::new(config_at).parent().expect("config directory");
    let config_mount = mount_of(config_dir.to_str().expect("UTF-8"));
    let config_volume = volume(str_at(config_mount, "/name"));
    assert_eq!(str_at(config_volume, "/configMap/name"), "guard-config");

    // The ConfigMap: guard.toml and allow.txt, valid together.
    assert_eq!(str_at(cm, "/metadata/name"), "guard-config");
    let data = cm["data"].as_object().expect("ConfigMap data");
    let file_name = Path::new(config_at).file_name().expect("config file name");
    let toml_text = data
        .get(file_name.to_str().expect("UTF-8"))
        .and_then(Value::as_str)
        .expect("the config file in the ConfigMap");
    let allow_txt = data
        .get("allow.txt")
        .and_then(Value::as_str)
        .expect("allow.txt in the ConfigMap");
    let dir = tempdir();
    std::fs::write(dir.path().join("guard.toml"), toml_text).expect("writing guard.toml");
    std::fs::write(dir.path().join("allow.txt"), allow_txt).expect("writing allow.txt");
    check_config(&dir.path().join("guard.toml"));
    let config: toml::Table = toml::from_str(toml_text).expect("guard.toml is TOML");
    let includes: Vec<&str> = config["allow_include"]
        .as_array()
        .expect("allow_include")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(includes, ["allow.txt"]);
    let pin = config
        .get("pin_path")
        .and_then(|p| p.as_str())
        .unwrap_or("/sys/fs/bpf/guard");
    assert!(
        pin.starts_with("/sys/fs/bpf/"),
        "pin_path {pin} is not on the node's bpffs mount"
    );
    assert_ne!(
        config.get("detach_on_exit").and_then(|d| d.as_bool()),
        Some(true),
        "a pod restart would leave the node unguarded"
    );

    // Metrics: on an address the kubelet and Prometheus reach, at the annotated port.
    let addr: SocketAddr = config["metrics_addr"]
        .as_str()
        .expect("metrics_addr")
        .parse()
        .expect("metrics_addr is HOST:PORT");
    assert!(
        !addr.ip().is_loopback(),
        "metrics on {addr}: Prometheus cannot scrape loopback"
    );
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        annotations["prometheus.io/port"],
        addr.port().to_string(),
        "the scrape annotation names another port"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        if let Some(p) = c.get(probe) {
            assert_eq!(p["httpGet"]["port"], addr.port(), "{probe}");
            assert_eq!(p["httpGet"]["path"], "/metrics", "{probe}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Grafana

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p.get("panels").and_then(Value::as_array) {
            out.extend(nested);
        }
    }
    out
}

/// The identifiers in a PromQL expression that name guard series.
fn guard_series(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("guard_") {
        let start = i + pos;
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if word_start {
            out.push(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// `label="value"` / `label=~"value"` matchers and `by (...)` labels of an expression.
fn labels_used(expr: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut matchers = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("unbalanced braces") + open;
        for m in rest[open + 1..close].split(',') {
            let m = m.trim();
            if m.is_empty() {
                continue;
            }
            let op = m.find(['=', '!']).expect("a matcher");
            let value = m[op..].trim_start_matches(['=', '!', '~']).trim();
            matchers.push((
                m[..op].trim().to_owned(),
                value.trim_matches('"').to_owned(),
            ));
        }
        rest = &rest[close + 1..];
    }
    let mut by = Vec::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("by (") {
        let close = rest[pos..].find(')').expect("unbalanced by") + pos;
        by.extend(rest[pos + 4..close].split(',').map(|l| l.trim().to_owned()));
        rest = &rest[close..];
    }
    (matchers, by)
}

#[test]
fn grafana_dashboard_queries_what_guard_exports() {
    let text = read("grafana/guard-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input: {inputs:?}"
    );
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|t| !t.is_empty()));

    let series: BTreeSet<&str> = SERIES.iter().copied().collect();
    let reasons: BTreeSet<&str> = Verdict::ALL.iter().map(|v| v.name()).collect();
    let mut ids = BTreeSet::new();
    let mut used_series = BTreeSet::new();
    let mut used_reasons = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["type"] == "row" {
            continue;
        }
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        assert!(
            panel["gridPos"]["w"].as_u64().is_some(),
            "{title}: no gridPos"
        );
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: datasource"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            exprs.push((title.to_owned(), expr.to_owned()));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = var["definition"].as_str() {
            exprs.push((format!("variable {}", var["name"]), q.to_owned()));
        }
    }
    for (title, expr) in &exprs {
        let names = guard_series(expr);
        assert!(!names.is_empty(), "{title}: {expr} queries no guard series");
        for name in names {
            assert!(
                series.contains(name.as_str()),
                "{title}: {expr} uses {name}, which guard does not export"
            );
            used_series.insert(name);
        }
        // rate() and increase() only over counters.
        for f in ["rate(", "increase("] {
            let mut rest = expr.as_str();
            while let Some(pos) = rest.find(f) {
                let after = &rest[pos + f.len()..];
                let arg = guard_series(after).into_iter().next().expect("a series");
                assert!(arg.ends_with("_total"), "{title}: {f}{arg}: not a counter");
                rest = after;
            }
        }
        let (matchers, by) = labels_used(expr);
        for (label, value) in &matchers {
            assert!(
                LABELS.contains(&label.as_str()),
                "{title}: {expr}: no label {label}"
            );
            if label == "reason" {
                assert!(
                    reasons.contains(value.as_str()),
                    "{title}: {expr}: no reason {value} (guard has {reasons:?})"
                );
                used_reasons.insert(value.clone());
            }
        }
        for label in &by {
            assert!(
                LABELS.contains(&label.as_str()),
                "{title}: {expr}: no label {label}"
            );
        }
    }
    for needed in ["dropped", "allowlisted", "rate_limited"] {
        assert!(used_reasons.contains(needed), "no panel shows {needed}");
    }
    for needed in [
        "guard_packets_total",
        "guard_bytes_total",
        "guard_bucket_inserts_total",
        "guard_allowlist_prefixes",
        "guard_attached",
        "guard_dry_run",
        "guard_policy",
    ] {
        assert!(used_series.contains(needed), "no panel shows {needed}");
    }
    assert!(
        exprs
            .iter()
            .any(|(_, e)| e.contains("rate(guard_packets_total{") && e.contains("[1m])")),
        "no rate(guard_packets_total[1m]) panel"
    );
}

// ---------------------------------------------------------------------------------------------
// Completions and man page

#[test]
fn completions_and_manpage_cover_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = guard(&[OsStr::new("completions"), OsStr::new(shell)]);
        assert!(out.status.success(), "guard completions {shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for word in [
            "attach",
            "allow",
            "revoke",
            "check-config",
            "run",
            "pin-path",
        ] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = guard(&[OsStr::new("manpage")]);
    assert!(out.status.success(), "guard manpage");
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH"),
        "not roff: {man}"
    );
    assert!(man.contains(".TH guard"), "{man}");
    for word in ["attach", "allow", "check\\-config"] {
        assert!(man.contains(word), "the man page lacks {word}");
    }
}

// ---------------------------------------------------------------------------------------------
// guard run inside the unit's limits (root)

const SB_SRV: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 79, 1, 1));
const SB_ALLOWED: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 79, 1, 2));
const SB_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 79, 1, 3));

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The system calls (and socket families) in an `strace -f` log after `bin` was executed.
fn traced(trace: &str, bin: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let exec = format!("execve(\"{}\"", bin.display());
    let start = trace
        .lines()
        .position(|l| l.contains(&exec) && l.trim_end().ends_with("= 0"))
        .unwrap_or_else(|| panic!("no {exec} in the trace"));
    let mut calls = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in trace.lines().skip(start) {
        let rest = line
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let name = if let Some(r) = rest.strip_prefix("<... ") {
            r.split_whitespace().next().unwrap_or("")
        } else {
            rest.split('(').next().unwrap_or("")
        };
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            calls.insert(name.to_owned());
        }
        if let Some(args) = rest.strip_prefix("socket(")
            && let Some(family) = args.split(',').next()
        {
            families.insert(family.to_owned());
        }
    }
    (calls, families)
}

#[test]
fn unit_sandbox_is_enough_for_guard_run() {
    if !require_privileges("unit_sandbox_is_enough_for_guard_run") {
        return;
    }
    let unit = read("systemd/guard.service");
    let caps = |key: &str| -> Vec<String> {
        unit_value(&unit, "Service", key)
            .split_whitespace()
            .map(|c| {
                c.strip_prefix("CAP_")
                    .expect("CAP_ name")
                    .to_ascii_lowercase()
            })
            .collect()
    };
    let bounding = caps("CapabilityBoundingSet");
    let ambient = caps("AmbientCapabilities");
    let no_new_privs = unit_value(&unit, "Service", "NoNewPrivileges") == "yes";

    let srv = Netns::new("gpsrv").expect("server namespace");
    let cli = Netns::new("gpcli").expect("client namespace");
    lab::veth(
        VethEnd {
            ns: &srv,
            ifname: "srv0",
            addrs: &["10.79.1.1/24"],
        },
        VethEnd {
            ns: &cli,
            ifname: "cli0",
            addrs: &["10.79.1.2/24", "10.79.1.3/24"],
        },
    )
    .expect("veth pair");
    let _memcached = Memcached::start(&srv, &[SB_SRV]).expect("memcached");
    let pins = Guard::new(&srv);
    let dir = tempdir();
    let metrics = SocketAddr::new(SB_SRV, 9211);
    let config = dir.path().join("guard.toml");
    let write_config = |allow: &[IpAddr]| {
        let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}/32\"")).collect();
        lab::write_file_atomically(
            &config,
            &format!(
                "interfaces = [\"srv0\"]\nallow = [{}]\nmetrics_addr = \"{metrics}\"\n\
                 pin_path = \"{}\"\ndetach_on_exit = true\n",
                allow.join(", "),
                pins.pin_path().display()
            ),
        )
        .expect("writing the config");
    };
    write_config(&[SB_ALLOWED]);

    let strace = have("strace");
    if !strace {
        eprintln!("\n!!!!!!!! strace is not installed: checking capabilities only !!!!!!!!\n");
    }
    let trace = dir.path().join("strace.log");
    let trace_arg = trace.display().to_string();
    let outer: Vec<&OsStr> = if strace {
        ["strace", "-f", "-qq", "-o", trace_arg.as_str()]
            .map(OsStr::new)
            .to_vec()
    } else {
        Vec::new()
    };
    // As systemd sets them up: the bounding set, and the ambient capabilities (which need
    // to be inheritable too).
    let bounding_arg = format!("--bounding-set=-all,+{}", bounding.join(",+"));
    let inheritable_arg = format!("--inh-caps=-all,+{}", ambient.join(",+"));
    let ambient_arg = format!("--ambient-caps=-all,+{}", ambient.join(",+"));
    let mut inner: Vec<&OsStr> = vec![
        OsStr::new("setpriv"),
        OsStr::new(&inheritable_arg),
        OsStr::new(&ambient_arg),
        OsStr::new(&bounding_arg),
    ];
    if no_new_privs {
        inner.push(OsStr::new("--no-new-privs"));
    }
    inner.push(OsStr::new("--"));
    let mut daemon = Daemon::start_wrapped(
        &srv,
        &outer,
        &inner,
        &config,
        &dir.path().join("guard-run.log"),
    )
    .expect("starting guard run");
    daemon
        .wait_log(0, "serving metrics on", Duration::from_secs(30))
        .expect("guard run starting with the unit's capabilities");

    // It runs with exactly the unit's capabilities.
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .to_owned()
    };
    let cap_number = |name: &str| match name {
        "net_admin" => 12,
        "sys_admin" => 21,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("unexpected capability {other}"),
    };
    let want: u64 = bounding.iter().map(|c| 1u64 << cap_number(c)).sum();
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff"),
        want,
        "{status}"
    );
    if no_new_privs {
        assert_eq!(field("NoNewPrivs:"), "1");
    }

    // It guards: the allowlisted client is answered, the other one is not.
    let request = |source: IpAddr, timeout: Duration| {
        let sock = cli
            .run(|| UdpSocket::bind(SocketAddr::new(source, 0)))
            .expect("client namespace")
            .expect("client socket");
        lab::udp_request(
            &sock,
            SocketAddr::new(SB_SRV, MEMCACHED_PORT),
            1,
            "get k\r\n",
            timeout,
        )
        .expect("request")
    };
    assert!(request(SB_ALLOWED, Duration::from_secs(2)).complete);
    assert!(!request(SB_OTHER, Duration::from_millis(400)).answered());

    // A reload, then metrics: every series the dashboard may query is there.
    let mark = daemon.log_mark();
    write_config(&[SB_ALLOWED, SB_OTHER]);
    daemon.signal(libc::SIGHUP).expect("SIGHUP");
    daemon
        .wait_log(mark, "reloaded (SIGHUP)", Duration::from_secs(10))
        .expect("reload");
    assert!(request(SB_OTHER, Duration::from_secs(2)).complete);
    let r = srv
        .run(|| lab::http_get(metrics, "/metrics", Duration::from_secs(5)))
        .expect("server namespace")
        .expect("GET /metrics");
    assert_eq!(r.status, 200);
    let served = lab::parse_metrics(&r.body)
        .expect("parsing /metrics")
        .series_names();
    let known: BTreeSet<String> = SERIES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        served, known,
        "update SERIES (and the dashboard) to what guard run serves"
    );

    // SIGTERM with detach_on_exit: the detach path runs inside the limits too.
    daemon.signal(libc::SIGTERM).expect("SIGTERM");
    let exit = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("guard run exiting");
    assert!(exit.success(), "guard run: {exit}\n{}", daemon.log());
    assert!(
        daemon.log().contains("detached from srv0"),
        "{}",
        daemon.log()
    );

    if strace {
        let text = std::fs::read_to_string(&trace).expect("reading the trace");
        let (calls, families) = traced(&text, &privilege::guard_bin());
        let allowed = syscall_filter(&unit);
        let denied: Vec<&String> = calls.iter().filter(|c| !allowed.contains(*c)).collect();
        eprintln!("guard run used {} system calls: {calls:?}", calls.len());
        assert!(calls.contains("bpf"), "no bpf(2) traced: {calls:?}");
        assert!(
            denied.is_empty(),
            "SystemCallFilter would refuse {denied:?} (guard run used {calls:?})"
        );
        let restricted: BTreeSet<String> = unit_value(&unit, "Service", "RestrictAddressFamilies")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert!(
            families.is_subset(&restricted),
            "RestrictAddressFamilies would refuse some of {families:?}"
        );
    }
}
