//! The metrics server assembled: pollers → channel → store thread → published views → API
//! workers, plus the optional in-process generator of `--demo`. Every thread is named, and
//! [`MetricsServer::shutdown`] stops and joins them all.

pub mod access;
pub mod api;
pub mod cardinality;
pub mod ingest;
pub mod names;
pub mod persist;
pub mod poller;
pub mod query;
pub mod remote_write;
pub mod stats;
pub mod store;
pub mod stream;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use self::access::{Auth, RateLimiter};
use self::api::Api;
use self::ingest::{Outlets, Persistence};
use self::names::NameBook;
use self::persist::{DataDirError, FsyncPolicy, PersistConfig};
use self::poller::PollerConfig;
use self::remote_write::RemoteWriter;
use self::stats::{ApiStats, IngestStats};
use self::store::{BlockLimits, Store, StoreHandle};
use self::stream::Hub;
use crate::generator::service::{FeedFormat, GeneratorConfig, GeneratorService};
use crate::shared::feed::{Format, SourceOptions};
use crate::shared::http::{self, ConnectionLimits, HttpError, HttpMonitor, HttpServer};
use crate::shared::process;
use crate::shared::timestamp;
use crate::shared::watch::Watch;

/// Everything the metrics server needs to run. Its defaults, `--help` and parsing come from
/// the flag table (`crate::config`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: String,
    /// Feed URLs, one poller each.
    pub sources: Vec<String>,
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_feed_bytes: u64,
    pub max_age: Duration,
    pub retention: Duration,
    pub workers: usize,
    /// Also run a generator in-process, listening where the first source points.
    pub demo: bool,
    /// Push every accepted sample to this Prometheus remote-write receiver.
    pub remote_write: Option<String>,
    /// Bearer tokens the API requires (one per line, plain or `sha256:<hex>`).
    pub auth_token_file: Option<std::path::PathBuf>,
    /// Allow a non-loopback `--listen` without tokens.
    pub insecure_no_auth: bool,
    /// Requests per second per client (token, or address without auth), and the burst.
    pub rate_limit: Option<(f64, f64)>,
    /// Where history persists (WAL + block files); `None` keeps it in memory only.
    pub data_dir: Option<std::path::PathBuf>,
    /// Forces memory-only history even when a data directory is configured.
    pub in_memory: bool,
    pub fsync: FsyncPolicy,
    pub compaction_interval: Duration,
    /// Bounds on every API connection.
    pub http: ConnectionLimits,
    /// Prometheus sources: label sets that key a series, tried in order.
    pub key_labels: Vec<Vec<String>>,
    /// Columns or metric names that are counters whatever their names say.
    pub counter_columns: Vec<String>,
    /// Readable names of ports and nodes (re-read on SIGHUP).
    pub names: Option<std::path::PathBuf>,
    /// Series and metrics each source may make the server hold.
    pub limits: cardinality::Limits,
    /// Live `/telemetry/stream` subscribers at most.
    pub max_subscribers: usize,
    /// Keep only this shard of the fabric's series (`--shard I/N`).
    pub shard: Option<crate::shared::feed::key::Shard>,
}

impl ServerConfig {
    /// Durability settings, unless history is to stay in memory only.
    pub fn persist(&self) -> Option<PersistConfig> {
        match (&self.data_dir, self.in_memory) {
            (Some(dir), false) => Some(PersistConfig {
                data_dir: dir.clone(),
                fsync: self.fsync,
                compaction_interval: self.compaction_interval,
                retention: self.retention,
            }),
            _ => None,
        }
    }

    /// The security and storage settings in force, in one line for the start-up log, so an
    /// operator sees at a glance what a config file and flags added up to.
    pub fn settings_summary(&self) -> String {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        let auth = match (&self.auth_token_file, self.insecure_no_auth) {
            (Some(path), _) => format!("bearer tokens from {}", path.display()),
            (None, true) => "off (--insecure-no-auth)".to_string(),
            (None, false) => "off (loopback only)".to_string(),
        };
        let rate_limit = match self.rate_limit {
            Some((rate, burst)) => format!("{rate}/s per client, burst {burst}"),
            None => "off".to_string(),
        };
        let history = match self.persist() {
            Some(p) => format!(
                "on disk in {} (fsync {}, compaction every {})",
                p.data_dir.display(),
                p.fsync.name(),
                human(p.compaction_interval)
            ),
            None => "memory only (lost on restart)".to_string(),
        };
        let remote_write = self.remote_write.as_deref().unwrap_or("off");
        format!(
            "auth: {auth}; rate limit: {rate_limit}; history: {history}, retention {}; \
             remote write: {remote_write}",
            human(self.retention)
        )
    }
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    Http(HttpError),
    /// Unsafe or unusable access settings.
    Access(String),
    Demo(String),
    /// A `--source` that cannot be polled.
    Source(String),
    Names(names::NamesError),
    Thread(std::io::Error),
    DataDir(DataDirError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Http(e) => write!(f, "{e}"),
            StartError::Access(why) => write!(f, "{why}"),
            StartError::Demo(why) => write!(f, "cannot start the demo generator: {why}"),
            StartError::Source(why) => write!(f, "bad --source: {why}"),
            StartError::Names(why) => write!(f, "cannot use --names: {why}"),
            StartError::Thread(e) => write!(f, "cannot start a thread: {e}"),
            StartError::DataDir(e) => write!(f, "cannot use the data directory: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<HttpError> for StartError {
    fn from(e: HttpError) -> StartError {
        StartError::Http(e)
    }
}

/// A running metrics server.
pub struct MetricsServer {
    http: HttpServer,
    /// Dropping it disconnects every background thread's stop channel.
    stop: Sender<()>,
    threads: Vec<JoinHandle<()>>,
    demo: Option<GeneratorService>,
    sources: Vec<String>,
    remote: Option<RemoteWriter>,
    auth: Option<Arc<Auth>>,
    names: Arc<NameBook>,
    hub: Arc<Hub>,
    /// Joined after the store thread, whose exit lets it flush and end.
    persist_thread: Option<JoinHandle<()>>,
    watch: Arc<Watch>,
}

/// Opens durable history (see [`persist::open`]) and says what recovery did.
fn open_data_dir(
    config: &PersistConfig,
    store: &mut Store,
    watch: &Arc<Watch>,
) -> Result<persist::Opened, StartError> {
    let retention = crate::shared::timestamp::duration_micros(config.retention);
    let cutoff = timestamp::now_micros().saturating_sub(retention);
    let opened = persist::open(config, store, cutoff, watch).map_err(StartError::DataDir)?;
    let report = &opened.recovery;
    log::info!(
        data_dir = config.data_dir.display().to_string().as_str(),
        blocks = report.blocks_loaded,
        block_rows = report.block_rows_loaded,
        checkpoint_rows = report.checkpoint_rows_replayed,
        wal_rows = report.wal_rows_replayed,
        seconds = report.seconds;
        "recovered {} block files ({} rows), {} checkpoint rows and {} WAL rows in {:.3} s; fsync {}",
        report.block_files_loaded,
        report.block_rows_loaded,
        report.checkpoint_rows_replayed,
        report.wal_rows_replayed,
        report.seconds,
        config.fsync.name()
    );
    Ok(opened)
}

/// Without tokens the API may only listen on loopback: checked before binding anything.
fn refuse_open_non_loopback(listen: &str) -> Result<(), StartError> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| StartError::Access(format!("cannot resolve --listen {listen}: {e}")))?
        .collect();
    if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(StartError::Access(format!(
            "refusing to serve the API on {open} without --auth-token-file: anyone who reaches it could read it \
             (add --insecure-no-auth if that is intended, or put it behind the TLS proxy in docs/OPERATIONS.md)"
        )));
    }
    Ok(())
}

/// Starts the demo generator where `source` points, simulating what its path serves
/// (`/counters`: the classic feed; `/csv/metrics` or `/metrics`: a UFM Telemetry fabric);
/// returns it and the URL that reaches it (the port differs when the source asked for port 0).
fn start_demo(source: &str, watch: &Arc<Watch>) -> Result<(GeneratorService, String), StartError> {
    let (url, _) = Format::split_source(source).map_err(StartError::Demo)?;
    let fragment = &source[url.len()..];
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| StartError::Demo(format!("{source:?}: {e}")))?;
    let format = [FeedFormat::Classic, FeedFormat::Ufm]
        .into_iter()
        .find(|f| f.paths().contains(&uri.path()))
        .ok_or_else(|| {
            StartError::Demo(format!(
                "the demo generator serves /counters (classic) or /csv/metrics and /metrics (UFM Telemetry); --source names {:?}",
                uri.path()
            ))
        })?;
    let host = uri.host().unwrap_or("127.0.0.1");
    let port = uri.port_u16().unwrap_or(80);
    let listen = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let config = GeneratorConfig {
        listen,
        format,
        ..GeneratorConfig::default()
    };
    let generator =
        GeneratorService::start(&config, watch).map_err(|e| StartError::Demo(e.to_string()))?;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!(
        "http://{}{}{query}{fragment}",
        generator.local_addr(),
        uri.path()
    );
    Ok((generator, url))
}

impl MetricsServer {
    pub fn start(config: &ServerConfig) -> Result<MetricsServer, StartError> {
        let auth = match &config.auth_token_file {
            Some(path) => Some(Arc::new(
                Auth::load(path).map_err(|e| StartError::Access(e.to_string()))?,
            )),
            None => None,
        };
        if auth.is_none() && !config.insecure_no_auth {
            refuse_open_non_loopback(&config.listen)?;
        }
        let names = Arc::new(match &config.names {
            Some(path) => NameBook::load(path).map_err(StartError::Names)?,
            None => NameBook::empty(),
        });
        // A vital thread's panic stops the process the way SIGTERM does; `main` then sees
        // `fatal()` and exits non-zero.
        let watch = Watch::new(process::stop_process);
        let mut store = Store::new(BlockLimits::for_retention(config.retention));
        let durable = match config.persist() {
            Some(persist_config) => Some((
                open_data_dir(&persist_config, &mut store, &watch)?,
                persist_config,
            )),
            None => None,
        };
        let listener = http::bind(&config.listen)?;
        let mut sources = config.sources.clone();
        let demo = match (config.demo, sources.first_mut()) {
            (true, Some(first)) => {
                let (generator, url) = start_demo(first, &watch)?;
                log::info!("demo generator serving {url}");
                *first = url;
                Some(generator)
            }
            _ => None,
        };
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (batches, batches_rx) = crossbeam_channel::bounded(2 * sources.len().max(1));
        let store = StoreHandle::new(store);
        let remote = match &config.remote_write {
            Some(url) => Some(
                RemoteWriter::start(url, config.max_age, stop_rx.clone(), &watch)
                    .map_err(StartError::Thread)?,
            ),
            None => None,
        };
        let mut ingest = IngestStats::with_remote_write(
            &sources,
            remote
                .as_ref()
                .map(|r| (r.url.clone(), Arc::clone(&r.stats))),
        );
        let mut persist_thread = None;
        let mut persistence = None;
        if let Some((opened, persist_config)) = durable {
            ingest = ingest.with_storage(opened.stats);
            persist_thread = Some(opened.thread);
            persistence = Some(Persistence {
                disk: opened.disk,
                compaction_interval: persist_config.compaction_interval,
            });
        }
        // What recovery loaded counts from the first answer, not the store's first tick.
        ingest.set_retained_rows(store.read().retained_rows());
        let ingest = Arc::new(ingest);
        let mut threads = Vec::new();
        let hub = Hub::new(config.max_subscribers, Arc::clone(&names));
        let (stream_outlet, stream_thread) =
            stream::spawn(Arc::clone(&hub), stop_rx.clone(), &watch).map_err(StartError::Thread)?;
        threads.push(stream_thread);
        threads.push(
            ingest::spawn(
                store.clone(),
                config.retention,
                batches_rx,
                stop_rx.clone(),
                Arc::clone(&ingest),
                Outlets {
                    remote: remote.as_ref().map(|r| r.queue.clone()),
                    persistence,
                    stream: Some(stream_outlet),
                },
                &watch,
            )
            .map_err(StartError::Thread)?,
        );
        for (source, spec) in sources.iter().enumerate() {
            let (url, format) = Format::split_source(spec).map_err(StartError::Source)?;
            let poller_config = PollerConfig {
                url: url.to_string(),
                options: SourceOptions {
                    format,
                    key_labels: config.key_labels.clone(),
                    counter_columns: config.counter_columns.clone(),
                    shard: config.shard,
                },
                limits: config.limits,
                retention: config.retention,
                interval: config.poll_interval,
                timeout: config.poll_timeout,
                connect_timeout: config.connect_timeout,
                max_body_bytes: config.max_feed_bytes,
                max_age: config.max_age,
            };
            let handle = poller::spawn(
                source,
                poller_config,
                batches.clone(),
                Arc::clone(&ingest),
                stop_rx.clone(),
                &watch,
            )
            .map_err(StartError::Thread)?;
            threads.push(handle);
        }
        let limiter = config
            .rate_limit
            .map(|(rate, burst)| RateLimiter::new(rate, burst));
        let monitor = HttpMonitor::new();
        let api = Api::new(store, Arc::new(ApiStats::new()), ingest, config.max_age)
            .with_access(auth.clone(), limiter)
            .with_names(Arc::clone(&names))
            .with_stream(Arc::clone(&hub))
            .with_http_monitor(Arc::clone(&monitor))
            .with_watch(Arc::clone(&watch));
        let http = HttpServer::start(
            listener,
            "api",
            config.workers,
            config.http,
            Arc::new(api),
            monitor,
        )?;
        Ok(MetricsServer {
            http,
            stop,
            threads,
            demo,
            sources,
            remote,
            auth,
            names,
            hub,
            persist_thread,
            watch,
        })
    }

    /// The server's threads and what became of them; `fatal()` says whether a vital thread's
    /// panic is what stopped it.
    pub fn watch(&self) -> Arc<Watch> {
        Arc::clone(&self.watch)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// The feed URLs being polled (with the demo generator's real port filled in).
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Re-reads the token file (SIGHUP): the number of tokens now in force, or why the old
    /// ones stay. `None` without `--auth-token-file`.
    pub fn reload_tokens(&self) -> Option<Result<usize, access::AccessError>> {
        self.auth.as_ref().map(|auth| auth.reload())
    }

    /// Re-reads the names file (SIGHUP): the names now in force, or why the old ones stay.
    /// `None` without `--names`.
    pub fn reload_names(&self) -> Option<Result<usize, names::NamesError>> {
        self.names.reload()
    }

    /// Blocks until the server's background threads end (they run until shutdown).
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
        if let Some(thread) = self.persist_thread {
            let _ = thread.join();
        }
    }

    /// Stops answering, stops polling, and joins every thread.
    pub fn shutdown(self) {
        // Streams end first (each after what it has queued), so their connections close
        // before the HTTP server waits for answers in flight.
        self.hub.close();
        self.http.shutdown();
        drop(self.stop);
        for thread in self.threads {
            let _ = thread.join();
        }
        if let Some(thread) = self.persist_thread {
            let _ = thread.join();
        }
        if let Some(remote) = self.remote {
            remote.join();
        }
        if let Some(generator) = self.demo {
            generator.shutdown();
        }
    }
}
