//! xdp-filter (Debian's xdp-tools) as a baseline: loaded on a veth inside a namespace of the
//! bench, told to drop UDP to 11211, and always unloaded again.
//!
//! xdp-filter pins its maps under /sys/fs/bpf/xdp-filter, a path shared by every user of the
//! tool on the host; the bench refuses to run it when that path already exists (someone else
//! is using xdp-filter) and removes it when it is left behind by a run of its own.

use std::{os::fd::OwnedFd, path::Path};

use anyhow::{Context as _, bail};
use guard_tests::lab::{Netns, run_ok};
use serde_json::Value;

use super::bpf;

/// xdp-filter's pin directory.
const PIN_DIR: &str = "/sys/fs/bpf/xdp-filter";

/// A private bpffs directory for libxdp's own state (`LIBXDP_BPFFS`), removed on drop.
fn libxdp_dir() -> String {
    format!("/sys/fs/bpf/guard-bench-libxdp-{}", std::process::id())
}

/// `xdp-filter ARGS` inside `ns`, with libxdp's state kept in [`libxdp_dir`].
fn xdp_filter(ns: &Netns) -> std::process::Command {
    let mut c = ns.command("xdp-filter");
    c.env("LIBXDP_BPFFS", libxdp_dir());
    c
}

/// xdp-filter loaded on one interface; unloaded on drop.
pub struct Loaded<'a> {
    ns: &'a Netns,
    iface: String,
    /// The id of the XDP program on the interface.
    pub prog_id: u32,
    /// Its name (e.g. `xdpfilt_alw_all`, or `xdp_dispatcher` when libxdp uses one).
    pub prog_name: String,
}

/// `xdp-filter load --version` (e.g. "xdp-filter version 1.3.1 using libbpf version
/// 1.1.2"), if installed.
pub fn version() -> Option<String> {
    let out = std::process::Command::new("xdp-filter")
        .args(["load", "--version"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("xdp-filter version"))
        .map(|l| l.trim().to_owned())
}

/// Loads xdp-filter on `iface` of `ns` in native mode (`features` as for `-f`, default all)
/// and makes it drop UDP to 11211: `xdp-filter load`, then `xdp-filter port 11211 -p udp`.
pub fn load<'a>(ns: &'a Netns, iface: &str, features: Option<&str>) -> anyhow::Result<Loaded<'a>> {
    if Path::new(PIN_DIR).exists() {
        bail!("{PIN_DIR} exists: another xdp-filter is in use on this host");
    }
    // A fresh machine has no bpffs mounted until guard first pins something, and xdp-filter
    // and libxdp's state both live on it: mount it as guard would.
    guard_user::pins::ensure_bpffs(Path::new(PIN_DIR))?;
    std::fs::create_dir_all(libxdp_dir()).with_context(|| format!("creating {}", libxdp_dir()))?;
    let mut cmd = xdp_filter(ns);
    cmd.args(["load", "--mode", "native"]);
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    cmd.arg(iface);
    let mut loaded = Loaded {
        ns,
        iface: iface.to_owned(),
        prog_id: 0,
        prog_name: String::new(),
    };
    run_ok(&mut cmd).context("xdp-filter load")?;
    run_ok(xdp_filter(ns).args(["port", "11211", "--proto", "udp"]))
        .context("xdp-filter port 11211 --proto udp")?;
    let json = run_ok(
        ns.command("ip")
            .args(["-j", "-d", "link", "show", "dev", iface]),
    )?;
    let v: Value = serde_json::from_str(&json).context("parsing ip -j link")?;
    let prog = &v[0]["xdp"]["prog"];
    loaded.prog_id = prog["id"]
        .as_u64()
        .with_context(|| format!("no XDP program on {iface} after xdp-filter load: {v}"))?
        as u32;
    loaded.prog_name = prog["name"].as_str().unwrap_or("?").to_owned();
    Ok(loaded)
}

impl Loaded<'_> {
    /// A descriptor of the program, which keeps it and its maps (with the port entry) alive
    /// after xdp-filter is unloaded.
    pub fn prog_fd(&self) -> anyhow::Result<OwnedFd> {
        bpf::prog_fd_by_id(self.prog_id)
            .with_context(|| format!("opening xdp-filter's program id {}", self.prog_id))
    }
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        let r = run_ok(xdp_filter(self.ns).args(["unload", &self.iface]));
        if let Err(e) = r {
            eprintln!("bench: xdp-filter unload {} failed: {e:#}", self.iface);
        }
        if Path::new(PIN_DIR).exists() {
            eprintln!("bench: removing {PIN_DIR}, left by xdp-filter");
            if let Err(e) = std::fs::remove_dir_all(PIN_DIR) {
                eprintln!("bench: removing {PIN_DIR} failed: {e}");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(libxdp_dir())
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("bench: removing {} failed: {e}", libxdp_dir());
        }
    }
}
