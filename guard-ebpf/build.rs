//! Rebuild the eBPF object when the linker changes (as aya-template does).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
