//! Any bytes through the line protocol decoder, in every precision: no panic, and every
//! outcome is self-consistent (readings finite and within the future limit; errors
//! listed in line order, within the cap, counted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigia_core::Timestamp;
use vigia_ingest::decode::{
    decode_line_protocol, DecodeLimits, LineProtocolError, LineProtocolOptions, Precision,
    MAX_LISTED_ERRORS,
};

const NOW: Timestamp = Timestamp(1_795_428_000_000);

fuzz_target!(|data: &[u8]| {
    let (selector, body) = data.split_first().unwrap_or((&0, data));
    let precision = ["ns", "us", "ms", "s", "m", "h"][*selector as usize % 6];
    let limits = DecodeLimits {
        max_rows: 1_000,
        ..DecodeLimits::default()
    };
    let options = LineProtocolOptions {
        precision: Precision::parse(precision).unwrap(),
        ..LineProtocolOptions::default()
    };
    match decode_line_protocol(body, NOW, &limits, &options) {
        Ok(readings) => {
            assert!(!readings.is_empty() && readings.len() <= limits.max_rows);
            for r in &readings {
                assert!(r.value.is_finite());
                assert!(r.ts.0 - NOW.0 <= limits.max_future_ms);
                assert!(!r.sensor.is_empty() && !r.metric.is_empty());
            }
        }
        Err(LineProtocolError::Invalid {
            errors,
            lines_with_errors,
        }) => {
            assert!(!errors.is_empty() && errors.len() <= MAX_LISTED_ERRORS);
            assert!(lines_with_errors >= errors.len());
            assert!(errors.windows(2).all(|w| w[0].line <= w[1].line));
        }
        Err(LineProtocolError::TooManyRows { readings, max }) => assert!(readings > max),
        Err(LineProtocolError::Empty) => {}
    }
});
