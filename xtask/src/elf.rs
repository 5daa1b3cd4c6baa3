//! Just enough ELF parsing to read a shared object's dynamic section
//! (`DT_SONAME`, `DT_NEEDED`, `DT_RUNPATH`/`DT_RPATH`) without binutils.
//!
//! Only 64-bit little-endian files are supported (what x86_64/aarch64 Linux
//! hosts produce). Reads just the headers and the two sections it needs, so
//! it is cheap even on a 200 MB libLLVM.

use std::{fs::File, os::unix::fs::FileExt as _, path::Path};

use anyhow::{Context as _, Result, ensure};

const SHT_DYNAMIC: u32 = 6;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_SONAME: u64 = 14;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// The parts of an ELF file's dynamic section that setup cares about.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// `DT_SONAME`, if any.
    pub soname: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` (or, failing that, `DT_RPATH`) entries, split on `:`.
    pub runpath: Vec<String>,
}

/// One section header's fields we use.
struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn read_at(file: &File, offset: u64, len: u64) -> Result<Vec<u8>> {
    ensure!(len <= 1 << 30, "unreasonable ELF section size {len}");
    let mut buf = vec![0; usize::try_from(len)?];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Reads the dynamic section of the ELF file at `path`.
pub fn read_dynamic(path: &Path) -> Result<Dynamic> {
    let inner = || -> Result<Dynamic> {
        let file = File::open(path)?;
        let header = read_at(&file, 0, 64)?;
        ensure!(header.starts_with(b"\x7fELF"), "not an ELF file");
        ensure!(
            header[4] == 2 && header[5] == 1,
            "only 64-bit little-endian ELF is supported"
        );
        let shoff = u64_at(&header, 0x28);
        let shentsize = u64::from(u16_at(&header, 0x3a));
        let shnum = u64::from(u16_at(&header, 0x3c));
        ensure!(shentsize >= 64, "bad section header size {shentsize}");
        let table = read_at(&file, shoff, shentsize * shnum)?;
        let sections: Vec<Section> = table
            .chunks_exact(usize::try_from(shentsize)?)
            .map(|sh| Section {
                kind: u32_at(sh, 4),
                offset: u64_at(sh, 24),
                size: u64_at(sh, 32),
                link: u32_at(sh, 40),
            })
            .collect();
        let Some(dynamic) = sections.iter().find(|s| s.kind == SHT_DYNAMIC) else {
            // Statically linked: nothing needed.
            return Ok(Dynamic::default());
        };
        let strtab = sections
            .get(usize::try_from(dynamic.link)?)
            .context("dynamic section links to a missing string table")?;
        let strings = read_at(&file, strtab.offset, strtab.size)?;
        let string = |offset: u64| -> Result<String> {
            let tail = usize::try_from(offset)
                .ok()
                .and_then(|o| strings.get(o..))
                .context("string offset out of range")?;
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
        };

        let entries = read_at(&file, dynamic.offset, dynamic.size)?;
        let mut out = Dynamic::default();
        let mut rpath = None;
        for entry in entries.chunks_exact(16) {
            let (tag, val) = (u64_at(entry, 0), u64_at(entry, 8));
            match tag {
                DT_NULL => break,
                DT_NEEDED => out.needed.push(string(val)?),
                DT_SONAME => out.soname = Some(string(val)?),
                DT_RUNPATH => out.runpath = split_path(&string(val)?),
                DT_RPATH => rpath = Some(split_path(&string(val)?)),
                _ => {}
            }
        }
        // The loader ignores DT_RPATH when DT_RUNPATH is present.
        if out.runpath.is_empty()
            && let Some(rpath) = rpath
        {
            out.runpath = rpath;
        }
        Ok(out)
    };
    inner().with_context(|| format!("reading the ELF dynamic section of {}", path.display()))
}

/// Splits a `:`-separated search path, dropping empty entries.
fn split_path(s: &str) -> Vec<String> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_needed_libc() {
        // The test binary itself is a dynamically linked ELF needing libc.
        let exe = std::env::current_exe().unwrap();
        let dynamic = read_dynamic(&exe).unwrap();
        assert!(
            dynamic.needed.iter().any(|n| n.starts_with("libc.so")),
            "{dynamic:?}"
        );
    }

    #[test]
    fn rejects_non_elf() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert!(read_dynamic(&manifest).is_err());
    }

    #[test]
    fn splits_runpath() {
        assert_eq!(split_path("/a/lib::/b"), ["/a/lib", "/b"]);
    }
}
