//! See `strata_fuzz::store` (fuzz/src/store.rs) for what this target feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::store::run(data));
