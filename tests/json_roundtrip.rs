//! JSON floats written by serde_json read back to the same bits (metrics.jsonl, trainer_state.json,
//! eval results): without serde_json's `float_roundtrip` feature 1.724409607 read back as
//! 1.7244096070000001, which made tests/train_e2e.rs's metrics comparison fail now and then.

mod common;
use common::*;
use rand::Rng;

#[test]
fn json_floats_round_trip() {
    let mut rng = rng("json_floats_round_trip");
    let mut values = vec![1.724409607f64, 0.1, 1.0 / 3.0, 5e-324, f64::MAX, 2.2250738585072014e-308];
    values.extend((0..20_000).map(|_| f64::from_bits(rng.random::<u64>() >> 2)).filter(|x| x.is_finite()));
    values.extend((0..20_000).map(|_| rng.random_range(0.0..10.0f64)));
    values.extend((0..20_000).map(|_| (rng.random_range(0..10_000_000_000u64) as f64) / 1e9)); // step_seconds-like
    for x in values {
        let text = serde_json::to_string(&x).unwrap();
        let back: f64 = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_bits(), x.to_bits(), "{x:e} → {text} → {back:e}");
    }
}
