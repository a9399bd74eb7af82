//! The cache digest cookie decoder on arbitrary input: never panics, and whatever it accepts
//! re-encodes within the size bound and decodes back to the same keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkpush::push::digest::{Digest, MAX_VALUE_LEN, find_cookie};

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let _ = find_cookie([data]);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(digest) = Digest::decode(text, NOW)
        && let Some(encoded) = digest.encode(NOW)
    {
        assert!(encoded.value.len() <= MAX_VALUE_LEN);
        let back = Digest::decode(&encoded.value, NOW).expect("our own encoding decodes");
        assert_eq!(back.len(), digest.len());
    }
});
