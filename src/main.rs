//! The `bitbucket-slack` binary: parses the command line, loads the configuration, sets
//! up logging and hands over to the library. Exit codes: 0 success, 1 a runtime failure,
//! 78 (EX_CONFIG) a configuration problem, including a Slack app token that Slack refuses
//! (systemd's `RestartPreventExitStatus=78` then stops restarting a daemon that cannot
//! work until someone fixes its configuration).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bitbucket_slack::config::{Config, LogConfig, LogFormat};
use bitbucket_slack::slack::socket::SocketModeError;
use bitbucket_slack::store::StoreError;
use bitbucket_slack::{app, clock, shutdown};
use clap::{Args, Parser, Subcommand};

const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "bitbucket-slack",
    version,
    about = "Bitbucket Cloud <-> Slack, self-hosted, over Socket Mode"
)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Run the daemon until SIGTERM or SIGINT.
    Run(ConfigArgs),
    /// Validate the configuration: one line per problem, exit 78 when there is any.
    Check(ConfigArgs),
}

#[derive(Args)]
struct ConfigArgs {
    /// A TOML file layered over the built-in defaults; environment variables
    /// BITBUCKET_SLACK__SECTION__KEY override both.
    #[arg(long, value_name = "FILE", env = "BITBUCKET_SLACK_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    match cli.command {
        CliCommand::Check(args) => match Config::load(args.config.as_deref(), &env) {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(error) => {
                for line in error.lines() {
                    eprintln!("{line}");
                }
                ExitCode::from(EXIT_CONFIG)
            }
        },
        CliCommand::Run(args) => {
            let config = match Config::load(args.config.as_deref(), &env) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("bitbucket-slack: the configuration is not valid:");
                    for line in error.lines() {
                        eprintln!("  {line}");
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            init_logging(&config.log);
            run(config)
        }
    }
}

fn run(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let outcome = runtime.block_on(async {
        let token = shutdown::on_signal()?;
        app::run(config, Arc::new(clock::SystemClock), token).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            let is_config = error.downcast_ref::<SocketModeError>().is_some()
                || error.downcast_ref::<app::BotTokenRefused>().is_some()
                || matches!(
                    error.downcast_ref::<StoreError>(),
                    Some(
                        StoreError::Open { .. }
                            | StoreError::NewerSchema { .. }
                            | StoreError::WrongKey { .. }
                            | StoreError::KeyFile { .. }
                    )
                );
            ExitCode::from(if is_config { EXIT_CONFIG } else { EXIT_FAILURE })
        }
    }
}

fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
