//! `metrics-server`: parses flags and runs the server until SIGTERM/SIGINT; see
//! `fabric_telemetry::server`.

use std::process::ExitCode;

use fabric_telemetry::config::{self, Command};
use fabric_telemetry::server::MetricsServer;
use fabric_telemetry::shared::{logging, process};

fn main() -> ExitCode {
    let (config, log) = match config::parse_server_args(std::env::args_os().skip(1)) {
        Ok(Command::Run { config, log }) => (config, log),
        Ok(Command::Help) => {
            print!("{}", config::server_help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("metrics-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("metrics-server: {e}\nTry 'metrics-server --help'.");
            return ExitCode::from(2);
        }
    };
    logging::init(log);
    // Before any thread exists, so every thread inherits the signal mask.
    process::prepare_process();
    let server = match MetricsServer::start(&config) {
        Ok(server) => server,
        Err(e) => {
            log::error!("{e}");
            eprintln!("metrics-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "metrics-server listening on http://{} polling {}",
        server.local_addr(),
        server.sources().join(", ")
    );
    log::info!("settings in force: {}", config.settings_summary());
    let stopped = process::run_until_stopped(|| {
        match server.reload_tokens() {
            Some(Ok(n)) => log::info!("SIGHUP: token file re-read, {n} tokens in force"),
            Some(Err(why)) => log::error!("SIGHUP: {why}; the previous tokens stay in force"),
            None => log::info!("SIGHUP: no token file to re-read (no --auth-token-file)"),
        }
        match server.reload_names() {
            Some(Ok(n)) => log::info!("SIGHUP: names file re-read, {n} ports and nodes named"),
            Some(Err(why)) => log::error!("SIGHUP: names file: {why}; the previous names stay"),
            None => {}
        }
    });
    match stopped {
        Ok(signal) => log::info!("{signal}: finishing requests in flight and stopping"),
        Err(e) => {
            log::error!("cannot wait for signals ({e}); running until killed");
            server.wait();
            return ExitCode::FAILURE;
        }
    }
    let watch = server.watch();
    server.shutdown();
    if let Some(thread) = watch.fatal() {
        log::error!(
            "metrics-server stopped because its {thread} thread panicked; exiting non-zero so a supervisor restarts it"
        );
        return ExitCode::FAILURE;
    }
    log::info!("metrics-server stopped cleanly");
    ExitCode::SUCCESS
}
