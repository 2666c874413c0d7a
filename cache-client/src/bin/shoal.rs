//! `shoal`: the data commands, and `shoal dev` (a local cluster). Flags are parsed here;
//! everything else is `cache_client::cli` and `cache_client::dev`.

use clap::Parser;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("dev") {
        let dev = cache_client::dev::DevArgs::parse_from(&args[1..]);
        std::process::exit(cache_client::dev::run(dev));
    }
    let cli = cache_client::cli::Cli::parse();
    std::process::exit(cache_client::cli::run(cli));
}
