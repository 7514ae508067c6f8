//! Arbitrary bytes as one more manifest file (`manifests/case.yaml`) beside the base
//! fixture, loaded as `validate --env test` would.
#![no_main]

#[path = "../load.rs"]
mod load;

libfuzzer_sys::fuzz_target!(|data: &[u8]| load::one(load::harness::Target::Manifest, data));
