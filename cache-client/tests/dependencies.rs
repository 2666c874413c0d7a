//! The library's normal dependencies carry none of the `shoal` CLI's (issue 13, point 5): an
//! application linking `cache-client` pulls in no flag parser, log subscriber, histogram or
//! TOML parser. The CLI is `cache-client/cli` (`shoal-cli`). Runs `cargo tree` offline against
//! the lock file (a fraction of a second).

use std::process::Command;

/// Crates of the CLI's that the library must not depend on (their `_`-suffixed siblings such
/// as `clap_builder` or `toml_edit` count too).
const CLI_ONLY: [&str; 5] = ["clap", "tracing-subscriber", "hdrhistogram", "toml", "plotters"];

#[test]
fn the_library_depends_on_none_of_the_clis_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(cargo)
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none", "-p", "cache-client"])
        .args(["--manifest-path", manifest])
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("cache-client"),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| CLI_ONLY.iter().any(|c| *name == *c || name.starts_with(&format!("{c}_"))))
        .collect();
    assert!(found.is_empty(), "cache-client depends on the CLI's {found:?}:\n{stdout}");
}
