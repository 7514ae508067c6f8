//! Arbitrary bytes as the environment's values file (`manifests/environments/test.yaml`)
//! beside the base fixture, loaded as `validate --env test` would.
#![no_main]

#[path = "../load.rs"]
mod load;

libfuzzer_sys::fuzz_target!(|data: &[u8]| load::one(load::harness::Target::Values, data));
