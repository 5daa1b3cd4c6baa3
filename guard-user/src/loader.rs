//! Loading the embedded XDP object into the kernel.
//!
//! The IPv4 direct tables are the program's global data (`V4_TABLE_SECTIONS`). aya 0.14 would
//! create their maps without `BPF_F_MMAPABLE`, and user space changes the tables through a
//! mapping, so guard creates those maps itself, pins them, and points the loader at the pins
//! (`map_pin_path`), the way existing pins are reused. The loader then writes each section's
//! initial value, zeroes, into its map, pinned before or not. So a load over pinned maps (a
//! first attach that was interrupted before it pinned the program) rebuilds the tables from
//! the tries, the lists' set of record, before it returns: a load interrupted in between
//! leaves tables that the next load rebuilds again. A program must not be running on those
//! maps meanwhile; guard's own runs only once its pin exists, and then nothing loads again.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, programs::Xdp};
use guard_common::maps::{
    ALLOW_V4, DENY_V4, PREFIX_BUCKETS, PREFIX_BUCKETS_DEFAULT, PROGRAM, SOURCE_BUCKETS,
    SOURCE_BUCKETS_DEFAULT, TOP_TALKERS, TOP_TALKERS_DEFAULT, V4_TABLE_SECTIONS, object_name,
};

use crate::{
    lists::{self, List},
    maps::{GuardMaps, MAP_NAMES},
    object::OBJECT,
    pins::{self, PinLayout},
    sys,
};

/// Capacities of the maps whose size is chosen at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Per-source rate-limit buckets.
    pub source_buckets: u32,
    /// Per-prefix rate-limit buckets.
    pub prefix_buckets: u32,
    /// Top talkers.
    pub top_talkers: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        Self {
            source_buckets: SOURCE_BUCKETS_DEFAULT,
            prefix_buckets: PREFIX_BUCKETS_DEFAULT,
            top_talkers: TOP_TALKERS_DEFAULT,
        }
    }
}

/// The eBPF log level fixed into the program when it loads: debug when this process logs at
/// debug level (`RUST_LOG=debug`), else off, so that log statements cost one branch.
pub fn ebpf_log_level() -> u8 {
    // aya-log's levels: 1 error ... 4 debug, 5 trace; 0 turns every statement off.
    if log::max_level() >= log::LevelFilter::Debug {
        4
    } else {
        0
    }
}

fn sized(sizes: &MapSizes) -> EbpfLoader<'static> {
    static OFF: u8 = 0;
    static DEBUG: u8 = 4;
    let level: &'static u8 = if ebpf_log_level() == 4 { &DEBUG } else { &OFF };
    let mut loader = EbpfLoader::new();
    loader
        .override_global("AYA_LOG_LEVEL", level, false)
        .map_max_entries(SOURCE_BUCKETS, sizes.source_buckets)
        .map_max_entries(PREFIX_BUCKETS, sizes.prefix_buckets)
        .map_max_entries(TOP_TALKERS, sizes.top_talkers);
    loader
}

/// Loads the object with every map pinned under `layout` (existing pins are reused, missing
/// ones created with `sizes`), and loads the program into the kernel. The program itself is
/// not pinned.
pub fn load_pinned(layout: &PinLayout, sizes: &MapSizes) -> anyhow::Result<Ebpf> {
    // The tries are the lists' record: pinned already, they hold lists to rebuild.
    let reused = [ALLOW_V4, DENY_V4]
        .iter()
        .any(|name| layout.map(name).exists());
    for (pin, _, bytes) in V4_TABLE_SECTIONS {
        let path = layout.map(pin);
        if !path.exists() {
            create_table(pin, bytes, &path)?;
        }
    }
    let paths: Vec<_> = MAP_NAMES
        .iter()
        .map(|n| (object_name(n), layout.map(n)))
        .collect();
    let mut loader = sized(sizes);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT).context("loading guard's BPF object")?;
    if reused {
        let mut maps = GuardMaps::open(layout)?;
        for list in [List::Allow, List::Deny] {
            lists::rebuild_v4_tables(&mut maps, list)?;
        }
    }
    program(&mut ebpf)?
        .load()
        .context("loading the XDP program (verifier)")?;
    Ok(ebpf)
}

/// Creates an IPv4 table's map (see the module's doc) and pins it at `path`.
fn create_table(name: &str, bytes: u32, path: &Path) -> anyhow::Result<()> {
    let fd = sys::create_mmapable_value(name, bytes)
        .with_context(|| format!("creating the {name} map ({bytes} bytes)"))?;
    sys::obj_pin(fd.as_fd(), path).with_context(|| format!("pinning {}", path.display()))
}

/// Loads the object with private, unpinned maps, and loads the program: for tests and
/// benchmarks that must not touch the host's guard.
pub fn load_unpinned(sizes: &MapSizes) -> anyhow::Result<Ebpf> {
    load_unpinned_object(OBJECT, sizes)
}

/// As [`load_unpinned`], for another build of guard's BPF object (`object`, 8-byte aligned):
/// for benchmarks that compare two builds of the program. Its maps must be this build's.
pub fn load_unpinned_object(object: &[u8], sizes: &MapSizes) -> anyhow::Result<Ebpf> {
    // The tables' maps are handed over by pin (see the module's doc): pinned in a directory
    // of this call's own, removed as soon as the object holds them. (bpffs refuses names
    // with a dot.) Directories left by a process that died meanwhile are removed first.
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let root = Path::new(pins::BPFFS_MOUNT);
    pins::ensure_bpffs(&root.join(TEMP_PINS))?;
    TempPins::sweep(root);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = root.join(format!(
        "{TEMP_PINS}-{}-{}-{nanos}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let pinned = TempPins::new(dir)?;
    let mut loader = sized(sizes);
    let mut paths = Vec::new();
    for (pin, _, bytes) in V4_TABLE_SECTIONS {
        let path = pinned.0.join(pin);
        create_table(pin, bytes, &path)?;
        paths.push(path);
    }
    for ((_, section, _), path) in V4_TABLE_SECTIONS.iter().zip(&paths) {
        loader.map_pin_path(section, path.as_path());
    }
    let loaded = loader.load(object).context("loading guard's BPF object");
    drop(pinned);
    let mut ebpf = loaded?;
    program(&mut ebpf)?
        .load()
        .context("loading the XDP program (verifier)")?;
    Ok(ebpf)
}

/// The name of an unpinned load's directory of temporary pins, before `-PID-N-NANOS`.
const TEMP_PINS: &str = "guard-load";

/// A directory of temporary pins, removed with them when dropped.
struct TempPins(PathBuf);

impl TempPins {
    fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Removes the directories under `root` of loads whose process is gone (killed during
    /// the load): their pins hold 97 MiB of tables each.
    fn sweep(root: &Path) {
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name
                .to_str()
                .and_then(|n| n.strip_prefix(TEMP_PINS))
                .and_then(|n| n.strip_prefix('-'))
            else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                drop(Self(entry.path()));
            }
        }
    }
}

impl Drop for TempPins {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The XDP program of a loaded object.
pub fn program(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    let prog = ebpf
        .program_mut(PROGRAM)
        .with_context(|| format!("the object has no program {PROGRAM}"))?;
    Ok(prog.try_into()?)
}
