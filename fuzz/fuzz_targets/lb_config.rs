//! `tether lb`'s configuration: arbitrary text through TOML parsing and validation, and
//! the errors rendered as the binary prints them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_lb::Config;

fuzz_target!(|data: &[u8]| {
    let Some(src) = tether_fuzz::toml_text(data) else {
        return;
    };
    if let Err(e) = Config::from_source(&src) {
        let _ = e.to_string();
    }
});
