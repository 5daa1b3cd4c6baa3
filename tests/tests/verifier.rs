//! The verifier's work on the program: within a budget, so that a change that makes the
//! program much harder to verify (and closer to failing on older kernels) is caught.
//! `cargo xtask vm-test` runs this on every kernel of the matrix and reports the counts.

use guard_tests::privilege::require_privileges;
use guard_user::loader::{self, MapSizes};

/// Instructions the verifier may process. Measured: see docs/VERIFICATION.md; the budget
/// leaves room for modest growth, not for a change of complexity class.
const BUDGET: u32 = 80_000;

#[test]
fn the_verifier_processes_the_program_within_budget() {
    if !require_privileges("the_verifier_processes_the_program_within_budget") {
        return;
    }
    let mut ebpf = loader::load_unpinned(&MapSizes::default()).expect("load");
    let prog = loader::program(&mut ebpf).expect("program");
    let info = prog.info().expect("program info");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match info.verified_instruction_count() {
        Some(n) => {
            println!(
                "verifier: kernel {} processed {n} instructions (budget {BUDGET}); {} translated bytes",
                release.trim(),
                info.size_translated().unwrap_or(0)
            );
            assert!(
                n <= BUDGET,
                "the verifier processed {n} instructions, over the budget of {BUDGET}"
            );
        }
        None => println!(
            "verifier: kernel {} does not report processed instructions",
            release.trim()
        ),
    }
}
