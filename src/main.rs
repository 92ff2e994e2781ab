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

use bitbucket_slack::app::{EXIT_CONFIG, EXIT_FAILURE};
use bitbucket_slack::config::{Config, LogConfig, LogFormat};
use bitbucket_slack::{app, clock, shutdown};
use clap::{Args, Parser, Subcommand};

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
    /// Sockets, installations and store of the running daemon (or of the stopped store).
    Status(ListArgs),
    /// Every installed workspace: state, permissions, missing scopes. Never tokens.
    Installations(ListArgs),
    /// Each installation's permission-upgrade phase, missing scopes, last and next reminder.
    UpgradeStatus(ListArgs),
    /// Channel subscriptions, optionally of one workspace or channel.
    Subscriptions(SubscriptionArgs),
    /// The Slack outbox (or its dead letters); `outbox retry` re-queues dead letters.
    Outbox(OutboxArgs),
    /// Write a consistent backup of the store to FILE (tokens stay encrypted).
    Backup(FileArgs),
    /// Restore a backup into an empty storage.path; only with the daemon stopped.
    Restore(FileArgs),
    /// Check config, store, encryption key and Slack; one line per check.
    Doctor(ConfigArgs),
    /// Copy the whole store into the other engine (daemons stopped), counts checked:
    /// `--to postgres` from storage.path into storage.postgres.url, `--to sled` back.
    Migrate(MigrateArgs),
}

#[derive(Args)]
struct MigrateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The engine to copy into: `postgres` or `sled`.
    #[arg(long, value_parser = ["postgres", "sled"])]
    to: String,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SubscriptionArgs {
    #[command(flatten)]
    list: ListArgs,
    /// Only this Slack workspace (team id).
    #[arg(long)]
    team: Option<String>,
    /// Only this Slack channel (channel id).
    #[arg(long)]
    channel: Option<String>,
}

#[derive(Args)]
struct OutboxArgs {
    #[command(subcommand)]
    retry: Option<OutboxCommand>,
    #[command(flatten)]
    list: ListArgs,
    /// The dead letters instead of the waiting messages.
    #[arg(long, conflicts_with_all = ["uncertain", "parked"])]
    dead: bool,
    /// Messages that may or may not have been posted (a timeout or a crash during the
    /// post): never posted again unless retried.
    #[arg(long, conflicts_with = "parked")]
    uncertain: bool,
    /// Messages waiting for their workspace to be installed again, or held.
    #[arg(long)]
    parked: bool,
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Move a dead letter or uncertain message (by id), or all of them, back into the
    /// outbox.
    Retry {
        #[command(flatten)]
        config: ConfigArgs,
        /// The message's id (from `outbox --dead` or `outbox --uncertain`).
        #[arg(
            required_unless_present_any = ["all_dead", "all_uncertain"],
            conflicts_with_all = ["all_dead", "all_uncertain"]
        )]
        id: Option<u64>,
        /// Every dead letter.
        #[arg(long, conflicts_with = "all_uncertain")]
        all_dead: bool,
        /// Every uncertain message (check the channels first: they may double).
        #[arg(long)]
        all_uncertain: bool,
    },
}

#[derive(Args)]
struct FileArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The backup file.
    file: PathBuf,
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
            let config = match load(&args, &env) {
                Ok(config) => config,
                Err(code) => return code,
            };
            init_logging(&config.log);
            run(config)
        }
        CliCommand::Status(args) => operate(&args.config, &env, |config| async move {
            app::cli::status(&config, args.json).await
        }),
        CliCommand::Installations(args) => operate(&args.config, &env, |config| async move {
            app::cli::installations(&config, args.json).await
        }),
        CliCommand::UpgradeStatus(args) => operate(&args.config, &env, |config| async move {
            app::cli::upgrade_status(&config, Arc::new(clock::SystemClock), args.json).await
        }),
        CliCommand::Subscriptions(args) => operate(&args.list.config, &env, |config| async move {
            app::cli::subscriptions(&config, args.team, args.channel, args.list.json).await
        }),
        CliCommand::Outbox(args) => match args.retry {
            Some(OutboxCommand::Retry {
                config,
                id,
                all_uncertain,
                ..
            }) => operate(&config, &env, |config| async move {
                app::cli::outbox_retry(&config, Arc::new(clock::SystemClock), id, all_uncertain)
                    .await
            }),
            None => operate(&args.list.config, &env, |config| async move {
                app::cli::outbox(
                    &config,
                    args.dead,
                    args.uncertain,
                    args.parked,
                    args.list.json,
                )
                .await
            }),
        },
        CliCommand::Backup(args) => operate(&args.config, &env, |config| async move {
            app::cli::backup(&config, Arc::new(clock::SystemClock), &args.file).await
        }),
        CliCommand::Restore(args) => operate(&args.config, &env, |config| async move {
            app::cli::restore(&config, &args.file).await
        }),
        CliCommand::Migrate(args) => operate(&args.config, &env, |config| async move {
            app::cli::migrate(&config, &args.to).await
        }),
        CliCommand::Doctor(args) => operate(&args, &env, |config| async move {
            app::cli::doctor(&config).await
        }),
    }
}

fn load(args: &ConfigArgs, env: &HashMap<String, String>) -> Result<Config, ExitCode> {
    Config::load(args.config.as_deref(), env).map_err(|error| {
        eprintln!("bitbucket-slack: the configuration is not valid:");
        for line in error.lines() {
            eprintln!("  {line}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Runs one operator subcommand: errors are printed in one line and exit 1.
fn operate<F, Fut>(args: &ConfigArgs, env: &HashMap<String, String>, command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u8>>,
{
    let config = match load(args, env) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bitbucket-slack: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(command(config)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("bitbucket-slack: {error:#}");
            ExitCode::from(EXIT_FAILURE)
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
            ExitCode::from(app::exit_code(&error))
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
