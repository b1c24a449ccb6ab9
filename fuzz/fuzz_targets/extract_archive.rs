//! See `strata_fuzz::extract` (fuzz/src/extract.rs) for what this target feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::extract::run(data));
