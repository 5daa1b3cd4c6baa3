//! CIDR parsing on arbitrary text: never a panic; anything accepted is a network with no host
//! bits that prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(net) = guard_user::lists::parse_cidr(text) {
        assert_eq!(net, net.trunc());
        assert_eq!(guard_user::lists::parse_cidr(&net.to_string()).unwrap(), net);
    }
});
