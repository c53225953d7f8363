//! `telemetry-generator`: parses flags and serves the simulated feed until SIGTERM/SIGINT;
//! see `fabric_telemetry::generator::service`.

use std::process::ExitCode;

use fabric_telemetry::config::{self, Command};
use fabric_telemetry::generator::service::GeneratorService;
use fabric_telemetry::shared::watch::Watch;
use fabric_telemetry::shared::{logging, process};

fn main() -> ExitCode {
    let (config, log) = match config::parse_generator_args(std::env::args_os().skip(1)) {
        Ok(Command::Run { config, log }) => (config, log),
        Ok(Command::Help) => {
            print!("{}", config::generator_help());
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
    // Before any thread exists, so every thread inherits the signal mask.
    process::prepare_process();
    let watch = Watch::new(process::stop_process);
    let service = match GeneratorService::start(&config, &watch) {
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
    match process::run_until_stopped(|| log::info!("SIGHUP: nothing to reload")) {
        Ok(signal) => log::info!("{signal}: stopping"),
        Err(e) => {
            log::error!("cannot wait for signals ({e}); running until killed");
            service.wait();
            return ExitCode::FAILURE;
        }
    }
    service.shutdown();
    if let Some(thread) = watch.fatal() {
        log::error!("telemetry-generator stopped because its {thread} thread panicked");
        return ExitCode::FAILURE;
    }
    log::info!("telemetry-generator stopped cleanly");
    ExitCode::SUCCESS
}
