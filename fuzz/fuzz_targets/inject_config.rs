//! Any text as the injection config file: loading returns a config or an error, never panics,
//! and a config that loads is one the validator accepts and hashes the same every time.
#![no_main]

use ingress_tap_core::inject::InjectConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = InjectConfig::from_yaml(text) else {
        return;
    };
    if let Err(err) = config.validate() {
        panic!("a loaded config fails validation: {err}");
    }
    assert_eq!(config.hash(), config.clone().hash());
    let _ = (config.log_path(), config.felix_dial_target());
});
