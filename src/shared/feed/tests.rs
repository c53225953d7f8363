use super::*;
use crate::shared::metric::{MetricKind, Value};
use crate::shared::timestamp;
use std::io::Read;

const NOW: &str = "2025-09-14T12:30:05.123456+00:00";

fn fresh() -> Freshness {
    Freshness {
        now: timestamp::parse_rfc3339(NOW).expect("valid"),
        max_age: 3 * timestamp::MICROS_PER_SEC,
    }
}

fn floats(values: &[f64]) -> Vec<Option<Value>> {
    values.iter().map(|&v| Value::cell(v)).collect()
}

fn parse(text: &str) -> FeedBatch {
    parse_feed(text.as_bytes(), fresh())
}

/// One data row after the standard header: is it accepted, or rejected for `reason`?
fn check(row: &str, expected: Result<&[f64], RejectReason>) {
    let batch = parse(&format!("{HEADER}\n{row}\n"));
    match expected {
        Ok(values) => {
            assert_eq!(batch.rejected.total(), 0, "{row}: {:?}", batch.examples);
            assert_eq!(batch.len(), 1, "{row}");
            let got = batch.row_values(0);
            assert_eq!(got.len(), values.len(), "{row}");
            for (&g, &v) in got.iter().zip(values) {
                assert!(Value::identical(g, Value::cell(v)), "{row}: {got:?}");
            }
        }
        Err(reason) => {
            assert!(batch.is_empty(), "{row} should be rejected");
            assert_eq!(batch.rejected.get(reason), 1, "{row}: {:?}", batch.examples);
            assert_eq!(batch.rejected.total(), 1, "{row}");
        }
    }
}

#[test]
fn validates_each_row() {
    use RejectReason::*;
    let nan = f64::NAN;
    check(
        &format!("switch1,55.6,0.32,1,{NOW}"),
        Ok(&[55.6, 0.32, 1.0]),
    );
    check(
        "switch1,55.6,0.32,1,2025-09-14T12:30:05Z",
        Ok(&[55.6, 0.32, 1.0]),
    );
    check(
        "switch1,55.6,0.32,1,2025-09-14T14:30:04+02:00",
        Ok(&[55.6, 0.32, 1.0]),
    );
    check(
        &format!(" switch1 , 55.6 ,0.32, 1 ,{NOW}"),
        Ok(&[55.6, 0.32, 1.0]),
    );
    check(&format!("switch1,,0.32,1,{NOW}"), Ok(&[nan, 0.32, 1.0]));
    check(
        &format!("switch1,55.6,0.32,7.0,{NOW}"),
        Ok(&[55.6, 0.32, 7.0]),
    );
    check(&format!("switch1,abc,0.32,1,{NOW}"), Err(BadNumber));
    check(&format!("switch1,NaN,0.32,1,{NOW}"), Err(NotFinite));
    check(&format!("switch1,55.6,inf,1,{NOW}"), Err(NotFinite));
    check(&format!("switch1,55.6,0.32,-1,{NOW}"), Err(BadCount));
    check(&format!("switch1,55.6,0.32,-0,{NOW}"), Err(BadCount));
    check(&format!("switch1,55.6,0.32,1.5,{NOW}"), Err(BadCount));
    check(&format!("switch1,55.6,0.32,1e300,{NOW}"), Err(BadCount));
    check(&format!("switch1,,,,{NOW}"), Err(NoValues));
    check("switch1,55.6,0.32,1,yesterday", Err(BadTimestamp));
    check("switch1,55.6,0.32,1,2025-09-14T12:30:05", Err(BadTimestamp));
    check("switch1,55.6,0.32,1", Err(FieldCount));
    check(&format!("switch1,55.6,0.32,1,{NOW},extra"), Err(FieldCount));
    check(&format!(",55.6,0.32,1,{NOW}"), Err(BadSwitchId));
    check(
        &format!("{},55.6,0.32,1,{NOW}", "x".repeat(300)),
        Err(BadSwitchId),
    );
    check(&format!("sw\u{7}1,55.6,0.32,1,{NOW}"), Err(BadSwitchId));
    check(
        "switch1,55.6,0.32,1,2025-09-14T12:30:01.123455+00:00",
        Err(Stale),
    );
    check(
        "switch1,55.6,0.32,1,2025-09-14T12:30:02.123456+00:00",
        Ok(&[55.6, 0.32, 1.0]),
    );
    check(
        "switch1,55.6,0.32,1,2025-09-14T12:30:08.123457+00:00",
        Err(Future),
    );
    check(
        &format!("switch1,{},0.32,1,{NOW}", "9".repeat(1_000_000)),
        Err(NotFinite),
    );
}

#[test]
fn keeps_good_rows_around_bad_ones() {
    let feed = format!(
        "{HEADER}\nswitch1,1,0.1,0,{NOW}\nswitch2,x,0.1,0,{NOW}\nswitch3,3,0.3,3,{NOW}\nswitch4,4\n"
    );
    let batch = parse(&feed);
    let ids: Vec<_> = (0..batch.len()).map(|i| batch.switch_id(i)).collect();
    assert_eq!(ids, ["switch1", "switch3"]);
    assert_eq!(batch.row_values(1), floats(&[3.0, 0.3, 3.0]));
    assert_eq!(batch.rejected.get(RejectReason::BadNumber), 1);
    assert_eq!(batch.rejected.get(RejectReason::FieldCount), 1);
    assert_eq!(batch.examples.len(), 2);
    assert_eq!(batch.examples[0].line, 3);
    assert_eq!(batch.error, None);
}

#[test]
fn reject_examples_quote_the_feed_text() {
    let forged = "\n2026-01-01T00:00:00Z [ERROR] forged line";
    let feed =
        format!("switch_id,\"bw{forged}\",timestamp\n\"sw{forged}\",1,{NOW}\nswitch1,x,{NOW}\n");
    let batch = parse(&feed);
    let details: Vec<&str> = batch.examples.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "\"sw\\n2026-01-01T00:00:00Z [ERROR] forged line\"",
            "\"bw\\n2026-01-01T00:00:00Z [ERROR] forged line\"=\"x\""
        ]
    );
    let header = format!("switch_id,\"d{forged}\",\"d{forged}\",timestamp\n");
    let Some(FeedError::BadHeader(why)) = parse(&header).error else {
        panic!("a repeated column is a bad header");
    };
    assert!(!why.contains('\n'), "{why}");
}

#[test]
fn maps_columns_by_name_and_keeps_extra_columns_as_metrics() {
    let feed =
        format!("timestamp,errors,switch_id,temperature,bandwidth\n{NOW},2,leaf 01/a,41.5,70\n");
    let batch = parse(&feed);
    assert_eq!(batch.metrics, ["errors", "temperature", "bandwidth"]);
    assert_eq!(batch.switch_id(0), "leaf 01/a");
    assert_eq!(batch.row_values(0), floats(&[2.0, 41.5, 70.0]));
}

#[test]
fn rejects_unusable_headers_whole() {
    for header in [
        "",
        "bandwidth,latency,errors,timestamp",
        "switch_id,bandwidth,latency,errors",
        "switch_id,timestamp",
        "switch_id,bandwidth,bandwidth,timestamp",
        "switch_id,,timestamp",
    ] {
        let batch = parse(&format!("{header}\nswitch1,1,2,3,{NOW}\n"));
        assert!(
            matches!(batch.error, Some(FeedError::BadHeader(_))),
            "{header:?}: {:?}",
            batch.error
        );
        assert!(batch.is_empty());
    }
}

#[test]
fn a_cut_body_keeps_the_complete_rows() {
    struct CutShort<'a>(&'a [u8]);
    impl Read for CutShort<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                ));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let feed = format!("{HEADER}\nswitch1,1,0.1,0,{NOW}\nswitch2,2,0.2,0,2025-09");
    let batch = parse_feed(CutShort(feed.as_bytes()), fresh());
    assert_eq!(batch.len(), 1);
    assert!(matches!(batch.error, Some(FeedError::Read(_))));
}

#[test]
fn written_rows_read_back() {
    let mut ts = [0u8; timestamp::CANONICAL_LEN];
    timestamp::encode(fresh().now, &mut ts);
    let mut out = Vec::new();
    write_header(&mut out);
    write_row(&mut out, "switch1", 5560, 32, 1, &ts);
    write_row(&mut out, "switch2", 5507, 100, 0, &ts);
    write_row(&mut out, "switch3", 10000, 5, 123, &ts);
    let text = String::from_utf8(out.clone()).expect("ascii");
    assert_eq!(
        text,
        format!("{HEADER}\nswitch1,55.6,0.32,1,{NOW}\nswitch2,55.07,1.0,0,{NOW}\nswitch3,100.0,0.05,123,{NOW}\n")
    );
    let batch = parse_feed(out.as_slice(), fresh());
    assert_eq!(batch.len(), 3);
    assert_eq!(batch.row_values(1), floats(&[55.07, 1.0, 0.0]));
}

fn ufm(text: &str) -> FeedBatch {
    parse_answer(
        text.as_bytes(),
        Some("text/csv"),
        fresh(),
        &SourceOptions::default(),
    )
}

fn micros_now() -> i64 {
    fresh().now
}

#[test]
fn ufm_csv_keys_ports_by_normalised_guid_and_reads_counters_exactly() {
    let us = micros_now();
    let text = format!(
        "timestamp,source_id,tag,node_guid,port_guid,port_num, PortXmitDataExtended,SymbolErrorCounterExtended,PortRcvErrorsExtended,Temperature\n\
         {us},0x0002c90300f172a0,,2c90300f172a0,0x0002c90300f172a1,2,36298026860928,18446744073709551576,N/A,41\n\
         {us},0x0002c90300f172a0,,0x0002C90300F172A0,0x0002c90300f172a1,3,0x10,-1,0xfffffffffffffffe,\n\
         {us},0x0002c90300f172a0,,2c90300f172a0,0x0002c90300f172a1,4,,1,2,3\n"
    );
    let batch = ufm(&text);
    assert_eq!(batch.rejected.total(), 0, "{:?}", batch.examples);
    assert_eq!(
        batch.metrics,
        [
            "PortXmitDataExtended",
            "SymbolErrorCounterExtended",
            "PortRcvErrorsExtended",
            "Temperature"
        ],
        "identity columns are not metrics; the leading space is trimmed"
    );
    assert_eq!(batch.switch_id(0), "0x0002c90300f172a0:2");
    assert_eq!(batch.switch_id(1), "0x0002c90300f172a0:3");
    assert_eq!(batch.timestamp(0), us);
    assert_eq!(
        batch.row_values(0),
        [
            Some(Value::Int(36_298_026_860_928)),
            Some(Value::Int(18_446_744_073_709_551_576)),
            None,
            Some(Value::Float(41.0)),
        ]
    );
    assert_eq!(
        batch.row_values(1),
        [Some(Value::Int(16)), None, None, None]
    );
    assert_eq!(
        batch.not_available, 4,
        "N/A, -1, the hex sentinel and an empty counter cell"
    );
    assert_eq!(
        batch.kinds[0],
        MetricKind::Counter { words: false },
        "UFM's data counters are bytes"
    );
    assert_eq!(batch.kinds[3], MetricKind::Gauge);
}

#[test]
fn ufm_secondary_spellings_text_cells_and_bad_keys() {
    let us = micros_now();
    let text = format!(
        "Timestamp,Node_GUID,Port_Number,LinkDownedCounterExtended,Node_Description,FecMode\n\
         {us},0x7cfe9003009ce5b0,1,5,sw-1 spine,auto\n\
         {us},not-a-guid,1,5,sw-1,rs\n\
         {us},0x7cfe9003009ce5b0,x,5,sw-1,rs\n"
    );
    let batch = ufm(&text);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.switch_id(0), "0x7cfe9003009ce5b0:1");
    assert_eq!(batch.metrics, ["LinkDownedCounterExtended", "FecMode"]);
    assert_eq!(
        batch.bad_cells, 1,
        "the text cell of FecMode is dropped, the row kept"
    );
    assert_eq!(batch.rejected.get(RejectReason::BadSwitchId), 2);
}

#[test]
fn ufm_timestamps_in_any_epoch_unit_and_none() {
    let us = micros_now();
    for (stamp, want) in [
        (us.to_string(), us),
        ((us / 1000).to_string(), us / 1000 * 1000),
        ((us / 1_000_000).to_string(), us / 1_000_000 * 1_000_000),
        ((us * 1000).to_string(), us),
    ] {
        let batch = ufm(&format!(
            "timestamp,node_guid,port_num,x\n{stamp},0x1,1,2\n"
        ));
        assert_eq!(batch.rejected.total(), 0, "{stamp}: {:?}", batch.examples);
        assert_eq!(batch.timestamp(0), want, "{stamp}");
    }
    let batch = ufm("node_guid,port_num,x\n0x1,1,2\n");
    assert_eq!(
        batch.timestamp(0),
        us,
        "no timestamp column: the poll's time"
    );
    let batch = ufm("timestamp,node_guid,port_num,x\n2025-01-01,0x1,1,2\n");
    assert_eq!(batch.rejected.get(RejectReason::BadTimestamp), 1);
}

#[test]
fn an_empty_answer_and_a_header_without_keys_are_errors_of_the_whole_feed() {
    assert!(ufm("").error.is_some());
    let batch = ufm("timestamp,port_num,x\n1,1,1\n");
    assert!(
        matches!(&batch.error, Some(FeedError::BadHeader(why)) if why.contains("node_guid")),
        "{:?}",
        batch.error
    );
}

#[test]
fn counter_columns_and_classic_counters() {
    let options = SourceOptions {
        counter_columns: vec!["drops".to_string()],
        ..SourceOptions::default()
    };
    let text = format!("switch_id,drops,PortXmitData,timestamp\nsw1,9007199254740993,12,{NOW}\n");
    let batch = parse_answer(text.as_bytes(), None, fresh(), &options);
    assert_eq!(batch.rejected.total(), 0, "{:?}", batch.examples);
    assert_eq!(
        batch.row_values(0),
        [
            Some(Value::Int(9_007_199_254_740_993)),
            Some(Value::Int(12))
        ]
    );
    assert_eq!(
        batch.kinds[1],
        MetricKind::Counter { words: true },
        "a PMA name: words"
    );
    let batch = parse_answer(
        format!("switch_id,PortXmitData,timestamp\nsw1,-5,{NOW}\nsw2,1.5,{NOW}\n").as_bytes(),
        None,
        fresh(),
        &options,
    );
    assert_eq!(batch.rejected.get(RejectReason::BadCount), 2);
}
