//! Any bytes through the bus payload decoder (`IngestBatch::decode`): no panic; what it
//! accepts holds only finite values and re-encodes to exactly the same bytes (the
//! encoding is canonical, so no two payloads mean the same batch). The same properties
//! run on stable in `crates/core/tests/batch_codec_props.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigia_core::IngestBatch;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = IngestBatch::decode(data) {
        assert!(batch.readings.iter().all(|r| r.value.is_finite()));
        assert_eq!(batch.encode(), data);
    }
});
