//! Properties of the bus payload codec (`IngestBatch::encode`/`decode`), the same ones
//! `fuzz/fuzz_targets/bus_payload.rs` checks with coverage guidance: any bytes decode
//! without panicking; what decodes re-encodes to exactly the same bytes (the encoding
//! is canonical) and holds only finite values; every batch of validated readings
//! round-trips; a damaged payload is refused or decodes to another well-formed batch.

use proptest::prelude::*;
use vigia_core::{IngestBatch, Reading, TenantId, Timestamp};

fn reading() -> impl Strategy<Value = Reading> {
    (
        "\\PC{1,128}",
        "[a-z_µ]{1,64}",
        any::<i64>(),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
    )
        .prop_map(|(sensor, metric, ts, value)| Reading {
            sensor,
            metric,
            ts: Timestamp(ts),
            value,
        })
}

fn batch() -> impl Strategy<Value = IngestBatch> {
    (
        any::<i64>(),
        any::<i64>(),
        proptest::collection::vec(reading(), 0..40),
    )
        .prop_map(|(tenant, received_ms, readings)| IngestBatch {
            tenant: TenantId(tenant),
            received_ms,
            readings,
        })
}

/// What must hold for any input: no panic, and an accepted input is canonical.
fn check(bytes: &[u8]) {
    if let Ok(decoded) = IngestBatch::decode(bytes) {
        assert_eq!(decoded.encode(), bytes, "canonical: {decoded:?}");
        assert!(decoded.readings.iter().all(|r| r.value.is_finite()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn validated_batches_round_trip(batch in batch()) {
        let bytes = batch.encode();
        prop_assert_eq!(IngestBatch::decode(&bytes).unwrap(), batch);
        check(&bytes);
    }

    #[test]
    fn any_bytes_decode_without_panic_and_canonically(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
    }

    #[test]
    fn a_damaged_payload_is_refused_or_still_canonical(
        batch in batch(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = batch.encode();
        let mut flipped = bytes.clone();
        let i = at.index(flipped.len());
        flipped[i] ^= byte | 1;
        check(&flipped);
        let cut = cut.index(bytes.len());
        prop_assert!(IngestBatch::decode(&bytes[..cut]).is_err(), "a strict prefix at {}", cut);
        let mut longer = bytes;
        longer.push(byte);
        prop_assert!(IngestBatch::decode(&longer).is_err(), "trailing bytes");
    }
}

#[test]
fn non_finite_values_are_refused() {
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut bytes = IngestBatch {
            tenant: TenantId(1),
            received_ms: 0,
            readings: vec![Reading {
                sensor: "CF-1".into(),
                metric: "temperature".into(),
                ts: Timestamp(0),
                value: 1.0,
            }],
        }
        .encode();
        let at = bytes.len() - 8;
        bytes[at..].copy_from_slice(&value.to_le_bytes());
        let refused = IngestBatch::decode(&bytes).unwrap_err();
        assert!(refused.contains("non-finite"), "{value}: {refused}");
    }
}
