//! Store operation sequences from arbitrary bytes, checked op by op against the model
//! in `node/tests/store_model` (the one the proptest properties use): answers, entries,
//! versions, TTLs, bytes charged and the memory limit.
#![no_main]

#[path = "../../tests/store_model/mod.rs"]
mod store_model;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (limits, ops) = store_model::decode(data);
    if let Err(failure) = store_model::Checker::run(limits, &ops) {
        panic!("{failure}");
    }
});
