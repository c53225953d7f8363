//! The data directory on disk: its layout, the lock that keeps it to one server, and crash
//! recovery (block files loaded, damaged ones set aside, the WAL replayed with a torn or
//! corrupt tail cut).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::wal;
use crate::server::store::file::read_block_file;
use crate::server::store::Store;
use std::time::Instant;

use crate::shared::timestamp::Micros;

/// Why the data directory cannot be used.
#[derive(Debug)]
pub enum DataDirError {
    Io {
        path: PathBuf,
        error: io::Error,
    },
    /// Another process holds the lock.
    Locked {
        path: PathBuf,
        holder: String,
    },
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            DataDirError::Locked { path, holder } => write!(
                f,
                "data directory {} is in use by another metrics-server ({holder}); \
                 two servers must not share one data directory",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DataDirError {}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |error| DataDirError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A file of the data directory the persist thread keeps track of.
#[derive(Debug, Clone)]
pub(super) struct TrackedFile {
    /// Its sequence number: segments opened after a compaction's cut have larger ones.
    pub(super) seq: u64,
    pub(super) path: PathBuf,
    pub(super) bytes: u64,
    /// Newest timestamp in it, for block files (retention deletes a file once it has
    /// expired); `None` for WAL segments and checkpoints, which go by sequence number.
    pub(super) max_ts: Option<Micros>,
}

/// An opened, locked data directory.
#[derive(Debug)]
pub struct DataDir {
    pub(super) root: PathBuf,
    _lock: File,
    pub(super) wal_dir: PathBuf,
    pub(super) blocks_dir: PathBuf,
    pub(super) segments: Vec<TrackedFile>,
    pub(super) block_files: Vec<TrackedFile>,
    /// Checkpoint files: the newest continues the block files; older ones wait to be deleted.
    pub(super) checkpoints: Vec<TrackedFile>,
    pub(super) next_seq: u64,
}

/// Checkpoints sit beside the block files as `<seq>.ckpt`: the same format, holding every
/// block not yet in a block file when it was written (see `crate::server::store::Export`).
pub(super) const CHECKPOINT_EXT: &str = "ckpt";

/// What recovery found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryReport {
    pub block_files_loaded: u64,
    pub blocks_loaded: u64,
    pub block_rows_loaded: u64,
    pub block_files_quarantined: u64,
    pub blocks_expired: u64,
    pub blocks_conflicting: u64,
    pub checkpoints_loaded: u64,
    pub checkpoint_rows_replayed: u64,
    /// Checkpoint rows already in block files (the blocks sealed after it was written).
    pub checkpoint_rows_already_stored: u64,
    pub checkpoints_quarantined: u64,
    pub wal_segments_read: u64,
    pub wal_records_replayed: u64,
    pub wal_rows_replayed: u64,
    /// Replayed rows already in blocks (expected after a compaction) or out of order.
    pub wal_rows_already_stored: u64,
    pub wal_records_skipped: u64,
    pub wal_tails_cut: u64,
    pub seconds: f64,
}

/// Takes the lock or says who holds it.
fn lock(path: &Path) -> Result<File, DataDirError> {
    use std::os::fd::AsRawFd;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error(path))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(DataDirError::Locked {
                path: path.parent().unwrap_or(path).to_path_buf(),
                holder: format!("pid {}", holder.trim()),
            });
        }
        return Err(io_error(path)(error));
    }
    file.set_len(0).map_err(io_error(path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_error(path))?;
    Ok(file)
}

/// `<16 hex digits>.<ext>` files of `dir`, by sequence number.
pub(super) fn list_numbered(dir: &Path, ext: &str) -> Result<Vec<(u64, PathBuf)>, DataDirError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(ext).and_then(|s| s.strip_suffix('.')) else {
            continue;
        };
        if let Ok(seq) = u64::from_str_radix(stem, 16) {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

pub(super) fn numbered(dir: &Path, seq: u64, ext: &str) -> PathBuf {
    dir.join(format!("{seq:016x}.{ext}"))
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl DataDir {
    /// Creates the layout if needed and takes the lock.
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        let wal_dir = root.join("wal");
        let blocks_dir = root.join("blocks");
        for dir in [root, &wal_dir, &blocks_dir] {
            fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let lock = lock(&root.join("LOCK"))?;
        // A temp file is a block file whose write never finished: its rows are still in the WAL.
        for entry in fs::read_dir(&blocks_dir)
            .map_err(io_error(&blocks_dir))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(DataDir {
            root: root.to_path_buf(),
            _lock: lock,
            wal_dir,
            blocks_dir,
            segments: Vec::new(),
            block_files: Vec::new(),
            checkpoints: Vec::new(),
            next_seq: 0,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Loads block files into `store`, then replays checkpoints and the WAL into it. Rows
    /// older than `cutoff` are not loaded. Damage is logged, set aside or cut, never fatal.
    pub fn recover(
        &mut self,
        store: &mut Store,
        cutoff: Micros,
    ) -> Result<RecoveryReport, DataDirError> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        let block_files = list_numbered(&self.blocks_dir, "blk")?;
        let checkpoints = list_numbered(&self.blocks_dir, CHECKPOINT_EXT)?;
        let segments = list_numbered(&self.wal_dir, "wal")?;
        self.next_seq = block_files
            .iter()
            .chain(&checkpoints)
            .chain(&segments)
            .map(|(seq, _)| seq + 1)
            .max()
            .unwrap_or(0);
        for (seq, path) in block_files {
            self.load_block_file(seq, path, store, cutoff, &mut report);
        }
        store.finish_import();
        // Oldest first, all of them: a newer one continues an older one's switches, and if
        // the newest is damaged an older one still gives back what it holds.
        for (seq, path) in checkpoints {
            self.replay_checkpoint(seq, path, store, &mut report);
        }
        for (seq, path) in segments {
            self.replay_segment(seq, path, store, &mut report);
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    fn load_block_file(
        &mut self,
        seq: u64,
        path: PathBuf,
        store: &mut Store,
        cutoff: Micros,
        report: &mut RecoveryReport,
    ) {
        let Some((file, bytes)) = read_or_set_aside(&path, "block file", "blk.corrupt") else {
            report.block_files_quarantined += 1;
            return;
        };
        let max_ts = file.max_last_ts();
        let outcome = store.import(file, cutoff);
        report.block_files_loaded += 1;
        report.blocks_loaded += outcome.blocks;
        report.block_rows_loaded += outcome.rows;
        report.blocks_expired += outcome.expired_blocks;
        report.blocks_conflicting += outcome.conflicting_blocks;
        if outcome.conflicting_blocks > 0 {
            log::error!(
                "block file {}: {} blocks overlap or contradict earlier files and were not loaded",
                path.display(),
                outcome.conflicting_blocks
            );
        }
        self.block_files.push(TrackedFile {
            seq,
            path,
            bytes,
            max_ts,
        });
    }

    fn replay_checkpoint(
        &mut self,
        seq: u64,
        path: PathBuf,
        store: &mut Store,
        report: &mut RecoveryReport,
    ) {
        // Rows stored before a damaged checkpoint and in no block file are lost with it.
        let Some((file, bytes)) = read_or_set_aside(&path, "checkpoint", "ckpt.corrupt") else {
            report.checkpoints_quarantined += 1;
            return;
        };
        let outcome = store.replay_checkpoint(file);
        report.checkpoints_loaded += 1;
        report.checkpoint_rows_replayed += outcome.rows_replayed;
        report.checkpoint_rows_already_stored += outcome.rows_already_stored;
        if outcome.corrupt_blocks > 0 {
            log::error!(
                "checkpoint {}: {} blocks would not decode to the end; their rows up to the damage were kept",
                path.display(),
                outcome.corrupt_blocks
            );
        }
        self.checkpoints.push(TrackedFile {
            seq,
            path,
            bytes,
            max_ts: None,
        });
    }

    /// Replays a WAL segment record by record (one record in memory at a time, however
    /// large the segment), cutting a torn or corrupt tail off the file.
    fn replay_segment(
        &mut self,
        seq: u64,
        path: PathBuf,
        store: &mut Store,
        report: &mut RecoveryReport,
    ) {
        let opened = File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f)));
        let (len, file) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                log::warn!(
                    "cannot read WAL segment {}: {e}; skipping it",
                    path.display()
                );
                return;
            }
        };
        let mut reader = wal::SegmentReader::new(io::BufReader::with_capacity(1 << 20, file), len);
        report.wal_segments_read += 1;
        while let Some(batch) = reader.next_batch() {
            let outcome = store.ingest(&batch);
            report.wal_records_replayed += 1;
            report.wal_rows_replayed += outcome.accepted;
            report.wal_rows_already_stored += batch.len() as u64 - outcome.accepted;
        }
        report.wal_records_skipped += reader.skipped_records;
        if reader.skipped_records > 0 {
            log::warn!(
                "WAL segment {}: {} corrupt records skipped (their rows are lost)",
                path.display(),
                reader.skipped_records
            );
        }
        let mut kept = len;
        if let Some(damage) = &reader.damage {
            report.wal_tails_cut += 1;
            kept = reader.good_len as u64;
            let cut = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(kept).and_then(|()| f.sync_all()));
            log::warn!(
                "WAL segment {}: {damage}; {} bytes after byte {} cut off{}",
                path.display(),
                len - kept,
                kept,
                match cut {
                    Ok(()) => String::new(),
                    Err(e) => format!(" (in memory only: truncating failed: {e})"),
                }
            );
        }
        self.segments.push(TrackedFile {
            seq,
            path,
            bytes: kept,
            max_ts: None,
        });
    }

    pub(super) fn disk_bytes(&self) -> u64 {
        self.segments
            .iter()
            .chain(&self.block_files)
            .chain(&self.checkpoints)
            .map(|f| f.bytes)
            .sum()
    }
}

/// Reads a file in the block-file format (a block file or a checkpoint) and its size; a
/// damaged one is renamed to `*.{aside_ext}` and logged (`what` names it), and `None` returned:
/// nothing of a file that fails its checksum is ever served.
fn read_or_set_aside(
    path: &Path,
    what: &str,
    aside_ext: &str,
) -> Option<(crate::server::store::file::BlockFile, u64)> {
    let loaded = fs::read(path).map_err(|e| e.to_string()).and_then(|bytes| {
        read_block_file(&bytes)
            .map(|file| (file, bytes.len() as u64))
            .map_err(|e| e.to_string())
    });
    let why = match loaded {
        Ok(loaded) => return Some(loaded),
        Err(why) => why,
    };
    let aside = path.with_extension(aside_ext);
    let moved = match fs::rename(path, &aside) {
        Ok(()) => format!("moved aside to {}", aside.display()),
        Err(e) => format!("could not move it aside ({e}), ignoring it"),
    };
    log::error!(
        "{what} {} is damaged ({why}); {moved}; serving the rest",
        path.display()
    );
    None
}
