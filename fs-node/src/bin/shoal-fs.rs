//! `shoal-fs`: one Shoal file-server node. Parses the configuration (file, flags, `SHOAL_*`
//! environment), logs with `tracing` (`RUST_LOG`, default `info`), runs the node until SIGINT
//! or SIGTERM, then drains, syncs and exits 0. A start-up or fatal error prints one line and
//! exits 1.
//!
//! `shoal-fs restore --from BACKUP_DIR --data-dir DIR` is the offline restore: it verifies a
//! backup (made by `Backup` to a directory or to a node; both hold the store files, the tables
//! and an MD5 manifest) and installs it as the only snapshot of the empty data directory `DIR`.
//! A node started on `DIR` then starts from the backup and catches up from its peers.

use clap::Parser;
use fs_node::config::Args;
use std::path::PathBuf;

/// `shoal-fs restore`.
#[derive(clap::Parser, Debug)]
#[command(name = "shoal-fs restore", about = "Install a backup as a node's snapshot (offline)")]
struct RestoreArgs {
    /// The backup directory (it holds MANIFEST.json).
    #[arg(long)]
    from: PathBuf,
    /// The node's data directory; must be empty or absent.
    #[arg(long)]
    data_dir: PathBuf,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("restore") {
        let args = RestoreArgs::parse_from(std::env::args().skip(1));
        match fs_node::node::snapshot::restore(&args.from, &args.data_dir) {
            Ok(zxid) => {
                println!(
                    "restored {} into {} at zxid {zxid}; start the node on it to catch up from \
                     its peers",
                    args.from.display(),
                    args.data_dir.display()
                );
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("shoal-fs restore: {e}");
                std::process::exit(1);
            }
        }
    }
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: `shoal dev` and systemd send stderr to files and journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-fs: {e}");
            std::process::exit(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-fs: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(fs_node::node::run(config, stop_signal()));
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("shoal-fs: {e}");
            std::process::exit(1);
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the node runs until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
