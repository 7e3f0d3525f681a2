//! Any bytes through the JSON readings decoder: no panic, and the two paths agree (a
//! refused body lists at least one row, an accepted one only valid readings).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigia_core::Timestamp;
use vigia_ingest::decode::{decode_readings, DecodeError, DecodeLimits, MAX_LISTED_ERRORS};

const NOW: Timestamp = Timestamp(1_795_428_000_000);

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_rows: 1_000,
        ..DecodeLimits::default()
    };
    match decode_readings(data, NOW, &limits) {
        Ok(readings) => {
            assert!(!readings.is_empty());
            assert!(readings.iter().all(|r| r.value.is_finite()));
        }
        Err(DecodeError::Invalid {
            errors,
            rows_with_errors,
        }) => {
            assert!(!errors.is_empty() && errors.len() <= MAX_LISTED_ERRORS);
            assert!(rows_with_errors >= 1);
        }
        Err(_) => {}
    }
});
