//! `telemetry-generator`: parses flags and serves the simulated feed until SIGTERM/SIGINT;
//! see `fabric_telemetry::generator_http`.

use std::process::ExitCode;

use fabric_telemetry::config::{self, Command};
use fabric_telemetry::generator_http::GeneratorService;
use fabric_telemetry::{logging, signals};

fn main() -> ExitCode {
    let (config, log) = match config::parse_generator_args(std::env::args_os().skip(1)) {
        Ok(Command::Run { config, log }) => (config, log),
        Ok(Command::Help) => {
            print!("{}", config::GENERATOR_HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("telemetry-generator {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("telemetry-generator: {e}\nTry 'telemetry-generator --help'.");
            return ExitCode::from(2);
        }
    };
    logging::init(log);
    match fabric_telemetry::http::raise_fd_limit() {
        Ok(limit) => log::debug!("open-file limit {limit}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    if let Err(e) = signals::block_termination() {
        log::warn!("cannot block SIGTERM/SIGINT ({e}): they will end the process at once");
    }
    let service = match GeneratorService::start(&config) {
        Ok(service) => service,
        Err(e) => {
            log::error!("{e}");
            eprintln!("telemetry-generator: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "telemetry-generator listening on http://{}/counters ({} switches every {})",
        service.local_addr(),
        config.n_switches,
        humantime::format_duration(config.interval)
    );
    loop {
        match signals::wait_for_termination() {
            Ok(signals::Termination::Hangup) => log::info!("SIGHUP: nothing to reload"),
            Ok(signal) => {
                log::info!("{signal}: stopping");
                break;
            }
            Err(e) => {
                log::error!("cannot wait for signals ({e}); running until killed");
                service.wait();
                return ExitCode::FAILURE;
            }
        }
    }
    service.shutdown();
    log::info!("telemetry-generator stopped cleanly");
    ExitCode::SUCCESS
}
