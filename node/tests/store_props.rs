//! Properties of the store over random op sequences, checked against a model
//! (`store_model`): bytes charged are the sum of the entries, TTLs are honoured to the
//! millisecond on a manual clock, versions only grow, the memory limit is never
//! exceeded, and what reads back is what was written unless it was evicted or expired.
//!
//! `PROPTEST_CASES=5000 cargo test -p kcache-node --test store_props` runs longer.

mod store_model;

use proptest::prelude::*;
use store_model::{Checker, CondChoice, KEYS, Op, RemoteVersion, TtlChoice, Value, VersionChoice};

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u16..1_500, any::<u8>()).prop_map(|(len, fill)| Value::Fill { len, fill }),
        3 => (-50i64..50).prop_map(Value::Int),
        1 => prop_oneof![Just(i64::MAX), Just(i64::MIN)].prop_map(Value::Int),
        1 => proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::Raw),
        // Values larger than the smaller memory and value limits.
        1 => (8_000u16..9_000).prop_map(|len| Value::Fill { len, fill: b'z' }),
    ]
}

fn ttl() -> impl Strategy<Value = TtlChoice> {
    prop_oneof![
        3 => Just(TtlChoice::Default),
        3 => Just(TtlChoice::Never),
        6 => (1u32..2_000).prop_map(TtlChoice::Ms),
        1 => Just(TtlChoice::Zero),
        1 => Just(TtlChoice::OverMax),
    ]
}

fn version() -> impl Strategy<Value = VersionChoice> {
    prop_oneof![
        3 => Just(VersionChoice::Current),
        2 => (-3i16..3).prop_map(VersionChoice::Off),
        1 => Just(VersionChoice::Zero),
        1 => Just(VersionChoice::Max),
    ]
}

fn remote() -> impl Strategy<Value = RemoteVersion> {
    prop_oneof![
        8 => (-3i32..3).prop_map(RemoteVersion::Off),
        1 => Just(RemoteVersion::FarAhead),
        1 => Just(RemoteVersion::Max),
    ]
}

fn key() -> impl Strategy<Value = u8> {
    // Mostly valid keys; the first two are the empty and the over-long one.
    prop_oneof![9 => 2..KEYS, 1 => 0u8..2]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (key(), value(), ttl(), prop_oneof![
            Just(CondChoice::Always),
            Just(CondChoice::IfAbsent),
            Just(CondChoice::IfPresent),
            version().prop_map(CondChoice::IfVersion),
        ])
            .prop_map(|(key, value, ttl, condition)| Op::Set { key, value, ttl, condition }),
        6 => key().prop_map(|key| Op::Get { key }),
        3 => (key(), proptest::option::of(version()))
            .prop_map(|(key, if_version)| Op::Delete { key, if_version }),
        2 => (key(), ttl()).prop_map(|(key, ttl)| Op::Touch { key, ttl }),
        4 => (key(), prop_oneof![9 => -10i64..10, 1 => any::<i64>()], -5i64..5, ttl())
            .prop_map(|(key, delta, initial, ttl)| Op::Incr { key, delta, initial, ttl }),
        2 => (key(), value(), remote(), proptest::option::of(0u32..3_000))
            .prop_map(|(key, value, version, ttl_ms)| Op::Apply { key, value, version, ttl_ms }),
        1 => (key(), remote()).prop_map(|(key, version)| Op::ApplyDelete { key, version }),
        3 => prop_oneof![0u32..50, 100u32..1_500].prop_map(|ms| Op::Advance { ms }),
        1 => (0u16..64).prop_map(|budget| Op::Sweep { budget }),
        1 => Just(Op::SweepAll),
        1 => Just(Op::Settle),
    ]
}

proptest! {
    // PROPTEST_CASES still decides when set: a `cases` written here would override it.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_op_sequence_answers_and_holds_what_the_model_says(
        limits in 0u8..16,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let result = Checker::run(store_model::limits(limits), &ops);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// The decoder the fuzzer uses reads any bytes into ops, and a known input runs clean.
#[test]
fn the_fuzzer_decoding_turns_any_bytes_into_a_sequence() {
    let bytes: Vec<u8> = (0..4_096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (limits, ops) = store_model::decode(&bytes);
    assert!(ops.len() > 500, "{} ops", ops.len());
    Checker::run(limits, &ops).unwrap_or_else(|e| panic!("{e}"));
}
