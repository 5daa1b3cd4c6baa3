//! Rebuild the eBPF object when the linker changes (as aya-template does), and let LLVM read
//! unaligned packet fields with one load.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // Header fields are byte arrays (alignment 1). Without this feature LLVM's BPF backend
    // assembles every 16- or 32-bit field from byte loads, shifts and ORs. The kernel allows
    // unaligned packet and map-value access unless a program asks for strict alignment
    // (x86-64 and arm64 have efficient unaligned access), and LLVM keeps stack accesses
    // aligned. bpf-linker does the code generation, so the feature goes to it.
    println!("cargo:rustc-link-arg-bins=--cpu-features=+allows-misaligned-mem-access");
}
