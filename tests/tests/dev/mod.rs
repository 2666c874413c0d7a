//! `shoal dev` as a real child process, for the tests that run it (cluster_dev.rs,
//! python_client.rs): started in a directory, waited for until it reports a master, stopped
//! with SIGTERM.

use shoal_tests::cluster::{binary, terminate};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long `shoal dev` may take to report a master.
const UP_WAIT: Duration = Duration::from_secs(60);

/// A `shoal dev` child: SIGTERM (then SIGKILL) on drop; its nodes die with it.
pub struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Dev {
    /// Starts `shoal dev` in `cwd`, with `env` set for it and so for its nodes (for example a
    /// `SHOAL_*` setting).
    pub fn start(cwd: &Path, env: &[(&str, &str)]) -> Dev {
        binary("shoal-fs");
        let mut child = Command::new(binary("shoal"))
            .arg("dev")
            .current_dir(cwd)
            // shoal-fs is built (above); under $CARGO `shoal dev` would run `cargo build` in
            // `cwd`, a temporary directory outside the workspace, and print that it failed.
            .env_remove("CARGO")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shoal dev");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev { child, lines }
    }

    /// Waits for the "cluster up" line; returns it.
    pub fn wait_up(&self) -> String {
        let deadline = std::time::Instant::now() + UP_WAIT;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(shoal_cli::dev::READY_LINE) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("shoal dev did not report a master within {UP_WAIT:?}");
    }

    pub fn stop(mut self) -> Option<i32> {
        terminate(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(&mut self.child, Duration::from_secs(15));
        }
    }
}
