//! Loading the embedded XDP object into the kernel.

use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader, programs::Xdp};
use guard_common::maps::PROGRAM;

use crate::{maps::MAP_NAMES, object::OBJECT, pins::PinLayout};

/// Loads the object with every map pinned under `layout` (existing pins are reused, missing
/// ones created), and loads the program into the kernel. The program itself is not pinned.
pub fn load_pinned(layout: &PinLayout) -> anyhow::Result<Ebpf> {
    let paths: Vec<_> = MAP_NAMES.iter().map(|n| (*n, layout.map(n))).collect();
    let mut loader = EbpfLoader::new();
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
pub fn load_unpinned() -> anyhow::Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .load(OBJECT)
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
