//! `prognos` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use prognos::config::Config;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The server's allocator. Scoring and scans allocate a batch-sized buffer or several per
/// batch (an ONNX graph's input matrix is 8192 rows × its columns, most of a megabyte); the
/// system allocator hands buffers that size out as fresh mappings and unmaps them on free, so
/// every batch paid page faults and zeroing in the kernel (12 % of an imported MLP's query in
/// a profile, benches/README.md). mimalloc keeps freed pages for reuse; DataFusion's own
/// command line uses it for the same reason.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// prognos — a SQL prediction database.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (Postgres wire protocol, Arrow Flight SQL, HTTP metrics).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file; flags override it, `PROGNOS__SECTION__KEY` variables override it too.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (catalog, managed tables, models). Default: ./prognos-data
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Postgres wire protocol address. Default: 127.0.0.1:5432
    #[arg(long)]
    pg_listen: Option<SocketAddr>,
    /// Arrow Flight SQL address. Default: 127.0.0.1:50051
    #[arg(long)]
    flight_listen: Option<SocketAddr>,
    /// HTTP address for /health and /metrics. Default: 127.0.0.1:9187
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Do not load the demo dataset into an empty data dir.
    #[arg(long)]
    no_demo: bool,
}

fn load_config(args: &ServeArgs) -> Result<Config, prognos::config::ConfigError> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(a) = args.pg_listen {
        config.pg.listen = a;
    }
    if let Some(a) = args.flight_listen {
        config.flight.listen = a;
    }
    if let Some(a) = args.http_listen {
        config.http.listen = a;
    }
    if args.no_demo {
        config.demo_data = false;
    }
    Ok(config)
}

async fn shutdown_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}

/// Give candle its thread count through `RAYON_NUM_THREADS` (unless the operator set it).
///
/// candle 0.11 asks for the number of threads on every matrix product and, without that
/// variable, counts physical cores by reading and parsing `/proc/cpuinfo` each time: about a
/// third of `USING mlp`'s training time on small networks went there. With the variable set
/// the question is one environment lookup. The value is what rayon would use anyway.
#[allow(unsafe_code)]
fn pin_math_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: called first thing in `main`, before the log subscriber, the tokio runtime
        // or any rayon pool exist: no other thread is running to read the environment.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

fn main() -> ExitCode {
    pin_math_threads();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PROGNOS_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("prognos: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Deep but legal plans recurse; give workers headroom beyond the 2 MiB default.
        .thread_stack_size(16 * 1024 * 1024)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("prognos: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let token = CancellationToken::new();
        tokio::spawn(shutdown_signal(token.clone()));
        prognos::run(config, token, |addrs| {
            // One machine-readable line on stdout so scripts and tests know where to connect.
            println!(
                "prognos ready pg={} flight={} http={}",
                addrs.pg, addrs.flight, addrs.http
            );
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prognos: {e}");
            ExitCode::FAILURE
        }
    }
}
