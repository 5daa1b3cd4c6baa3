//! Differential test: the loaded XDP program and the host model on random scenarios and
//! structure-aware random frames (valid headers, then mutations and truncations, and pure
//! random bytes); they must agree on every frame.
//!
//! `cargo xtask test` runs a fixed-seed sample; `cargo xtask verify` runs a million frames
//! with a fresh seed (GUARD_DIFF_FRAMES, GUARD_DIFF_SEED).

use guard_tests::{differential, privilege::require_privileges};

#[test]
fn kernel_and_model_agree_on_random_frames() {
    if !require_privileges("kernel_and_model_agree_on_random_frames") {
        return;
    }
    let seed = std::env::var("GUARD_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6775_6172_6400_0001);
    let frames = std::env::var("GUARD_DIFF_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    match differential::run(seed, frames, 2_000) {
        Ok(stats) => println!(
            "differential: seed {seed}: {} disagreements 0",
            stats.summary()
        ),
        Err(d) => panic!("differential: seed {seed}: {d}"),
    }
}
