//! `metrics-server`: parses flags and runs the server; see `fabric_telemetry::server`.

use std::process::ExitCode;

use fabric_telemetry::config::{self, Command};
use fabric_telemetry::{logging, server::MetricsServer};

fn main() -> ExitCode {
    let (config, log_level) = match config::parse_server_args(std::env::args_os().skip(1)) {
        Ok(Command::Run { config, log_level }) => (config, log_level),
        Ok(Command::Help) => {
            print!("{}", config::SERVER_HELP);
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
    logging::init(log_level);
    match MetricsServer::start(&config) {
        Ok(server) => {
            log::info!(
                "metrics-server listening on http://{} polling {}",
                server.local_addr(),
                server.sources().join(", ")
            );
            server.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            eprintln!("metrics-server: {e}");
            ExitCode::FAILURE
        }
    }
}
