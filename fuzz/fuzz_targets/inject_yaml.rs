//! Any text as the manifest stream of `ingress-tap inject`: the result is an injection or an
//! error, never a panic; an unchanged stream comes back byte for byte; and injecting the
//! output again changes nothing (the status annotation makes the mutation idempotent).
#![no_main]

use ingress_tap_core::inject::InjectConfig;
use ingress_tap_core::workload::{inject_stream, Selection};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CONFIG: LazyLock<InjectConfig> = LazyLock::new(InjectConfig::default);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let selection = if text.len() % 2 == 0 {
        Selection::All
    } else {
        Selection::OptedIn
    };
    let Ok(first) = inject_stream(text, &CONFIG, selection) else {
        return;
    };
    if !first.changed() {
        assert_eq!(first.output, text, "an unchanged stream was rewritten");
        return;
    }
    match inject_stream(&first.output, &CONFIG, selection) {
        Ok(second) => assert!(
            !second.changed(),
            "injecting the output again changed it:\n{}",
            first.output
        ),
        Err(err) => panic!("the injected output cannot be injected again: {err}"),
    }
});
