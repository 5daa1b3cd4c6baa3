//! The pin layout under the pin root, bpffs mounting, and the lock every mutation takes.
//!
//! ```text
//! /sys/fs/bpf/guard/              pin root (--pin-path, GUARD_PIN_PATH); locked with flock
//! └── abi-4/                      ABI_VERSION: another guard's layout is refused, not misread
//!     ├── maps/GUARD_CONFIG ...   one pin per map
//!     ├── prog                    the XDP program, pinned last: its presence means "loaded"
//!     └── links/IFACE             one bpf_link per attached interface
//! ```

use std::{
    fs::File,
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use guard_common::maps::ABI_VERSION;

/// Default pin root.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/guard";
/// Where bpffs is conventionally mounted.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Paths of guard's pinned objects under one pin root.
#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The pin root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of this ABI version.
    pub fn abi_dir(&self) -> PathBuf {
        self.root.join(format!("abi-{ABI_VERSION}"))
    }

    /// The directory holding map pins.
    pub fn maps_dir(&self) -> PathBuf {
        self.abi_dir().join("maps")
    }

    /// The pin of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// The program's pin.
    pub fn prog(&self) -> PathBuf {
        self.abi_dir().join("prog")
    }

    /// The directory holding link pins.
    pub fn links_dir(&self) -> PathBuf {
        self.abi_dir().join("links")
    }

    /// The link pin of interface `iface`.
    pub fn link(&self, iface: &str) -> PathBuf {
        self.links_dir().join(iface)
    }

    /// Is a guard loaded here (program pinned)?
    pub fn is_loaded(&self) -> bool {
        self.prog().exists()
    }

    /// Fails when the pin root holds state of another ABI version.
    pub fn check_abi(&self) -> anyhow::Result<()> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.root.display())),
        };
        let ours = format!("abi-{ABI_VERSION}");
        for entry in entries {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("abi-") && name != ours {
                bail!(
                    "{} holds guard state of {name}, but this guard speaks abi-{ABI_VERSION}: \
                     remove it with the guard version that made it (guard unload), \
                     or delete the directory to drop it",
                    self.root.display()
                );
            }
        }
        Ok(())
    }

    /// Makes sure the pin root is on a mounted bpffs, mounting one at /sys/fs/bpf when the
    /// pin root lies there and nothing is mounted, and creates the directories.
    pub fn prepare(&self) -> anyhow::Result<()> {
        ensure_bpffs(&self.root)?;
        for dir in [self.maps_dir(), self.links_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }
}

/// Is `path` on a bpf filesystem?
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Mounts bpffs at /sys/fs/bpf if `root` lies beneath it and it is not mounted; fails if
/// `root` is elsewhere and not on bpffs.
pub fn ensure_bpffs(root: &Path) -> anyhow::Result<()> {
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if is_bpffs(&probe) {
        return Ok(());
    }
    let mount = Path::new(BPFFS_MOUNT);
    if root.starts_with(mount) && !is_bpffs(mount) {
        std::fs::create_dir_all(mount).with_context(|| format!("creating {BPFFS_MOUNT}"))?;
        let src = c"bpf";
        let target = c"/sys/fs/bpf";
        // SAFETY: all pointers are valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                c"mode=0700".as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .context("mounting bpffs at /sys/fs/bpf (needs CAP_SYS_ADMIN)");
        }
        log::info!("mounted bpffs at {BPFFS_MOUNT}");
        return Ok(());
    }
    bail!(
        "pin root {} is not on a bpf filesystem (mount one with: mount -t bpf bpf DIR)",
        root.display()
    )
}

/// An exclusive lock on the pin root, held until dropped.
pub struct Lock {
    _dir: File,
}

impl Lock {
    /// Takes the lock on `layout`'s root (creating the root), waiting for other holders.
    pub fn acquire(layout: &PinLayout) -> anyhow::Result<Self> {
        std::fs::create_dir_all(layout.root())
            .with_context(|| format!("creating {}", layout.root().display()))?;
        let dir = File::open(layout.root())
            .with_context(|| format!("opening {}", layout.root().display()))?;
        // SAFETY: the fd is valid for the life of `dir`.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("locking {}", layout.root().display()));
        }
        // A change interrupted by a crash is finished before anything else happens.
        crate::journal::recover(layout).context("recovering an interrupted change")?;
        Ok(Self { _dir: dir })
    }
}
