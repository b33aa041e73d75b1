//! `tether gateway`'s configuration (both roles): arbitrary text through TOML parsing and
//! validation, and the errors rendered as the binary prints them. TLS paths are only
//! joined to the base, never read, during validation.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(src) = tether_fuzz::toml_text(data) else {
        return;
    };
    if let Err(e) = tether_gateway::config::parse(&src, Path::new("/etc/tether")) {
        let _ = e.to_string();
    }
});
