//! Fuzzing of everything that parses untrusted input, driven by proptest (no nightly
//! toolchain needed). `cargo test` runs a bounded number of cases; for a long run:
//!
//!     PROPTEST_CASES=200000 cargo test --release --test tests fuzz::
//!
//! Every property says two things: the input never panics the parser, and whatever the parser
//! accepts satisfies the invariants the rest of the system relies on.

use proptest::prelude::*;

use fabric_telemetry::server::query::{decode_component, Query};
use fabric_telemetry::shared::feed::{self, Freshness, HEADER};
use fabric_telemetry::shared::timestamp;

const NOW: i64 = 1_757_853_005_000_000;

fn fresh() -> Freshness {
    Freshness {
        now: NOW,
        max_age: 3_000_000,
    }
}

/// A field for `column` that is valid most of the time, else a near miss or junk (no `"`,
/// comma or line break, so each row stays one CSV record of the fields it was built from).
fn field(column: &'static str) -> BoxedStrategy<String> {
    let junk = prop_oneof![
        Just(String::new()),
        Just("NaN".to_string()),
        Just("-1".to_string()),
        Just("1.5".to_string()),
        Just("1e999".to_string()),
        Just(timestamp::to_rfc3339(NOW - 60_000_000)),
        Just("sw\u{7}1".to_string()),
        "[ -!#-+\\--~]{0,12}",
    ];
    let good = match column {
        "switch_id" => "(switch|leaf |spine-)[0-9a-z/]{1,6}".boxed(),
        "errors" => "[0-9]{1,6}".boxed(),
        "timestamp" => (-2_900_000i64..2_900_000, prop::bool::ANY)
            .prop_map(|(offset, utc)| {
                let text = timestamp::to_rfc3339(NOW + offset);
                if utc {
                    text
                } else {
                    // The same instant at +02:00.
                    let local = timestamp::to_rfc3339(NOW + offset + 7_200_000_000);
                    local.replace("+00:00", "+02:00")
                }
            })
            .boxed(),
        _ => prop_oneof![
            9 => "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
            1 => Just(String::new()), // an absent value
        ]
        .boxed(),
    };
    prop_oneof![12 => good, 1 => junk].boxed()
}

/// One row for `columns`: usually one valid-looking field per column, sometimes a field too
/// few or too many.
fn row(columns: &'static [&'static str]) -> BoxedStrategy<String> {
    let fields: Vec<BoxedStrategy<String>> = columns.iter().map(|c| field(c)).collect();
    (fields, 0..20u8)
        .prop_map(|(mut fields, shape)| {
            match shape {
                0 => {
                    fields.pop();
                }
                1 => fields.push("1".to_string()),
                _ => {}
            }
            fields.join(",")
        })
        .boxed()
}

const SHUFFLED: &[&str] = &["timestamp", "errors", "switch_id", "bandwidth"];
const STANDARD: &[&str] = &["switch_id", "bandwidth", "latency", "errors", "timestamp"];

/// A feed with a known header (the real one or a shuffled one) and rows that validate often,
/// with the number of data rows it holds.
fn valid_looking_feed() -> impl Strategy<Value = (String, usize)> {
    prop_oneof![Just(STANDARD), Just(SHUFFLED)].prop_flat_map(|columns| {
        proptest::collection::vec(row(columns), 1..20).prop_map(move |rows| {
            (
                format!("{}\n{}\n", columns.join(","), rows.join("\n")),
                rows.len(),
            )
        })
    })
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

/// What every accepted row must satisfy, whatever the feed.
fn check_accepted_rows(batch: &feed::FeedBatch) -> Result<(), TestCaseError> {
    for i in 0..batch.len() {
        let id = batch.switch_id(i);
        prop_assert!(!id.is_empty() && id.len() <= feed::MAX_SWITCH_ID_LEN);
        prop_assert!(!id.chars().any(char::is_control), "{id:?}");
        prop_assert!((batch.timestamp(i) - NOW).abs() <= 3_000_000);
        let values = batch.row_values(i);
        prop_assert!(values.iter().any(Option::is_some));
        for (name, v) in batch.metrics.iter().zip(values) {
            let Some(v) = v else { continue };
            let v = v.as_f64();
            prop_assert!(v.is_finite());
            if name == "errors" {
                prop_assert!(v >= 0.0 && v.fract() == 0.0);
            }
        }
    }
    Ok(())
}

/// Rows built to validate mostly do: the invariants above are checked on many accepted rows
/// (a generator whose rows never validate would check nothing), and every row is either
/// accepted or counted as rejected.
#[test]
fn valid_looking_feeds_keep_only_valid_rows_and_account_for_every_row() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases()));
    let rows = std::cell::Cell::new(0usize);
    let accepted = std::cell::Cell::new(0usize);
    let outcome = runner.run(&valid_looking_feed(), |(text, n_rows)| {
        let batch = feed::parse_feed(text.as_bytes(), fresh());
        prop_assert_eq!(batch.error.clone(), None);
        check_accepted_rows(&batch)?;
        prop_assert_eq!(
            batch.len() + batch.rejected.total() as usize,
            n_rows,
            "{}",
            text
        );
        rows.set(rows.get() + n_rows);
        accepted.set(accepted.get() + batch.len());
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let (rows, accepted) = (rows.get(), accepted.get());
    assert!(
        accepted * 3 >= rows,
        "only {accepted} of {rows} generated rows validated: the invariants were barely exercised"
    );
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

    /// Anything feed-like never panics the parser; what it accepts is valid.
    #[test]
    fn feed_parsing_never_panics_and_keeps_only_valid_rows(text in feed_text()) {
        let batch = feed::parse_feed(text.as_bytes(), fresh());
        check_accepted_rows(&batch)?;
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
