use super::*;
use crate::shared::wire;
use rand::{Rng, SeedableRng};

const S: i64 = MICROS_PER_SEC;

const LIMITS: BlockLimits = BlockLimits::fixed(64, 600 * S);

fn batch(rows: &[(&str, Micros, [f64; 3])]) -> FeedBatch {
    let mut b = FeedBatch::with_metrics(&metric::BUILTIN_METRICS);
    for (id, ts, values) in rows {
        b.push_row(id, *ts, values);
    }
    b
}

const BW: usize = 0;
const LAT: usize = 1;
const ERR: usize = 2;

#[test]
fn builtin_metrics_have_fixed_ids() {
    let store = Store::new(LIMITS);
    assert_eq!(
        (
            store.metrics().id("bandwidth"),
            store.metrics().id("latency"),
            store.metrics().id("errors")
        ),
        (Some(BW), Some(LAT), Some(ERR))
    );
}

#[test]
fn duplicates_and_out_of_order_samples_are_not_stored() {
    let mut store = Store::new(LIMITS);
    let first = store.ingest(&batch(&[
        ("s1", 10 * S, [50.0, 0.5, 3.0]),
        ("s1", 11 * S, [51.0, 0.4, 2.0]),
    ]));
    assert_eq!(first.accepted, 2);
    let again = store.ingest(&batch(&[
        ("s1", 11 * S, [51.0, 0.4, 2.0]),
        ("s1", 9 * S, [1.0, 1.0, 1.0]),
    ]));
    assert_eq!(again.accepted, 0);
    assert_eq!(again.rejected.get(RejectReason::Duplicate), 1);
    assert_eq!(again.rejected.get(RejectReason::OutOfOrder), 1);
    assert_eq!(store.retained_agg(0, ERR).map(|a| a.sum), Some(5.0));
    assert_eq!(
        store.latest(0, ERR),
        Some(Sample {
            timestamp: 11 * S,
            value: Value::Float(2.0)
        })
    );
    assert_eq!(store.retained_rows(), 2);
}

#[test]
fn absent_values_do_not_count() {
    let mut store = Store::new(LIMITS);
    store.ingest(&batch(&[
        ("s1", S, [f64::NAN, 0.5, 1.0]),
        ("s1", 2 * S, [40.0, f64::NAN, 1.0]),
    ]));
    assert_eq!(
        store.retained_agg(0, BW).map(|a| (a.min, a.count)),
        Some((40.0, 1))
    );
    assert_eq!(
        store.latest(0, LAT),
        Some(Sample {
            timestamp: S,
            value: Value::Float(0.5)
        })
    );
}

#[test]
fn a_metric_that_appears_later_gets_its_own_position() {
    let mut store = Store::new(LIMITS);
    store.ingest(&batch(&[
        ("s1", S, [1.0, 0.1, 0.0]),
        ("s2", S, [2.0, 0.2, 0.0]),
    ]));
    let mut extra = FeedBatch::with_metrics(&["temperature"]);
    extra.push_row("s1", 2 * S, &[41.5]);
    assert_eq!(store.ingest(&extra).accepted, 1);
    let temp = store.metrics().id("temperature").expect("registered");
    assert_eq!(
        store.latest(0, temp).map(|s| s.value),
        Some(Value::Float(41.5))
    );
    assert!(!store.has_metric(1, temp), "s2 never reported temperature");
    assert_eq!(store.retained_agg(0, temp).map(|a| a.count), Some(1));
    // The row without bandwidth is still history for the other metrics.
    assert_eq!(store.retained_agg(0, BW).map(|a| a.count), Some(1));
    let mut seen = Vec::new();
    store.history(0, temp, 0, 10 * S, &mut |s| {
        seen.push(s);
        true
    });
    assert_eq!(
        seen,
        [Sample {
            timestamp: 2 * S,
            value: Value::Float(41.5)
        }]
    );
}

/// A random, telemetry-like history for one switch: irregular intervals, gaps, absent values.
fn random_rows(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<(Micros, [f64; 3])> {
    let mut ts = 1_700_000_000 * S;
    let mut bw = 5_000i64;
    (0..n)
        .map(|_| {
            ts += if rng.random_bool(0.02) {
                rng.random_range(10..300) * S
            } else {
                S + rng.random_range(-3_000..3_000)
            };
            bw = (bw + rng.random_range(-150..=150)).clamp(0, 10_000);
            let row = [
                if rng.random_bool(0.03) {
                    f64::NAN
                } else {
                    bw as f64 / 100.0
                },
                f64::from(rng.random_range(10..=100)) / 100.0,
                f64::from(if rng.random_bool(0.2) {
                    rng.random_range(1..200)
                } else {
                    0
                }),
            ];
            (ts, row)
        })
        .collect()
}

/// A store holding `n` random rows of switch "s" (all accepted), the rows, and the rng.
fn random_store(seed: u64, n: usize) -> (rand::rngs::StdRng, Vec<(Micros, [f64; 3])>, Store) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rows = random_rows(&mut rng, n);
    let mut store = Store::new(LIMITS);
    let all: Vec<_> = rows.iter().map(|(ts, v)| ("s", *ts, *v)).collect();
    assert_eq!(store.ingest(&batch(&all)).accepted, n as u64);
    (rng, rows, store)
}

fn brute_agg(rows: &[(Micros, [f64; 3])], metric: usize, from: Micros) -> Option<MetricAgg> {
    let mut agg = MetricAgg::EMPTY;
    for (ts, values) in rows {
        if *ts >= from {
            agg.add(values[metric]);
        }
    }
    agg.nonempty()
}

fn assert_agg_eq(got: Option<MetricAgg>, want: Option<MetricAgg>, what: &str) {
    match (got, want) {
        (None, None) => {}
        (Some(g), Some(w)) => {
            assert_eq!((g.min, g.max, g.count), (w.min, w.max, w.count), "{what}");
            assert!(
                (g.sum - w.sum).abs() <= 1e-9 * w.sum.abs().max(1.0),
                "{what}: sum {} vs {}",
                g.sum,
                w.sum
            );
        }
        _ => panic!("{what}: {got:?} vs {want:?}"),
    }
}

#[test]
fn windowed_and_retained_aggregates_match_brute_force() {
    let (mut rng, rows, store) = random_store(5, 2_000);
    let first = rows[0].0;
    let last = rows[rows.len() - 1].0;
    for _ in 0..300 {
        let cutoff = rng.random_range(first - 10 * S..last + 10 * S);
        let got = store.window_aggs(0, &[Some(BW), Some(LAT), Some(ERR)], cutoff);
        for metric in [BW, LAT, ERR] {
            assert_agg_eq(
                got[metric],
                brute_agg(&rows, metric, cutoff),
                &format!("metric {metric} from {cutoff}"),
            );
        }
        // Totals of counts are exact.
        if let (Some(g), Some(w)) = (got[ERR], brute_agg(&rows, ERR, cutoff)) {
            assert_eq!(g.sum, w.sum);
        }
    }
    for metric in [BW, LAT, ERR] {
        assert_agg_eq(
            store.retained_agg(0, metric),
            brute_agg(&rows, metric, i64::MIN),
            "retained",
        );
    }
}

#[test]
fn expiry_drops_whole_blocks_only_when_entirely_older() {
    let (_, rows, mut store) = random_store(6, 1_000);
    let cutoff = rows[500].0;
    let dropped = store.evict_before(cutoff);
    assert!(dropped > 0 && dropped <= 500, "dropped {dropped}");
    assert_eq!(store.retained_rows(), 1_000 - dropped);
    // Every sample at or after the cutoff is still there, and at most one block before it.
    let mut kept = Vec::new();
    store.history(0, LAT, i64::MIN, i64::MAX, &mut |s| {
        kept.push(s.timestamp);
        true
    });
    assert_eq!(kept.len() as u64, 1_000 - dropped);
    let older = kept.iter().filter(|&&t| t < cutoff).count();
    assert!(
        older < LIMITS.max_rows as usize,
        "{older} rows older than the cutoff kept"
    );
    assert_eq!(kept.last(), Some(&rows[999].0));
    assert_agg_eq(
        store.retained_agg(0, ERR),
        brute_agg(&rows[1_000 - kept.len()..], ERR, i64::MIN),
        "after expiry",
    );
    // Everything goes once the cutoff passes the newest row, and a series with no sample
    // for a whole retention is forgotten. (Rows that old never get here again: the feed
    // parser rejects anything older than --max-age, far less than a retention.)
    store.evict_before(rows[999].0 + 1);
    assert_eq!(store.retained_rows(), 0);
    assert_eq!(store.n_switches(), 0);
    assert_eq!(store.switch("s"), None);
}

#[test]
fn history_ranges_are_exact() {
    let (mut rng, rows, store) = random_store(7, 1_500);
    for _ in 0..200 {
        let a = rng.random_range(rows[0].0 - S..rows[1_499].0 + S);
        let b = rng.random_range(a..rows[1_499].0 + 2 * S);
        let mut got = Vec::new();
        store.history(0, BW, a, b, &mut |s| {
            got.push(s);
            true
        });
        let want: Vec<Sample> = rows
            .iter()
            .filter(|(ts, v)| *ts >= a && *ts <= b && !v[BW].is_nan())
            .map(|(ts, v)| Sample {
                timestamp: *ts,
                value: Value::Float(v[BW]),
            })
            .collect();
        assert_eq!(got, want);
    }
    // Stopping early stops.
    let mut n = 0;
    store.history(0, LAT, i64::MIN, i64::MAX, &mut |_| {
        n += 1;
        n < 10
    });
    assert_eq!(n, 10);
}

/// One row for each of `n` switches (`switch0`…), at 1 s, built-in metrics.
fn one_poll(n: usize) -> FeedBatch {
    let mut batch = FeedBatch::with_metrics(&metric::BUILTIN_METRICS);
    for i in 0..n {
        batch.push_row(&format!("switch{i}"), S, &[1.0, 0.5, 1.0]);
    }
    batch
}

#[test]
fn a_batch_is_stored_in_holds_bounded_by_time_and_rows() {
    let b = one_poll(10_000);
    // No time at all: one step of rows per hold.
    let handle = StoreHandle::new(Store::new(LIMITS));
    let outcome = handle.apply_holding(&b, Duration::ZERO);
    assert_eq!(outcome.accepted, 10_000);
    assert_eq!(
        outcome.write_holds,
        10_000_u64.div_ceil(WRITE_STEP_ROWS as u64)
    );
    // All the time in the world: the row cap still ends each hold.
    let handle = StoreHandle::new(Store::new(LIMITS));
    let outcome = handle.apply_holding(&b, Duration::from_secs(3600));
    assert_eq!(outcome.accepted, 10_000);
    assert_eq!(
        outcome.write_holds,
        10_000_u64.div_ceil(WRITE_CHUNK_ROWS as u64)
    );
    assert_eq!(handle.read().retained_rows(), 10_000);
}

#[test]
fn many_switches_through_the_handle() {
    let handle = StoreHandle::new(Store::new(LIMITS));
    let b = one_poll(10_000);
    let generation = handle.generation();
    let outcome = handle.apply(&b);
    assert_eq!(outcome.accepted, 10_000);
    assert!(handle.generation() > generation);
    let store = handle.read();
    assert_eq!(store.n_switches(), 10_000);
    assert_eq!(store.switch("switch9999"), Some(9_999));
    assert_eq!(store.retained_rows(), 10_000);
    drop(store);
    assert_eq!(handle.expire(2 * S), 10_000);
    assert_eq!(handle.read().retained_rows(), 0);
}

#[test]
fn expiry_scans_only_when_a_block_can_have_expired() {
    let handle = StoreHandle::new(Store::new(LIMITS));
    assert_eq!(handle.expire(100 * S), 0, "an empty store expires nothing");
    handle.apply(&batch(&[
        ("s1", 200 * S, [1.0, 0.1, 0.0]),
        ("s1", 201 * S, [1.0, 0.1, 0.0]),
    ]));
    assert!(
        handle.read().may_expire(202 * S),
        "rows added after a scan of an empty store"
    );
    assert!(!handle.read().may_expire(200 * S));
    assert_eq!(handle.expire(202 * S), 2);
    assert_eq!(handle.read().retained_rows(), 0);
}

/// Everything a reader can ask about one series.
fn series_view(store: &Store, switch_id: &str, metric: &str) -> String {
    let (Some(switch), Some(metric_id)) = (store.switch(switch_id), store.metrics().id(metric))
    else {
        return "absent".to_string();
    };
    let mut history = Vec::new();
    store.history(switch, metric_id, i64::MIN, i64::MAX, &mut |s| {
        history.push((s.timestamp, s.value.bits()));
        true
    });
    format!(
        "{:?} {:?} {:?} {:?}",
        store.latest(switch, metric_id),
        store.retained_agg(switch, metric_id),
        store.count_total(switch, metric_id),
        history
    )
}

/// Rows of `n_switches` switches every second for `seconds`, with absent values, and a metric
/// some switches start reporting halfway.
fn varied_batches(n_switches: usize, seconds: i64) -> Vec<FeedBatch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    (0..seconds)
        .map(|t| {
            let mut b = FeedBatch::with_metrics(&["bandwidth", "latency", "errors", "temperature"]);
            for s in 0..n_switches {
                let present = |rng: &mut rand::rngs::StdRng| rng.random_range(0..10) > 0;
                let bw = if present(&mut rng) {
                    rng.random_range(0..10_000) as f64 / 100.0
                } else {
                    f64::NAN
                };
                let temp = if t > seconds / 2 && s % 2 == 0 {
                    40.0 + (t % 7) as f64
                } else {
                    f64::NAN
                };
                b.push_row(
                    &format!("sw{s}"),
                    1_700_000_000 * S + t * S + s as i64,
                    &[
                        bw,
                        rng.random_range(0..100) as f64 / 100.0,
                        rng.random_range(0..3) as f64,
                        temp,
                    ],
                );
            }
            b
        })
        .collect()
}

/// Compacts like the store thread (an export every 30 polls, block files limited to
/// `max_bytes`), then rebuilds a store from the block files, the checkpoints (all of them,
/// or only the newest) and the WAL after the last export plus some polls before it (as a
/// real WAL holds), and checks it is the same store.
fn rebuild_from_files(max_bytes: usize, every_checkpoint: bool) {
    let limits = BlockLimits::fixed(4096, 20 * S);
    let batches = varied_batches(6, 170);
    let mut original = Store::new(limits);
    let mut images = Vec::new();
    let mut checkpoints = Vec::new();
    let mut last_export = 0;
    for (i, b) in batches.iter().enumerate() {
        original.ingest(b);
        if i % 30 == 29 {
            let mut out = Export::default();
            original.export_range(b.timestamp(0), 0..usize::MAX, &mut out, max_bytes);
            if !out.sealed.is_empty() {
                images.push(out.sealed.finish());
            }
            checkpoints.push(out.checkpoint.finish());
            last_export = i;
        }
    }
    assert!(images.len() >= 4, "{} block files", images.len());

    let mut restored = Store::new(limits);
    for image in &images {
        let file = file::read_block_file(image).expect("a valid block file");
        let outcome = restored.import(file, i64::MIN);
        assert_eq!(outcome.conflicting_blocks, 0);
    }
    restored.finish_import();
    let from = if every_checkpoint {
        0
    } else {
        checkpoints.len() - 1
    };
    let mut replayed = 0;
    for image in &checkpoints[from..] {
        let file = file::read_block_file(image).expect("a valid checkpoint");
        let outcome = restored.replay_checkpoint(file);
        assert_eq!(outcome.corrupt_blocks, 0);
        replayed += outcome.rows_replayed;
    }
    assert!(replayed > 0, "the checkpoints hold the open blocks");
    for b in &batches[last_export - 4..] {
        restored.ingest(b);
    }
    assert_eq!(restored.retained_rows(), original.retained_rows());
    for s in 0..6 {
        for metric in ["bandwidth", "latency", "errors", "temperature"] {
            let id = format!("sw{s}");
            assert_eq!(
                series_view(&restored, &id, metric),
                series_view(&original, &id, metric),
                "{id} {metric}"
            );
        }
    }
}

#[test]
fn block_files_plus_the_newest_checkpoint_plus_the_wal_after_it_rebuild_the_same_store() {
    rebuild_from_files(usize::MAX, false);
    rebuild_from_files(usize::MAX, true);
}

#[test]
fn blocks_a_size_limited_export_leaves_behind_are_in_its_checkpoint() {
    // One switch per block file: every export leaves most sealed blocks behind.
    rebuild_from_files(1, false);
    rebuild_from_files(1, true);
}

#[test]
fn restored_newest_values_come_from_the_blocks_alone() {
    let limits = BlockLimits::fixed(4096, 10 * S);
    let mut original = Store::new(limits);
    for b in varied_batches(3, 60) {
        original.ingest(&b);
    }
    let mut out = Export::default();
    // Long after the last row: every open block is overdue and sealed into the file.
    original.export_range(1_800_000_000 * S, 0..usize::MAX, &mut out, usize::MAX);
    assert!(out.checkpoint.is_empty(), "nothing left open");
    let mut restored = Store::new(limits);
    restored.import(
        file::read_block_file(&out.sealed.finish()).expect("valid"),
        i64::MIN,
    );
    restored.finish_import();
    for metric in ["bandwidth", "latency", "errors", "temperature"] {
        assert_eq!(
            series_view(&restored, "sw0", metric),
            series_view(&original, "sw0", metric)
        );
    }
    // Expired blocks are not loaded.
    let mut out = Export::default();
    let mut again = Store::new(limits);
    for b in varied_batches(3, 60) {
        again.ingest(&b);
    }
    again.export_range(1_800_000_000 * S, 0..usize::MAX, &mut out, usize::MAX);
    let mut pruned = Store::new(limits);
    let outcome = pruned.import(
        file::read_block_file(&out.sealed.finish()).expect("valid"),
        1_700_000_000 * S + 30 * S,
    );
    assert!(
        outcome.expired_blocks > 0 && outcome.blocks > 0,
        "{outcome:?}"
    );
}

#[test]
fn a_size_limited_export_leaves_whole_switches_for_later_and_checkpoints_them() {
    let limits = BlockLimits::fixed(8, 20 * S);
    let batches = varied_batches(6, 60);
    let mut original = Store::new(limits);
    for b in &batches {
        original.ingest(b);
    }
    let now = batches[batches.len() - 1].timestamp(0);
    // A budget of one byte: one switch's blocks, the others' wait (in the checkpoint).
    let mut out = Export::default();
    original.export_range(now, 0..usize::MAX, &mut out, 1);
    let first_image = out.sealed.finish();
    let first = file::read_block_file(&first_image).expect("valid");
    assert_eq!(first.switches.len(), 1);
    let checkpoint = file::read_block_file(&out.checkpoint.finish()).expect("valid");
    assert_eq!(checkpoint.switches.len(), 6, "every switch has blocks left");
    let exported = &first.switches[0].switch_id;
    let left_sealed = checkpoint
        .switches
        .iter()
        .filter(|s| &s.switch_id != exported)
        .all(|s| s.blocks.len() > 1);
    assert!(
        left_sealed,
        "the others' sealed blocks are in the checkpoint too"
    );

    // A restart after the first file and the checkpoint alone (the WAL before them gone).
    let mut restored = Store::new(limits);
    assert_eq!(restored.import(first, i64::MIN).conflicting_blocks, 0);
    restored.finish_import();
    restored.replay_checkpoint(checkpoint);
    for s in 0..6 {
        let id = format!("sw{s}");
        for metric in ["bandwidth", "latency", "errors", "temperature"] {
            assert_eq!(
                series_view(&restored, &id, metric),
                series_view(&original, &id, metric),
                "{id} {metric}"
            );
        }
    }

    // The next export takes the other switches; the two files load without overlap.
    let mut out = Export::default();
    original.export_range(now, 0..usize::MAX, &mut out, usize::MAX);
    let second = file::read_block_file(&out.sealed.finish()).expect("valid");
    assert_eq!(second.switches.len(), 5);
    let mut reloaded = Store::new(limits);
    let first = file::read_block_file(&first_image).expect("valid");
    assert_eq!(reloaded.import(first, i64::MIN).conflicting_blocks, 0);
    assert_eq!(reloaded.import(second, i64::MIN).conflicting_blocks, 0);
}

/// The layering rule of docs/ARCHITECTURE.md: the store is the in-memory engine and imports
/// nothing above it (the rest of the server: durability, statistics, HTTP; threads,
/// channels, the disk, the network). Of `shared` it may use the data-only modules.
#[test]
fn the_store_imports_nothing_above_it() {
    const FORBIDDEN: [&str; 8] = [
        "crate::shared::http",
        "crate::shared::watch",
        "crate::shared::process",
        "crate::config",
        "crossbeam",
        "std::thread",
        "std::fs",
        "std::net",
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server/store");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("src/server/store") {
        let path = entry.expect("entry").path();
        // The engine's code; its tests (this file) may use anything.
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let where_ = || format!("{}:{}: {line}", path.display(), n + 1);
            for forbidden in FORBIDDEN {
                assert!(
                    !code.contains(forbidden),
                    "the store uses {forbidden}: {}",
                    where_()
                );
            }
            // Nothing of the server but the store itself (`persist`, `ingest`, `stats`, `api`…).
            for (at, _) in code.match_indices("crate::server::") {
                assert!(
                    code[at + "crate::server::".len()..].starts_with("store"),
                    "the store reaches up into the server: {}",
                    where_()
                );
            }
            assert!(
                !code.contains("crate::server::{") && !code.contains("crate::server;"),
                "the store reaches up into the server: {}",
                where_()
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 5,
        "only {checked} files read in {}",
        dir.display()
    );
}

#[test]
fn counters_above_2_pow_53_are_stored_and_answered_exactly() {
    let mut store = Store::new(LIMITS);
    let mut b = FeedBatch::with_columns(
        vec!["SymbolErrorCounterExtended".to_string()],
        vec![MetricKind::Counter { words: false }],
    );
    let values = [
        18_446_744_073_709_551_576u64,
        (1 << 53) + 1,
        (1 << 53) + 3,
        u64::MAX,
    ];
    for (i, &v) in values.iter().enumerate() {
        b.push_cells(
            "0x0002c90300f172a0:1",
            (i as i64 + 1) * S,
            &[Some(Value::Int(v))],
        );
    }
    assert_eq!(store.ingest(&b).accepted, 4);
    let metric = store
        .metrics()
        .id("SymbolErrorCounterExtended")
        .expect("registered");
    assert!(store.metrics().kind(metric).is_counter());
    let mut got = Vec::new();
    store.history(0, metric, i64::MIN, i64::MAX, &mut |s| {
        got.push(s.value);
        true
    });
    let want: Vec<Value> = values.iter().map(|&v| Value::Int(v)).collect();
    assert_eq!(got, want);
    assert_eq!(
        store.latest(0, metric).map(|s| s.value),
        Some(Value::Int(u64::MAX))
    );
}

#[test]
fn counter_windows_match_brute_force_across_blocks_and_resets() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let mut store = Store::new(LIMITS);
    let mut b = FeedBatch::with_columns(
        vec![
            "PortXmitDataExtended".to_string(),
            "Temperature".to_string(),
        ],
        vec![MetricKind::Counter { words: false }, MetricKind::Gauge],
    );
    let mut value = 1u64 << 60;
    let mut rows = Vec::new();
    for i in 0..2_000i64 {
        value = match rng.random_range(0..200) {
            0 => rng.random_range(0..1_000),
            1 => value,
            _ => value + rng.random_range(0..1_000_000),
        };
        let cell = (!rng.random_bool(0.05)).then_some(Value::Int(value));
        b.push_cells("p", (i + 1) * S, &[cell, Some(Value::Float(40.0))]);
        if let Some(Value::Int(v)) = cell {
            rows.push(((i + 1) * S, v));
        }
    }
    store.ingest(&b);
    let metric = store
        .metrics()
        .id("PortXmitDataExtended")
        .expect("registered");
    for _ in 0..200 {
        let cutoff = rng.random_range(0..2_100) * S;
        let mut want = CounterAgg::default();
        rows.iter()
            .filter(|(ts, _)| *ts >= cutoff)
            .for_each(|&(ts, v)| want.add(ts, v));
        let got = store.counter_window(0, metric, cutoff, true);
        assert_eq!(got, want.last.is_some().then_some(want), "from {cutoff}");
        // By whole blocks the window reaches back at most a block, and ends the same.
        if let Some(coarse) = store.counter_window(0, metric, cutoff, false) {
            let (first_ts, _) = coarse.first.expect("has a first sample");
            if let Some((want_first, _)) = want.first {
                assert!(first_ts <= want_first, "from {cutoff}");
            }
            assert!(cutoff - first_ts <= LIMITS.span + S, "from {cutoff}");
            assert_eq!(coarse.last, want.last);
        }
    }
}

#[test]
fn series_without_a_sample_for_a_whole_retention_are_forgotten() {
    let mut store = Store::new(LIMITS);
    let rows: Vec<(String, Micros)> = (0..5)
        .flat_map(|i| [(format!("gone{i}"), S), (format!("kept{i}"), S)])
        .collect();
    let rows: Vec<(&str, Micros, [f64; 3])> = rows
        .iter()
        .map(|(id, ts)| (id.as_str(), *ts, [1.0, 1.0, 1.0]))
        .collect();
    store.ingest(&batch(&rows));
    // Much later, only the kept ones report again.
    let later: Vec<String> = (0..5).map(|i| format!("kept{i}")).collect();
    let later: Vec<(&str, Micros, [f64; 3])> = later
        .iter()
        .map(|id| (id.as_str(), 5_000 * S, [2.0, 2.0, 2.0]))
        .collect();
    store.ingest(&batch(&later));
    let before = store.history_bytes();
    store.evict_before(4_000 * S);
    assert_eq!(store.n_switches(), 5);
    assert!(store.switch("gone0").is_none());
    let ids: Vec<&str> = store.switch_ids().iter().collect();
    assert_eq!(
        ids,
        ["kept0", "kept1", "kept2", "kept3", "kept4"],
        "first-seen order kept"
    );
    assert_eq!(
        store
            .latest(store.switch("kept3").expect("kept"), BW)
            .map(|s| s.value),
        Some(Value::Float(2.0))
    );
    assert!(store.history_bytes() < before);
    // A forgotten series that comes back starts afresh.
    store.ingest(&batch(&[("gone0", 5_001 * S, [3.0, 3.0, 3.0])]));
    assert_eq!(store.switch("gone0"), Some(5));
}

/// `polls` polls of `n` switches, every row of a poll stamped with the poll's time (a 1 s
/// grid plus wake-up jitter), as a feed without its own timestamps or a generator gives.
fn jittered_polls(n: usize, polls: i64, per_switch_jitter: bool) -> Vec<FeedBatch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    (0..polls)
        .map(|t| {
            let poll = 1_700_000_000 * S + t * S + rng.random_range(50..300);
            let mut b = FeedBatch::with_metrics(&["bandwidth", "latency", "errors"]);
            for s in 0..n {
                let ts = if per_switch_jitter {
                    poll + rng.random_range(0..1000)
                } else {
                    poll
                };
                let v = rng.random_range(0..10_000) as f64 / 100.0;
                b.push_row(&format!("sw{s}"), ts, &[v, 0.5, (t % 3) as f64]);
            }
            b
        })
        .collect()
}

#[test]
fn switches_polled_together_share_their_time_streams_in_memory_and_in_block_files() {
    // Blocks of 100 rows: long enough that their fixed costs do not hide the streams.
    let limits = BlockLimits::fixed(4096, 100 * S);
    let batches = jittered_polls(128, 500, false);
    let mut shared = Store::new(limits);
    for b in &batches {
        shared.ingest(b);
    }
    let blocks: usize = shared.switches.iter().map(|s| s.sealed.len()).sum();
    // Blocks seal in 32 staggered groups (4 switches each here), each group on the same
    // polls: 4 blocks per distinct stream.
    assert!(blocks >= 128 * 4, "{blocks} sealed blocks");
    assert!(
        shared.times.sealed.streams_held() * 4 <= blocks,
        "{} distinct time streams for {blocks} blocks",
        shared.times.sealed.streams_held()
    );
    // The same fabric with a timestamp per switch (nothing to share) takes more memory.
    let mut apart = Store::new(limits);
    for b in jittered_polls(128, 500, true) {
        apart.ingest(&b);
    }
    // Per-switch timestamps cost about 10 bits a row (the jitter); shared, next to nothing.
    let rows = 128 * 500;
    assert!(
        shared.history_bytes() + rows < apart.history_bytes(),
        "shared {} vs apart {} bytes: less than a byte per row saved",
        shared.history_bytes(),
        apart.history_bytes()
    );
    // In a block file too: each distinct stream once, and it loads back shared and exact.
    let mut out = Export::default();
    shared.export_range(i64::MAX, 0..usize::MAX, &mut out, usize::MAX);
    let image = out.sealed.finish();
    let file = file::read_block_file(&image).expect("valid");
    let mut restored = Store::new(limits);
    restored.import(file, i64::MIN);
    restored.finish_import();
    assert_eq!(
        restored.times.sealed.streams_held(),
        shared.times.sealed.streams_held()
    );
    for s in [0, 31, 127] {
        let id = format!("sw{s}");
        assert_eq!(
            series_view(&restored, &id, "bandwidth"),
            series_view(&shared, &id, "bandwidth")
        );
    }
    let mut apart_out = Export::default();
    apart.export_range(i64::MAX, 0..usize::MAX, &mut apart_out, usize::MAX);
    let apart_image = apart_out.sealed.finish();
    assert!(
        image.len() + rows * 3 / 4 < apart_image.len(),
        "block file with shared time streams: {} vs {} bytes",
        image.len(),
        apart_image.len()
    );
}

/// Sealed blocks refer to their time streams by id; expiry gives each reference back, so the
/// table holds the streams of retained blocks only, and none once every block has expired.
#[test]
fn time_streams_go_with_the_last_block_that_holds_them() {
    let limits = BlockLimits::fixed(4096, 20 * S);
    let mut store = Store::new(limits);
    let streams_of_retained = |store: &Store| {
        let mut ids: Vec<Vec<u8>> = store
            .switches
            .iter()
            .flat_map(|s| s.sealed.iter(&store.times.sealed))
            .filter_map(|view| match view.times {
                block::Times::Split(bits, _) => Some(bits.to_vec()),
                block::Times::Interleaved => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    let (mut most, mut most_chunks) = (0, 0);
    for (t, b) in jittered_polls(40, 400, false).iter().enumerate() {
        store.ingest(b);
        if t % 10 == 9 {
            store.evict_before(b.timestamp(0) - 60 * S);
            assert_eq!(
                store.times.sealed.streams_held(),
                streams_of_retained(&store),
                "poll {t}"
            );
            most = most.max(store.times.sealed.streams_held());
            most_chunks = most_chunks.max(store.times.sealed.chunks_held());
        }
    }
    // 400 polls in 20 s blocks, 60 s kept, 32 stagger groups: a few streams per group at a
    // time (~4 blocks retained), not all ~640 of the run.
    assert!((4..=128).contains(&most), "{most} streams held at most");
    // Chunks of blocks ending within 2.5 s of each other, freed as they expire: those of
    // ~80 s of blocks at a time (and a few open), not the ~160 of the whole run.
    assert!(
        (8..=48).contains(&most_chunks),
        "{most_chunks} chunks at most"
    );
    store.evict_before(i64::MAX);
    assert_eq!(store.times.sealed.streams_held(), 0);
    assert_eq!(store.times.sealed.live_records(), 0);
}

/// A block file of version 2 (timestamps interleaved with the values in one stream), built
/// here as the previous writer built it, still loads and decodes exactly.
#[test]
fn block_files_of_version_2_still_load() {
    use super::codec::{BitWriter, TimestampCodec, ValueCodec};
    let rows: Vec<(Micros, [f64; 2])> = (0..50)
        .map(|i| {
            (
                1_700_000_000 * S + i * S + (i * 37) % 250,
                [i as f64 * 1.5, 0.25],
            )
        })
        .collect();
    let mut bits = BitWriter::default();
    let mut ts_codec = TimestampCodec::starting_at(rows[0].0);
    let mut codecs = [ValueCodec::default(), ValueCodec::default()];
    let mut aggs = [MetricAgg::EMPTY; 2];
    for (i, (ts, values)) in rows.iter().enumerate() {
        if i > 0 {
            ts_codec.encode(&mut bits, *ts);
        }
        for ((codec, agg), &v) in codecs.iter_mut().zip(&mut aggs).zip(values) {
            codec.encode(&mut bits, Some(Value::Float(v)));
            agg.add(v);
        }
    }
    let mut body = Vec::new();
    wire::put_varint(&mut body, 2);
    for name in ["bandwidth", "latency"] {
        wire::put_bytes(&mut body, name.as_bytes());
        body.push(MetricKind::Gauge.to_byte());
    }
    wire::put_varint(&mut body, 1);
    wire::put_bytes(&mut body, b"old-switch");
    wire::put_varint(&mut body, 2);
    wire::put_varint(&mut body, 0);
    wire::put_varint(&mut body, 1);
    wire::put_varint(&mut body, 1);
    wire::put_i64(&mut body, rows[0].0);
    wire::put_i64(&mut body, rows[49].0);
    wire::put_varint(&mut body, 50);
    wire::put_varint(&mut body, 2);
    wire::put_varint(&mut body, bits.bit_len());
    for agg in &aggs {
        wire::put_f64(&mut body, agg.min);
        wire::put_f64(&mut body, agg.max);
        wire::put_f64(&mut body, agg.sum);
        wire::put_varint(&mut body, agg.count);
    }
    wire::put_varint(&mut body, 0);
    wire::put_bytes(&mut body, bits.bytes());
    let mut image = b"FTBLK002".to_vec();
    image.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    image.extend_from_slice(&(body.len() as u64).to_le_bytes());
    image.extend_from_slice(&body);

    let mut store = Store::new(BlockLimits::fixed(4096, 600 * S));
    let outcome = store.import(file::read_block_file(&image).expect("a v2 file"), i64::MIN);
    assert_eq!((outcome.blocks, outcome.rows), (1, 50));
    store.finish_import();
    let switch = store.switch("old-switch").expect("loaded");
    let metric = store.metrics().id("bandwidth").expect("metric");
    let mut got = Vec::new();
    store.history(switch, metric, i64::MIN, i64::MAX, &mut |sample| {
        got.push((sample.timestamp, sample.value.as_f64()));
        true
    });
    let want: Vec<(Micros, f64)> = rows.iter().map(|(t, v)| (*t, v[0])).collect();
    assert_eq!(got, want);
}

/// Rows per sealed block of switch `id` after `polls` polls every `interval` of 16 switches.
fn block_rows(limits: BlockLimits, interval: Micros, polls: i64) -> Vec<Vec<u32>> {
    let mut store = Store::new(limits);
    for t in 0..polls {
        let mut b = FeedBatch::with_metrics(&["bandwidth"]);
        for s in 0..16 {
            b.push_row(&format!("sw{s}"), 1_700_000_000 * S + t * interval, &[1.0]);
        }
        store.ingest(&b);
    }
    store
        .switches
        .iter()
        .map(|s| s.sealed.iter(&store.times.sealed).map(|b| b.rows).collect())
        .collect()
}

#[test]
fn blocks_hold_128_rows_at_short_retentions_and_stay_retention_over_8_at_long_ones() {
    let five_minutes = BlockLimits::for_retention(std::time::Duration::from_secs(300));
    let hour = BlockLimits::for_retention(std::time::Duration::from_secs(3600));
    // 1 s polls, 5 min: retention / 8 would be 37 rows; blocks wait for 128.
    let fast = block_rows(five_minutes, S, 700);
    assert!(
        fast.iter().all(|rows| rows[1..].iter().all(|&r| r == 128)),
        "{fast:?}"
    );
    // The first blocks are staggered: 16 switches do not all seal on the same poll.
    let firsts: std::collections::BTreeSet<u32> = fast.iter().map(|rows| rows[0]).collect();
    assert!(firsts.len() >= 8, "first blocks {firsts:?}");
    // 30 s polls, 5 min: 128 rows would take an hour; blocks seal at retention / 2 (150 s).
    let slow = block_rows(five_minutes, 30 * S, 60);
    assert!(
        slow.iter().all(|rows| rows[1..].iter().all(|&r| r == 6)),
        "{slow:?}"
    );
    // 1 s polls, 1 h: retention / 8 (450 s) already holds more than 128 rows.
    let long = block_rows(hour, S, 2000);
    assert!(
        long.iter().all(|rows| rows[1..].iter().all(|&r| r == 451)),
        "{long:?}"
    );
}

#[test]
fn an_export_holds_the_lock_bounded_by_time_and_switches() {
    let mut store = Store::new(LIMITS);
    let batch = one_poll(1000);
    store.ingest(&batch);
    let handle = StoreHandle::new(store);
    let export =
        |hold| handle.export_holding(2 * S, usize::MAX, Export::default(), &mut || {}, hold);
    // No time at all: one step of switches per hold.
    let (_, timing) = export(Duration::ZERO);
    assert_eq!(
        timing.holds,
        1000_u64.div_ceil(export::EXPORT_STEP_SWITCHES as u64)
    );
    // All the time in the world: the cap on switches still ends each hold.
    let (_, timing) = export(Duration::from_secs(3600));
    assert_eq!(
        timing.holds,
        1000_u64.div_ceil(export::EXPORT_CHUNK_SWITCHES as u64)
    );
}

#[test]
fn an_export_gives_way_to_a_batch_being_stored() {
    // Three chunks of switches; a batch is "being stored" the whole time, so each chunk
    // waits the longest it may (`GIVE_WAY_MAX`) before taking the lock, and still runs.
    let mut store = Store::new(LIMITS);
    let batch = one_poll(700);
    let rows = store.ingest(&batch).accepted;
    let handle = StoreHandle::new(store);
    handle.storing.set(true);
    let started = std::time::Instant::now();
    let (export, _) = handle.export_within(2 * S, usize::MAX, Export::default(), &mut || {});
    let waited = started.elapsed();
    handle.storing.set(false);
    assert_eq!(
        export.sealed.samples() + export.checkpoint.samples(),
        3 * rows
    );
    // A lower bound only: a slow machine makes it longer, never shorter.
    assert!(
        waited >= Duration::from_millis(300),
        "the export waited {waited:?}"
    );
}

#[test]
fn series_are_not_renumbered_under_an_export() {
    // 5000 switches (two chunks of the export), the first 100 of which stopped reporting
    // long ago: expiry empties them during the export, and forgetting them then would move
    // every later switch down under the export, which would skip some.
    let mut store = Store::new(BlockLimits::fixed(4096, 10 * S));
    let stopped = (0..100).map(|i| format!("gone{i}"));
    let live: Vec<String> = (0..4900).map(|i| format!("live{i}")).collect();
    let mut old = FeedBatch::with_metrics(&["bandwidth"]);
    for id in stopped {
        old.push_row(&id, S, &[1.0]);
    }
    // Their rows are exported with the first chunk, before they expire.
    let mut rows = store.ingest(&old).accepted;
    for t in 0..3 {
        let mut batch = FeedBatch::with_metrics(&["bandwidth"]);
        for id in &live {
            batch.push_row(id, 1000 * S + t * S, &[t as f64]);
        }
        rows += store.ingest(&batch).accepted;
    }
    let handle = StoreHandle::new(store);
    let mut expired = false;
    // Whole chunks of 256 switches, whatever the time: the stopped ones in the first.
    let whole_chunks = Duration::from_secs(3600);
    let mut expire_once = || {
        if !expired {
            expired = handle.expire(500 * S) > 0;
        }
    };
    let (export, _) = handle.export_holding(
        1003 * S,
        usize::MAX,
        Export::default(),
        &mut expire_once,
        whole_chunks,
    );
    assert!(expired, "the stopped switches expired during the export");
    assert_eq!(export.sealed.samples() + export.checkpoint.samples(), rows);
    // Emptied, and forgotten by an expiry scan after the export.
    assert_eq!(handle.read().dead_series(), 100);
    assert_eq!(handle.read().n_switches(), 5000);
}

/// What every one of a million switches holds inline: a byte more here is a megabyte there
/// (`million` prints the whole account).
#[test]
fn a_switch_holds_at_most_128_bytes_inline() {
    assert!(
        std::mem::size_of::<SwitchSeries>() <= 128,
        "{} bytes",
        std::mem::size_of::<SwitchSeries>()
    );
}

/// Switches whose clocks differ by minutes end their blocks in many buckets at once (the
/// chunks of sealed blocks are by end time, 2.5 s here): every retained block still reads
/// back, every chunk held holds a retained block (none lingers empty), and none is left once
/// all blocks have expired.
#[test]
fn skewed_switch_clocks_spread_blocks_over_many_chunks_and_lose_none() {
    let limits = BlockLimits::fixed(4096, 20 * S);
    let bucket = 20 * S / 8;
    let mut store = Store::new(limits);
    let n = 40;
    let mut most_buckets = 0;
    for t in 0..700i64 {
        let mut batch = FeedBatch::with_metrics(&["bandwidth", "latency", "errors"]);
        for s in 0..n {
            // Clocks 0 to 273 s apart.
            let ts = 1_700_000_000 * S + t * S + s as i64 * 7 * S;
            batch.push_row(&format!("sw{s}"), ts, &[t as f64, 0.5, (t % 3) as f64]);
        }
        store.ingest(&batch);
        if t % 10 == 9 {
            // 300 s kept by the newest clock: every switch keeps some.
            let cutoff = 1_700_000_000 * S + t * S + 273 * S - 300 * S;
            store.evict_before(cutoff);
            let mut buckets = std::collections::BTreeSet::new();
            let mut blocks_held = 0;
            for series in &store.switches {
                let blocks: Vec<BlockView> = series.sealed.iter(&store.times.sealed).collect();
                assert_eq!(blocks.len(), series.sealed.len());
                blocks_held += blocks.len();
                for block in &blocks {
                    assert!(block.last_ts >= cutoff);
                    buckets.insert(block.last_ts.div_euclid(bucket));
                    let mut decoded = 0;
                    block
                        .for_each_row(|_, _| {
                            decoded += 1;
                            true
                        })
                        .expect("decodes");
                    assert_eq!(decoded, block.rows);
                }
            }
            let chunks = store.times.sealed.chunks_held();
            assert!(
                (buckets.len()..=blocks_held).contains(&chunks),
                "{chunks} chunks for {blocks_held} blocks in {} buckets",
                buckets.len()
            );
            most_buckets = most_buckets.max(buckets.len());
        }
    }
    // Blocks retained end over ~570 s (273 s of skew + 300 s kept): 111 buckets at once
    // (of the 40 switches' 20 s blocks), against ~35 with one clock.
    assert!(most_buckets >= 100, "{most_buckets} buckets at most");
    store.evict_before(i64::MAX);
    assert_eq!(store.times.sealed.chunks_held(), 0);
    assert_eq!(store.times.sealed.streams_held(), 0);
}
