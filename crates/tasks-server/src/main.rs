//! `tasks-server`: serve the API (default), apply migrations, or mint a
//! development token.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret as _;

// Opt-in (`--features mimalloc`): glibc's malloc/free were a fifth of the
// CPU profile of a list under load; mimalloc gave about 7% more list
// throughput but twice the peak RSS, which breaks the 64 MB budget on SQLite.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tasks_server::{Application, Settings, telemetry};

#[derive(Parser)]
#[command(
    name = "tasks-server",
    version,
    about = "The tasks API for a Next.js + Better Auth frontend"
)]
struct Cli {
    /// Refuse to start without real authentication configured (same as APP_ENV=production).
    #[arg(long, global = true)]
    production: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print an HS256 token for USER_ID, signed with the configured secret
    /// (JWT_SECRET, BETTER_AUTH_SECRET, or the development secret).
    Token {
        /// The user id to put in `sub`.
        user_id: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Print the OpenAPI document as YAML (what contracts/openapi.yaml holds).
    Openapi,
    /// Print the JSON Schema of a task or of the error envelope (what
    /// contracts/tasks.schema.json and contracts/errors.schema.json hold).
    Schema {
        /// `tasks` (TaskResponse) or `errors` (ErrorBody).
        #[arg(value_parser = ["tasks", "errors"])]
        name: String,
    },
    /// Exit 0 if the service on HOST:PORT answers /ready with 200 (for
    /// container health checks, where no curl is installed).
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.production) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: invalid configuration: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(settings.workers.clamp(1, 4))
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, mut settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let traces = telemetry::init_with_traces(
                settings.log_format,
                &settings.log_filter,
                settings.log_driver_debug,
                settings.fleet.traces.as_ref(),
            )?;
            let app = Application::build(settings).await?;
            app.run_until_stopped().await?;
            tracing::info!("stopped");
            // Exports the spans still queued (on a blocking thread of its own).
            drop(traces);
            Ok(())
        }
        Command::Migrate => {
            telemetry::init(
                settings.log_format,
                &settings.log_filter,
                settings.log_driver_debug,
            )?;
            let applied = tasks_store::run_migrations(&settings.store).await?;
            if applied.is_empty() {
                println!(
                    "database is up to date ({})",
                    settings.store.location.describe()
                );
            } else {
                println!(
                    "applied {} migration(s): {}",
                    applied.len(),
                    applied.join(", ")
                );
            }
            Ok(())
        }
        Command::Token { user_id, ttl } => {
            tasks_domain::OwnerId::parse(&user_id)
                .map_err(|e| anyhow::anyhow!("USER_ID is not acceptable: {e}"))?;
            settings.ensure_auth()?;
            let auth = &settings.auth.config;
            let secret = auth.hs256_secret.as_ref().ok_or_else(|| {
                anyhow::anyhow!("`token` needs a shared secret: set JWT_SECRET (tokens from BETTER_AUTH_URL come from Better Auth itself)")
            })?;
            let token = tasks_auth::issue_hs256(
                secret.expose_secret().as_bytes(),
                &user_id,
                ttl,
                &auth.rules,
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", tasks_server::openapi::yaml()?);
            Ok(())
        }
        Command::Schema { name } => {
            let component = tasks_server::openapi::JSON_SCHEMAS
                .iter()
                .find(|(file, _)| *file == name)
                .map(|(_, component)| *component)
                .ok_or_else(|| anyhow::anyhow!("no schema named {name}"))?;
            print!("{}", tasks_server::openapi::json_schema(component)?);
            Ok(())
        }
        Command::Healthcheck => healthcheck(&settings),
    }
}

fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let host = match settings.host.as_str() {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        other => other,
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, settings.port))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve HOST={host}"))?;
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200" {
        println!("ready");
        Ok(())
    } else {
        anyhow::bail!("not ready: {}", String::from_utf8_lossy(&head))
    }
}
