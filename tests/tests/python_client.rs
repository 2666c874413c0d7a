//! The Python client (`cache-client/python`) end to end: builds its wheel with maturin into a
//! virtual environment under `target/python/`, starts `shoal dev`, and runs the pytest tests
//! of `cache-client/python/tests` against it. Part of `cargo test --workspace --release`, so
//! CI runs them; it fails (never skips) when Python, venv, pip, maturin or pytest is missing,
//! saying which. The venv and the crate's own target directory are kept under
//! `target/python/`, so a rerun only rebuilds what changed.

mod dev;

use dev::Dev;
use shoal_tests::cluster::profile_dir;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The most the venv set-up (pip install of maturin and pytest) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// The most the wheel build may take. Cold it builds the client's dependency tree and pyo3
/// (about 150 crates, not the rest of the workspace) in its own target directory: about 45 s
/// on 2 cores; a rebuild with nothing changed takes a second or two.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1500);
/// The most the pytest run may take (it takes about 8 seconds, most of it a lock held past
/// its lease).
const PYTEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The dev cluster's history window (notices kept for watches that resume), small so that
/// `test_watch_from_below_the_history_window_reports_compacted` can go below it.
const HISTORY_ENTRIES: &str = "100";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs `cmd` to the end within `timeout` (killed after it); returns its combined output, and
/// panics with it, naming `what`, unless it exits 0.
fn run(what: &str, cmd: &mut Command, timeout: Duration) -> String {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    // One file description for both streams, so that they interleave instead of overwriting.
    let file = out.reopen().expect("reopen temp file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone temp file"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    match status {
        Some(s) if s.success() => output,
        Some(s) => panic!("{what} failed ({s}): {cmd:?}\n{output}"),
        None => panic!("{what} did not finish within {timeout:?}: {cmd:?}\n{output}"),
    }
}

/// `target/python/venv` with maturin and pytest, made once (from `$SHOAL_PYTHON`, else
/// `python3`); its python.
fn venv(dir: &Path) -> PathBuf {
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import maturin, pytest"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return python;
    }
    let base = std::env::var("SHOAL_PYTHON").unwrap_or_else(|_| "python3".into());
    run(
        "creating the venv (on Debian, apt-get install python3-venv)",
        Command::new(&base).args(["-m", "venv", "--clear"]).arg(&venv),
        SETUP_TIMEOUT,
    );
    run(
        "installing maturin and pytest into the venv",
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "maturin>=1.5,<2",
            "pytest>=7",
        ]),
        SETUP_TIMEOUT,
    );
    assert!(ready(&python), "maturin and pytest still not importable from {}", python.display());
    python
}

/// Builds the wheel (release) and installs it into the venv.
fn install_wheel(dir: &Path, python: &Path) {
    let wheels = dir.join("wheels");
    let _ = std::fs::remove_dir_all(&wheels);
    let crate_dir = workspace().join("cache-client/python");
    let maturin = python.with_file_name("maturin");
    run(
        "building the Python client's wheel",
        Command::new(&maturin)
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .arg("--interpreter")
            .arg(python)
            .arg("--out")
            .arg(&wheels)
            .env("CARGO_TARGET_DIR", dir.join("cargo")),
        BUILD_TIMEOUT,
    );
    let wheel: Vec<PathBuf> = std::fs::read_dir(&wheels)
        .expect("maturin wrote the wheels directory")
        .map(|e| e.expect("wheel entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    assert_eq!(wheel.len(), 1, "one wheel built: {wheel:?}");
    run(
        "installing the wheel into the venv",
        Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(["--force-reinstall", "--no-deps"])
            .arg(&wheel[0]),
        SETUP_TIMEOUT,
    );
}

/// Claim: the Python client does what its tests say against a real cluster: get/put/delete/
/// rename/list/stat, read-your-writes and another client's write, watch as an iterator (also
/// resumed from a zxid, and told when history was compacted below it), lock and transaction
/// context managers (commit and abort, renewal past the lease), a session's ephemeral entry
/// deleted when the session closes, and errors as exceptions carrying the wire code.
#[test]
fn python_client_passes_its_pytest_suite_against_shoal_dev() {
    let dir = profile_dir().parent().expect("target dir").join("python");
    std::fs::create_dir_all(&dir).expect("create target/python");
    let python = venv(&dir);
    install_wheel(&dir, &python);

    let cwd = tempfile::tempdir().expect("temp dir");
    let dev = Dev::start(cwd.path(), &[("SHOAL_HISTORY_ENTRIES", HISTORY_ENTRIES)]);
    dev.wait_up();
    let cluster = cwd.path().join("shoal-dev/cluster.toml");
    let output = run(
        "the Python client's pytest suite",
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(workspace().join("cache-client/python/tests"))
            .env("SHOAL_CLUSTER", &cluster)
            .env("SHOAL_HISTORY_ENTRIES", HISTORY_ENTRIES)
            .current_dir(cwd.path()),
        PYTEST_TIMEOUT,
    );
    println!("{output}");
    let summary = output.lines().rev().find(|l| l.contains(" passed")).unwrap_or_default();
    assert!(
        !summary.contains("skipped") && !summary.contains("failed"),
        "every Python test ran and passed: {summary}"
    );
    assert!(summary.contains(" passed"), "pytest ran tests: {output}");
    assert_eq!(dev.stop(), Some(0), "shoal dev exits 0 after SIGTERM");
}
