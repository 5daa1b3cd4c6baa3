//! `cargo xtask setup`: makes a fresh Debian machine ready to build and test
//! guard. Idempotent; when everything is in place it only runs a few quick
//! queries.
//!
//! Steps:
//! 1. the nightly toolchain with `rust-src` (aya-build builds the eBPF crate
//!    with `-Z build-std`);
//! 2. `bpf-linker`, built against the nightly toolchain's own libLLVM so that
//!    the bitcode rustc emits and the linker's LLVM always agree;
//! 3. the Debian packages the integration tests and the demo use.

use std::{
    fs, io,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    elf,
    util::{self, cmd, run},
};

/// The rustup toolchain used for eBPF builds and for building bpf-linker.
const NIGHTLY: &str = "nightly";

/// Debian packages needed by the tests and the demo.
pub const PACKAGES: &[&str] = &[
    "memcached",
    "iproute2",
    "ethtool",
    "bpftool",
    "nftables",
    "nmap",
    "tcpdump",
    "xdp-tools",
    "util-linux",
];

/// Runs every setup step.
pub fn run_all() -> Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_packages(PACKAGES)?;
    Ok(())
}

/// Ensures the nightly toolchain exists and has `rust-src`.
fn ensure_rust_src() -> Result<()> {
    let listed = util::probe(cmd("rustup").args([
        "component",
        "list",
        "--toolchain",
        NIGHTLY,
        "--installed",
    ]))?
    .context("rustup not found: install it from https://rustup.rs")?;
    if !listed.success {
        // Most likely the toolchain itself is missing.
        run(cmd("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    } else if !listed.stdout.lines().any(|l| l.trim() == "rust-src") {
        run(cmd("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }
    println!("setup: {NIGHTLY} rust-src ok");
    Ok(())
}

// ---------------------------------------------------------------------------
// bpf-linker
// ---------------------------------------------------------------------------

/// What running `bpf-linker --version` told us.
enum Linker {
    /// It runs; carries its version.
    Works(String),
    /// Not on the search path.
    Missing,
    /// Found at `path` but failed; `stderr` says why.
    Broken {
        /// Where it was found.
        path: PathBuf,
        /// Its error output.
        stderr: String,
    },
}

/// Finds `bpf-linker` on the search path and runs `--version`.
fn probe_linker() -> Result<Linker> {
    let Some(path) = util::find_program("bpf-linker") else {
        return Ok(Linker::Missing);
    };
    let Some(out) = util::probe(cmd(&path).arg("--version"))? else {
        return Ok(Linker::Missing);
    };
    if out.success {
        let version = out
            .stdout
            .split_whitespace()
            .last()
            .unwrap_or("(unknown version)")
            .to_owned();
        Ok(Linker::Works(version))
    } else {
        Ok(Linker::Broken {
            path,
            stderr: out.stderr.trim().to_owned(),
        })
    }
}

/// The nightly toolchain's LLVM: its major version and shared library.
struct NightlyLlvm {
    major: u32,
    /// `<sysroot>/lib/libLLVM.so.<major>.…-rust-…`.
    lib: PathBuf,
}

impl NightlyLlvm {
    /// Queries `rustc +nightly` for its LLVM version and sysroot.
    fn detect() -> Result<Self> {
        let verbose = util::capture(cmd("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))?;
        let major = parse_llvm_major(&verbose)
            .with_context(|| format!("no `LLVM version:` in `rustc +{NIGHTLY} -vV`:\n{verbose}"))?;
        let sysroot =
            util::capture(cmd("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
        let lib_dir = Path::new(sysroot.trim()).join("lib");
        let names = fs::read_dir(&lib_dir)
            .with_context(|| format!("listing {}", lib_dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok());
        let name = pick_llvm_lib(names, major).with_context(|| {
            format!(
                "no libLLVM.so.{major}.*-rust-* in {}: is the {NIGHTLY} toolchain complete?",
                lib_dir.display()
            )
        })?;
        Ok(Self {
            major,
            lib: lib_dir.join(name),
        })
    }

    /// The names the library must be reachable under from an `LLVM_PREFIX`:
    /// `libLLVM.so` (for linking), its own file name and its soname (for the
    /// built binary's `DT_NEEDED`).
    fn link_names(&self) -> Vec<String> {
        let mut names = vec!["libLLVM.so".to_owned()];
        names.extend(
            self.lib
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
        );
        // The soname is the file name for rustup's libLLVM; read it anyway in
        // case that ever changes.
        match elf::read_dynamic(&self.lib) {
            Ok(elf::Dynamic {
                soname: Some(soname),
                ..
            }) => names.push(soname),
            Ok(_) => {}
            Err(e) => eprintln!("setup: warning: {e:#}"),
        }
        names.sort();
        names.dedup();
        names
    }

    /// The persistent `LLVM_PREFIX` for bpf-linker builds:
    /// `$CARGO_HOME/guard-llvm-<major>`.
    fn prefix(&self) -> Result<PathBuf> {
        Ok(util::cargo_home()?.join(format!("guard-llvm-{}", self.major)))
    }

    /// Creates `<prefix>/lib` with the links of [`Self::link_names`].
    fn populate_prefix(&self) -> Result<PathBuf> {
        let prefix = self.prefix()?;
        let names = self.link_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        link_into(&prefix.join("lib"), &self.lib, &names)?;
        Ok(prefix)
    }
}

/// The LLVM major version from `rustc -vV` output
/// (`LLVM version: 22.1.4` → 22).
pub fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|major| major.parse().ok())
}

/// Whether `name` is rustup's real libLLVM shared object for LLVM `major`,
/// e.g. `libLLVM.so.22.1-rust-1.97.0-nightly` (not the
/// `libLLVM-22-rust-….so` linker script next to it).
pub fn is_llvm_lib(name: &str, major: u32) -> bool {
    let Some(version) = name.strip_prefix("libLLVM.so.") else {
        return false;
    };
    let Some(rest) = version.strip_prefix(&major.to_string()) else {
        return false;
    };
    (rest.starts_with('.') || rest.starts_with('-')) && rest.contains("-rust-")
}

/// Picks the libLLVM for `major` among file names (the lexically greatest if
/// there were ever several).
pub fn pick_llvm_lib(names: impl IntoIterator<Item = String>, major: u32) -> Option<String> {
    names.into_iter().filter(|n| is_llvm_lib(n, major)).max()
}

/// Makes `dir/<name>` a symlink to `target` for each name, creating `dir`
/// and replacing links that point elsewhere. Idempotent.
pub fn link_into(dir: &Path, target: &Path, names: &[&str]) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in names {
        let link = dir.join(name);
        match fs::read_link(&link) {
            Ok(existing) if existing == target => continue,
            Ok(_) => fs::remove_file(&link),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            // Exists but is not a symlink: this folder is ours, replace it.
            Err(_) => fs::remove_file(&link),
        }
        .with_context(|| format!("removing stale {}", link.display()))?;
        symlink(target, &link)
            .with_context(|| format!("symlinking {} -> {}", link.display(), target.display()))?;
        println!("setup: linked {} -> {}", link.display(), target.display());
    }
    Ok(())
}

/// Tries to fix an installed bpf-linker that cannot load its libLLVM by
/// (re-)creating the links its `DT_NEEDED`/`DT_RUNPATH` expect, pointing at
/// the nightly libLLVM when that is the library it was built against.
fn repair_linker(path: &Path, llvm: &NightlyLlvm) -> Result<()> {
    llvm.populate_prefix()?;
    let dynamic = elf::read_dynamic(path)?;
    let lib_dir = llvm.lib.parent().context("libLLVM has no parent")?;
    for needed in dynamic.needed.iter().filter(|n| n.starts_with("libLLVM")) {
        let target = lib_dir.join(needed);
        if !target.exists() {
            // Built against another toolchain's LLVM: only a rebuild helps.
            println!("setup: bpf-linker needs {needed}, which {NIGHTLY} no longer ships");
            continue;
        }
        for dir in dynamic
            .runpath
            .iter()
            .filter(|d| d.starts_with('/') && !d.contains('$'))
        {
            link_into(Path::new(dir), &target, &[needed])?;
        }
    }
    Ok(())
}

/// Ensures a working `bpf-linker` is on the search path, repairing or
/// (re)building it against the nightly libLLVM when needed.
fn ensure_bpf_linker() -> Result<()> {
    let llvm = match probe_linker()? {
        Linker::Works(version) => {
            println!("setup: bpf-linker {version} ok");
            return Ok(());
        }
        Linker::Missing => {
            println!("setup: bpf-linker not found, building it");
            NightlyLlvm::detect()?
        }
        Linker::Broken { path, stderr } => {
            println!("setup: {} does not run: {stderr}", path.display());
            let llvm = NightlyLlvm::detect()?;
            if stderr.contains("error while loading shared libraries") {
                if let Err(e) = repair_linker(&path, &llvm) {
                    println!("setup: could not repair bpf-linker: {e:#}");
                }
                if let Linker::Works(version) = probe_linker()? {
                    println!("setup: bpf-linker {version} ok (libLLVM links repaired)");
                    return Ok(());
                }
            }
            println!("setup: rebuilding bpf-linker");
            llvm
        }
    };

    let prefix = llvm.populate_prefix()?;
    run(cmd("cargo")
        // Outside the workspace, so its .cargo/config.toml cannot interfere.
        .current_dir(util::cargo_home()?)
        .env("LLVM_PREFIX", &prefix)
        .args([
            &format!("+{NIGHTLY}"),
            "install",
            "--force",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &format!("llvm-{}", llvm.major),
        ]))
    .context("building bpf-linker")?;

    match probe_linker()? {
        Linker::Works(version) => {
            println!("setup: bpf-linker {version} ok");
            Ok(())
        }
        Linker::Missing => bail!(
            "bpf-linker was installed but is not on PATH; add {} to PATH",
            util::cargo_home()?.join("bin").display()
        ),
        Linker::Broken { path, stderr } => {
            bail!("freshly built {} does not run: {stderr}", path.display())
        }
    }
}

// ---------------------------------------------------------------------------
// Debian packages
// ---------------------------------------------------------------------------

/// Whether dpkg reports `package` as installed.
fn dpkg_installed(package: &str) -> Result<bool> {
    let out = util::probe(cmd("dpkg-query").args(["-W", "-f=${Status}", package]))?
        .context("dpkg-query not found: setup supports Debian-based systems only")?;
    Ok(out.success && out.stdout.contains("install ok installed"))
}

/// Installs the missing `packages` with apt-get (root only).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let mut missing = Vec::new();
    for package in packages {
        if !dpkg_installed(package)? {
            missing.push(*package);
        }
    }
    if !missing.is_empty() {
        let list = missing.join(" ");
        if !util::is_root()? {
            bail!(
                "missing Debian packages: {list}\n\
                 setup installs them only as root; run `cargo xtask setup` as root, or:\n  \
                 sudo apt-get install -y --no-install-recommends {list}"
            );
        }
        println!("setup: installing {list}");
        run(cmd("apt-get").arg("update"))?;
        run(cmd("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing))?;
        if missing.contains(&"memcached") {
            // The package starts its own memcached on 11211; tests start their
            // own instances, so stop and disable the packaged one.
            util::run_ignoring_errors(cmd("service").args(["memcached", "stop"]));
            if Path::new("/run/systemd/system").exists() {
                util::run_ignoring_errors(cmd("systemctl").args(["disable", "--now", "memcached"]));
            }
            util::run_ignoring_errors(cmd("pkill").args(["-x", "memcached"]));
        }
        let still: Vec<_> = missing
            .iter()
            .filter(|p| !dpkg_installed(p).unwrap_or(false))
            .collect();
        if !still.is_empty() {
            bail!("apt-get did not install {still:?}");
        }
    }
    println!("setup: packages ok ({})", packages.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\n\
                  binary: rustc\n\
                  host: x86_64-unknown-linux-gnu\n\
                  release: 1.97.0-nightly\n\
                  LLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("LLVM version: 9.0\n"), Some(9));
        assert_eq!(parse_llvm_major("rustc 1.0\n"), None);
        assert_eq!(parse_llvm_major("LLVM version: x\n"), None);
    }

    #[test]
    fn llvm_lib_names() {
        assert!(is_llvm_lib("libLLVM.so.22.1-rust-1.97.0-nightly", 22));
        assert!(is_llvm_lib("libLLVM.so.22-rust-1.97.0-nightly", 22));
        assert!(!is_llvm_lib("libLLVM.so.22.1-rust-1.97.0-nightly", 2));
        assert!(!is_llvm_lib("libLLVM.so.221.1-rust-1.97.0-nightly", 22));
        assert!(!is_llvm_lib("libLLVM-22-rust-1.97.0-nightly.so", 22));
        assert!(!is_llvm_lib("librustc_driver-b5a965480ee51f9a.so", 22));
        assert!(!is_llvm_lib("libLLVM.so.22.1", 22));

        let names = [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "librustc_driver-b5a965480ee51f9a.so",
            "rustlib",
        ]
        .map(String::from);
        assert_eq!(
            pick_llvm_lib(names.clone(), 22).as_deref(),
            Some("libLLVM.so.22.1-rust-1.97.0-nightly")
        );
        assert_eq!(pick_llvm_lib(names, 21), None);
    }

    #[test]
    fn links_are_created_idempotently_and_repointed() {
        let tmp = std::env::temp_dir().join(format!("xtask-link-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let lib = tmp.join("sysroot/lib/libLLVM.so.22.1-rust-1.97.0-nightly");
        fs::create_dir_all(lib.parent().unwrap()).unwrap();
        fs::write(&lib, b"not really llvm").unwrap();
        let dir = tmp.join("cargo-home/guard-llvm-22/lib");
        let names = ["libLLVM.so", "libLLVM.so.22.1-rust-1.97.0-nightly"];

        for _ in 0..2 {
            link_into(&dir, &lib, &names).unwrap();
            for name in names {
                assert_eq!(fs::read_link(dir.join(name)).unwrap(), lib);
                assert_eq!(fs::read(dir.join(name)).unwrap(), b"not really llvm");
            }
        }

        // A stale link (e.g. to an old toolchain) and a plain file get replaced.
        fs::remove_file(dir.join(names[0])).unwrap();
        symlink(tmp.join("gone"), dir.join(names[0])).unwrap();
        fs::remove_file(dir.join(names[1])).unwrap();
        fs::write(dir.join(names[1]), b"junk").unwrap();
        link_into(&dir, &lib, &names).unwrap();
        for name in names {
            assert_eq!(fs::read_link(dir.join(name)).unwrap(), lib);
        }

        fs::remove_dir_all(&tmp).unwrap();
    }
}
