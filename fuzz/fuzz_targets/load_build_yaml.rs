//! See `strata_fuzz::load` (fuzz/src/load.rs) for what this target feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_fuzz::load::run(data));
