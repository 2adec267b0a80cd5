//! Any bytes as one access-log line: the parser must return a value, never panic, and keep
//! the header bounds it promises whatever the line holds.
#![no_main]

use ingress_tap_core::collect::parse::{parse_line, MAX_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    if let Ok(Some(record)) = parse_line(line) {
        // Of a longer header only its ends are kept, each within the cap: all of it would pin
        // memory per interval.
        for part in [&record.x_forwarded_for, &record.x_real_ip]
            .into_iter()
            .flatten()
            .flat_map(|header| header.kept())
        {
            assert!(
                part.len() <= MAX_HEADER_BYTES,
                "kept {} bytes of a header",
                part.len()
            );
        }
        // Owning the record must not change it. (A record's lifetime is invariant, since an
        // oversize header decodes its ends when first read, so the two compare as text.)
        let owned = record.clone().into_owned();
        assert_eq!(format!("{owned:?}"), format!("{record:?}"));
    }
});
