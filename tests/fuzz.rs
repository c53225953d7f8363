//! Fuzzing of everything that parses untrusted input, driven by proptest (no nightly
//! toolchain needed). `cargo test` runs a bounded number of cases; for a long run:
//!
//!     PROPTEST_CASES=200000 cargo test --release --test tests fuzz::
//!
//! Every property says two things: the input never panics the parser, and whatever the parser
//! accepts satisfies the invariants the rest of the system relies on.

use proptest::prelude::*;

use fabric_telemetry::feed::{self, Freshness, HEADER};
use fabric_telemetry::query::{decode_component, Query};
use fabric_telemetry::timestamp;

const NOW: i64 = 1_757_853_005_000_000;

fn fresh() -> Freshness {
    Freshness {
        now: NOW,
        max_age: 3_000_000,
    }
}

/// Feed-like text: the real header or a shuffled one, then rows mixing good and bad fields.
fn feed_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("switch1".to_string()),
        Just("".to_string()),
        Just("NaN".to_string()),
        Just("-1".to_string()),
        Just("1e999".to_string()),
        Just(timestamp::to_rfc3339(NOW)),
        "[0-9]{1,4}(\\.[0-9]{1,3})?",
        "[ -~]{0,12}",
        "\\PC{0,6}",
    ];
    let row = proptest::collection::vec(field, 0..8).prop_map(|f| f.join(","));
    let header = prop_oneof![
        Just(HEADER.to_string()),
        Just("timestamp,errors,switch_id,bandwidth".to_string()),
        "[a-z_,]{0,40}",
    ];
    (header, proptest::collection::vec(row, 0..20))
        .prop_map(|(h, rows)| format!("{h}\n{}", rows.join("\n")))
}

/// 512 cases per property by default; PROPTEST_CASES sets more (an explicit config would
/// otherwise ignore the variable).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn feed_parsing_never_panics_and_keeps_only_valid_rows(text in feed_text()) {
        let batch = feed::parse_feed(text.as_bytes(), fresh());
        for i in 0..batch.len() {
            let id = batch.switch_id(i);
            prop_assert!(!id.is_empty() && id.len() <= feed::MAX_SWITCH_ID_LEN);
            prop_assert!((batch.timestamp(i) - NOW).abs() <= 3_000_000);
            let values = batch.row_values(i);
            prop_assert!(values.iter().any(|v| !v.is_nan()));
            for (name, v) in batch.metrics.iter().zip(values) {
                prop_assert!(v.is_nan() || v.is_finite());
                if name == "errors" && !v.is_nan() {
                    prop_assert!(*v >= 0.0 && v.fract() == 0.0);
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_feed_parser(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = feed::parse_feed(bytes.as_slice(), fresh());
    }

    #[test]
    fn query_strings_never_panic(raw in "\\PC{0,64}") {
        let _ = Query::parse(&raw);
        let _ = decode_component(&raw);
    }

    #[test]
    fn encoded_query_values_round_trip(name in "[a-z_]{1,10}", value in "\\PC{0,20}") {
        let encoded: String = value
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let query = Query::parse(&format!("{name}={encoded}")).expect("well-formed");
        prop_assert_eq!(query.get(&name), Some(value.as_str()));
    }

    #[test]
    fn timestamps_never_panic_and_round_trip(raw in "\\PC{0,40}", micros in -62_000_000_000_000_000i64..253_000_000_000_000_000) {
        let _ = timestamp::parse_rfc3339(&raw);
        let text = timestamp::to_rfc3339(micros);
        prop_assert_eq!(timestamp::parse_rfc3339(&text), Ok(micros));
    }
}
