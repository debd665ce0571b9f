//! `roundabout`: parse the command line, validate, set up logging, run the proxy or the CSR
//! command, and map errors to exit codes.

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::process::ExitCode;

use roundabout::cli::{self, Action};
use roundabout::config::{Config, LogLevel, RunArgs, Validated};
use tracing_subscriber::EnvFilter;

/// sysexits.h EX_USAGE: the command line or configuration is wrong.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help and version to stdout and errors to stderr.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.into_action() {
        Ok(Action::Run(args)) => run(&args),
        Ok(Action::Csr(request)) => match roundabout::csr::run(&request) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("roundabout csr: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => usage_error(&error),
    }
}

fn usage_error(error: &dyn std::error::Error) -> ExitCode {
    eprintln!("roundabout: {error}");
    ExitCode::from(EX_USAGE)
}

fn run(args: &RunArgs) -> ExitCode {
    let Validated { config, skipped } = match Config::from_args(args) {
        Ok(validated) => validated,
        Err(error) => return usage_error(&error),
    };
    if args.check_config {
        for line in config.describe() {
            println!("{line}");
        }
        for error in &skipped {
            eprintln!("roundabout: {error}");
        }
        return if skipped.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EX_USAGE)
        };
    }
    init_tracing(args.log_level);
    // One crypto provider for rustls, chosen here rather than by feature detection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    for error in &skipped {
        tracing::warn!("{error} (skipped: -lenient-trusted-server)");
    }
    for line in config.describe() {
        tracing::info!("{line}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(roundabout::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` when set; else `-log-level` for Roundabout's own targets and warnings from the
/// libraries (their debug output, rustls's especially, would drown ours).
fn init_tracing(level: LogLevel) {
    let fallback = || {
        let libraries = match level {
            LogLevel::Error => "error",
            _ => "warn",
        };
        EnvFilter::new(format!("{libraries},roundabout={}", level.as_str()))
    };
    let rust_log = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some();
    let (filter, bad_rust_log) = if rust_log {
        match EnvFilter::try_from_default_env() {
            Ok(filter) => (filter, None),
            Err(error) => (fallback(), Some(error)),
        }
    } else {
        (fallback(), None)
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    if let Some(error) = bad_rust_log {
        tracing::warn!("RUST_LOG ignored: {error}");
    }
}
