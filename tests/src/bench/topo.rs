//! Namespaces and veth pairs for the bench (deleted on drop, with everything in them: XDP
//! programs attached there, nft tables).

use std::{ffi::CString, process::Command};

use anyhow::{Context as _, bail};
use guard_tests::lab::{NETNS_DIR, Netns, run_ok};

/// Prefix of the bench's namespace names (`<prefix>-<pid>-<n>`).
pub const NS_PREFIX: &str = "gbench";

/// Deletes what bench runs whose process is gone (killed with SIGKILL) left behind: their
/// namespaces (with everything in them) and libxdp's private state directories.
pub fn remove_stale() {
    if let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("guard-bench-libxdp-")
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !super::sys::pid_alive(pid)
            {
                eprintln!("bench: removing /sys/fs/bpf/{name}, left by an earlier run");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        // <prefix><role>-<pid>-<n>
        let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !super::sys::pid_alive(pid)
        {
            eprintln!("bench: deleting namespace {name}, left by an earlier run");
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}

/// A namespace of the bench: `gbench<role>-<pid>-<n>`.
pub fn netns(role: &str) -> anyhow::Result<Netns> {
    Netns::new(&format!("{NS_PREFIX}{role}"))
}

/// One end of a veth pair.
pub struct End<'a> {
    /// Its namespace.
    pub ns: &'a Netns,
    /// Its name there.
    pub name: &'a str,
    /// Its MAC address.
    pub mac: &'a str,
}

/// Creates a veth pair with `queues` rx and tx queues on each end, brings both up, and
/// returns their ifindexes.
pub fn veth(a: &End<'_>, b: &End<'_>, queues: usize) -> anyhow::Result<(u32, u32)> {
    let q = queues.to_string();
    a.ns.ip(&[
        "link",
        "add",
        a.name,
        "address",
        a.mac,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "type",
        "veth",
        "peer",
        "name",
        b.name,
        "address",
        b.mac,
        "numtxqueues",
        &q,
        "numrxqueues",
        &q,
        "netns",
        b.ns.name(),
    ])?;
    for e in [a, b] {
        e.ns.ip(&["link", "set", e.name, "up"])?;
    }
    Ok((ifindex(a.ns, a.name)?, ifindex(b.ns, b.name)?))
}

/// The ifindex of `name` in `ns`.
pub fn ifindex(ns: &Netns, name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: a valid C string; if_nametoindex looks the name up in this thread's namespace.
    let idx = ns.run(|| unsafe { libc::if_nametoindex(c.as_ptr()) })?;
    if idx == 0 {
        bail!("no interface {name} in {}", ns.name());
    }
    Ok(idx)
}

/// `ethtool -S` of `iface` in `ns`: (name, value) pairs.
pub fn ethtool_stats(ns: &Netns, iface: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let out = run_ok(ns.command("ethtool").args(["-S", iface])).context("ethtool -S")?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect())
}

/// The sum of the `ethtool -S` counters named `rx_queue_<n>_<suffix>`.
pub fn sum_queues(stats: &[(String, u64)], suffix: &str) -> u64 {
    stats
        .iter()
        .filter(|(k, _)| k.starts_with("rx_queue_") && k.ends_with(suffix))
        .map(|(_, v)| *v)
        .sum()
}
