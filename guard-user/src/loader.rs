//! Loading the embedded XDP object into the kernel.
//!
//! The IPv4 direct tables are the program's global data (`V4_TABLE_SECTIONS`). aya 0.14 would
//! create their maps without `BPF_F_MMAPABLE`, and user space changes the tables through a
//! mapping, so guard creates those maps itself, pins them, and points the loader at the pins
//! (`map_pin_path`), the way existing pins are reused. The loader then writes each section's
//! initial value, zeroes, into its map: a table that was already pinned is saved before the
//! load and written back after it.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, maps::MapData, programs::Xdp};
use guard_common::maps::{
    PREFIX_BUCKETS, PREFIX_BUCKETS_DEFAULT, PROGRAM, SOURCE_BUCKETS, SOURCE_BUCKETS_DEFAULT,
    TOP_TALKERS, TOP_TALKERS_DEFAULT, V4_TABLE_SECTIONS, object_name,
};

use crate::{
    maps::MAP_NAMES,
    object::OBJECT,
    pins::{self, PinLayout},
    sys::{self, MappedArray},
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
    let mut saved = Vec::new();
    for (pin, _, bytes) in V4_TABLE_SECTIONS {
        let path = layout.map(pin);
        if path.exists() {
            saved.push((SavedTable::read(&path)?, path));
        } else {
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
    let loaded = loader.load(OBJECT).context("loading guard's BPF object");
    // Written back whether or not the load went through: the loader may have zeroed them.
    for (table, path) in &saved {
        table.write_back(path)?;
    }
    let mut ebpf = loaded?;
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

/// The non-zero pages of a pinned IPv4 table.
struct SavedTable {
    pages: Vec<(usize, Box<[u8]>)>,
}

impl SavedTable {
    const PAGE: usize = 4096;

    fn mapped(path: &Path) -> anyhow::Result<MappedArray> {
        let map = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
        let bytes = map.info()?.value_size() as usize;
        MappedArray::new(map.fd().as_fd(), bytes)
            .with_context(|| format!("mapping {} into memory", path.display()))
    }

    fn read(path: &Path) -> anyhow::Result<Self> {
        let memory = Self::mapped(path)?;
        // SAFETY: the mapping's bytes; no program uses the table while guard is not loaded.
        let bytes: &[u8] = unsafe { memory.as_slice() };
        let pages = bytes
            .chunks(Self::PAGE)
            .enumerate()
            .filter(|(_, page)| page.iter().any(|b| *b != 0))
            .map(|(i, page)| (i * Self::PAGE, Box::from(page)))
            .collect();
        Ok(Self { pages })
    }

    fn write_back(&self, path: &Path) -> anyhow::Result<()> {
        let memory = Self::mapped(path)?;
        for (at, page) in &self.pages {
            // SAFETY: `at` and the page's length lie inside the mapping, which is writable.
            unsafe {
                std::ptr::copy_nonoverlapping(page.as_ptr(), memory.as_ptr().add(*at), page.len())
            };
        }
        Ok(())
    }
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
    // with a dot.)
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(format!(
        "{}/guard-load-{}-{}",
        pins::BPFFS_MOUNT,
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    pins::ensure_bpffs(&dir)?;
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

/// A directory of temporary pins, removed with them when dropped.
struct TempPins(PathBuf);

impl TempPins {
    fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
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
