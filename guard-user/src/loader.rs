//! Loading the embedded XDP object into the kernel.

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, programs::Xdp};
use guard_common::maps::{
    PREFIX_BUCKETS, PREFIX_BUCKETS_DEFAULT, PROGRAM, SOURCE_BUCKETS, SOURCE_BUCKETS_DEFAULT,
    TOP_TALKERS, TOP_TALKERS_DEFAULT, object_name,
};

use crate::{maps::MAP_NAMES, object::OBJECT, pins::PinLayout};

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
    let paths: Vec<_> = MAP_NAMES
        .iter()
        .map(|n| (object_name(n), layout.map(n)))
        .collect();
    let mut loader = sized(sizes);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT).context("loading guard's BPF object")?;
    program(&mut ebpf)?
        .load()
        .context("loading the XDP program (verifier)")?;
    Ok(ebpf)
}

/// Loads the object with private, unpinned maps, and loads the program: for tests and
/// benchmarks that must not touch the host's guard.
pub fn load_unpinned(sizes: &MapSizes) -> anyhow::Result<Ebpf> {
    load_unpinned_object(OBJECT, sizes)
}

/// As [`load_unpinned`], for another build of guard's BPF object (`object`, 8-byte aligned):
/// for benchmarks that compare two builds of the program. Its maps must be this build's.
pub fn load_unpinned_object(object: &[u8], sizes: &MapSizes) -> anyhow::Result<Ebpf> {
    let mut ebpf = sized(sizes)
        .load(object)
        .context("loading guard's BPF object")?;
    program(&mut ebpf)?
        .load()
        .context("loading the XDP program (verifier)")?;
    Ok(ebpf)
}

/// The XDP program of a loaded object.
pub fn program(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    let prog = ebpf
        .program_mut(PROGRAM)
        .with_context(|| format!("the object has no program {PROGRAM}"))?;
    Ok(prog.try_into()?)
}
