//! `shoal`: the data commands, and `shoal dev` (a local cluster). Flags are parsed here;
//! everything else is `shoal_cli::cli` and `shoal_cli::dev`.

use clap::Parser;
use shoal_cli::{cli, dev};

fn main() {
    // `args_os`: a value may be any bytes (`shoal put /k $'\xff'`); clap checks the rest.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()) == Some("dev") {
        let dev = dev::DevArgs::parse_from(&args[1..]);
        std::process::exit(dev::run(dev));
    }
    std::process::exit(cli::run(cli::Cli::parse()));
}
