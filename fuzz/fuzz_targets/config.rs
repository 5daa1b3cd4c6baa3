//! Config parsing on arbitrary text: never a panic, and every rejection names the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/guard.toml");
    match guard_user::config::parse(path, text) {
        Ok(d) => assert!(!d.ports.is_empty()),
        Err(e) => assert!(format!("{e:#}").contains("/fuzz/guard.toml"), "{e:#}"),
    }
});
