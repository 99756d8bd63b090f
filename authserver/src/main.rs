//! mcp-mesh-authserver: the OAuth 2.1 authorization server MCP clients discover and register
//! with; the filter trusts the tokens it issues through its JWKS. `mcp-mesh-authserver admin …`
//! administers it (see `admin`).

mod admin;
mod client_documents;
mod config;
mod crypto;
mod http;
mod idp;
mod keys;
mod oauth;
mod store;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::crypto::Sealer;
use crate::http::Upstream;
use crate::keys::KeyRing;
use crate::oauth::SystemClock;
use crate::store::{redacted, Backend, PostgresStore, SqliteStore, Store};

/// The embedded OAuth 2.1 authorization server for MCP clients.
///
/// Without a command it serves; `admin` administers its clients, grants, keys and database.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// YAML configuration file (see the README for every key).
    #[arg(long, env = "MCP_AUTH_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The URL clients reach this server at (`iss` of every token); overrides `issuer`.
    #[arg(long, env = "MCP_AUTH_ISSUER")]
    issuer: Option<String>,
    /// Address to listen on; overrides `listen` (default 127.0.0.1:9000).
    #[arg(long, env = "MCP_AUTH_LISTEN")]
    listen: Option<SocketAddr>,
    /// Database URL: sqlite:///var/lib/mcp-auth/auth.db?mode=rwc (one replica) or
    /// postgres://user@host/db (several replicas); overrides `database`.
    #[arg(long, env = "MCP_AUTH_DATABASE", global = true)]
    database: Option<String>,
    /// An MCP resource URL tokens may be issued for (repeatable); overrides `resources`.
    #[arg(long = "resource", env = "MCP_AUTH_RESOURCES", value_delimiter = ',')]
    resources: Vec<String>,
    /// A PEM signing key file (repeatable; the first signs); overrides `signing_keys`.
    #[arg(
        long = "signing-key",
        env = "MCP_AUTH_SIGNING_KEYS",
        value_delimiter = ',',
        global = true
    )]
    signing_keys: Vec<PathBuf>,
    /// Log one JSON object per line (for log collectors) instead of text.
    #[arg(long, env = "MCP_AUTH_LOG_JSON")]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    Admin(admin::Admin),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.command.is_some(), cli.log_json);
    let overrides = Overrides {
        issuer: cli.issuer,
        listen: cli.listen,
        database: cli.database,
        resources: cli.resources,
        signing_keys: cli.signing_keys,
    };
    let outcome = match cli.command {
        Some(Command::Admin(command)) => {
            let settings = admin::Settings {
                config_file: cli.config.as_deref(),
                overrides,
            };
            admin::run(
                command,
                &settings,
                &SystemClock,
                &mut std::io::stdout().lock(),
            )
            .await
            .map_err(anyhow::Error::from)
        }
        None => run(cli.config, overrides).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mcp-mesh-authserver: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The server logs to stdout (`info`, JSON lines with `--log-json`); a command prints its answer
/// on stdout, so its log goes to stderr, warnings only. `RUST_LOG` overrides the level.
fn init_logging(command: bool, json: bool) {
    let default_level = if command { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    if command {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .init();
    } else if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        // Colour codes only for a person at a terminal: in a file or a collector they are noise
        // that breaks searching.
        tracing_subscriber::fmt()
            .with_ansi(std::io::stdout().is_terminal())
            .with_env_filter(filter)
            .init();
    }
}

async fn run(config_file: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let config = Config::load(config_file.as_deref(), overrides)?;
    let mut keys = KeyRing::load(&config.signing_keys)?;
    if keys.is_empty() {
        tracing::warn!("no signing_keys configured: using an EPHEMERAL key; every token dies with this process");
        keys = KeyRing::ephemeral();
    }
    if keys.ephemeral {
        tracing::warn!("tokens signed by the ephemeral key fail verification after a restart");
    }
    let upstream = Upstream::new(idp::from_config(
        config.upstream.as_ref(),
        config.issuer_str(),
    )?);
    let sealer = config
        .encryption_key_file
        .as_deref()
        .map(Sealer::from_file)
        .transpose()?;
    match Backend::of(&config.database)? {
        Backend::Sqlite => {
            let store = SqliteStore::open(&config.database).await?;
            serve(config, keys, upstream, sealer, store).await
        }
        Backend::Postgres => {
            let store = PostgresStore::open(&config.database).await?;
            serve(config, keys, upstream, sealer, store).await
        }
    }
}

async fn serve<S: Store>(
    config: Config,
    keys: KeyRing,
    upstream: Upstream,
    sealer: Option<Sealer>,
    store: S,
) -> anyhow::Result<()> {
    tracing::info!(database = %redacted(&config.database), "database ready");
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(issuer = config.issuer_str(), listen = %config.listen, "authorization server listening");
    let settings = config.server.clone();
    let purge = store::housekeeping::spawn(
        store.clone(),
        settings.purge_interval_seconds,
        config.registration.unused_client_seconds,
        SystemClock,
    );
    http::token::provision_gateways(&store, &config, oauth::Clock::now(&SystemClock)).await?;
    let clock = std::sync::Arc::new(oauth::SystemClock);
    let app = http::router(config, keys, store, upstream, sealer, clock);
    http::serve::serve(listener, app, &settings, http::serve::stop_signal()).await;
    if let Some(purge) = purge {
        purge.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
