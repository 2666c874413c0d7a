//! `shoal`: the data commands. Flags are parsed here; everything else is `cache_client::cli`.

use clap::Parser;

fn main() {
    let cli = cache_client::cli::Cli::parse();
    std::process::exit(cache_client::cli::run(cli));
}
