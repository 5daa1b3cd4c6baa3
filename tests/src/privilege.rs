//! The gate in front of tests that need root and BPF.
//!
//! Without privileges a test says so loudly and returns; under `CI=true` a skipped privileged
//! test is a failure, so CI can never go green without running them.

/// Can this process load BPF programs and create namespaces?
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Returns true when the calling test may run; otherwise prints why it is skipped (and panics
/// under CI=true).
pub fn require_privileges(test: &str) -> bool {
    if privileged() {
        return true;
    }
    let msg = format!("SKIPPED {test}: needs root (BPF, XDP, network namespaces)");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}; under CI=true privileged tests must run");
    }
    eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
    false
}

/// The `guard` binary under test: `$GUARD_BIN`, else `target/debug/guard` of this workspace.
pub fn guard_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("GUARD_BIN") {
        return p.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/guard")
}
