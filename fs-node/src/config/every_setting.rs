//! Tests that pin, for every setting, its flag, environment variable and TOML key, the
//! precedence between them, its place in `--help`, and that a bad value names it. The table
//! below is written out by hand on purpose: it is an independent witness of the names the
//! settings definition generates.

use super::*;
use clap::{CommandFactory, Parser};
use protocol::limits::VALUE_BYTES_HARD_MAX;
use std::sync::Mutex;

/// Serialises the tests of this module that set `SHOAL_*` variables or parse flags (clap
/// reads the environment, which is process-wide).
pub(super) static ENV_LOCK: Mutex<()> = Mutex::new(());

/// A value as a flag or environment variable gives it (`cli`) and as a TOML value (`toml`).
/// `{dir}` stands for the fixture's directory.
#[derive(Clone)]
struct Value {
    cli: String,
    toml: String,
}

/// A number or boolean: the same text in both forms.
fn plain(text: &str) -> Value {
    Value { cli: text.into(), toml: text.into() }
}

/// A string: quoted in TOML.
fn quoted(text: &str) -> Value {
    Value { cli: text.into(), toml: format!("{text:?}") }
}

/// A list of strings: comma-separated on the command line, an array in TOML.
fn list(items: &[&str]) -> Value {
    Value { cli: items.join(","), toml: format!("{items:?}") }
}

/// Members: `id=ip:port,...` on the command line, an inline table in TOML.
fn members(items: &[(u8, &str)]) -> Value {
    let cli: Vec<String> = items.iter().map(|(id, addr)| format!("{id}={addr}")).collect();
    let toml: Vec<String> = items.iter().map(|(id, addr)| format!("{id} = {addr:?}")).collect();
    Value { cli: cli.join(","), toml: format!("{{ {} }}", toml.join(", ")) }
}

/// One setting: its TOML key, flag and variable; two valid values `a` and `b` that differ
/// from each other and `a` from what the base file gives; a value refused.
struct Case {
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    a: Value,
    b: Value,
    bad: Value,
}

fn case(
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    a: Value,
    b: Value,
    bad: Value,
) -> Case {
    Case { key, flag, env, a, b, bad }
}

fn cases() -> Vec<Case> {
    vec![
        case("node_id", "--node-id", "SHOAL_NODE_ID", plain("3"), plain("1"), plain("8")),
        case(
            "members",
            "--member",
            "SHOAL_MEMBERS",
            members(&[(2, "127.0.0.1:8802")]),
            members(&[(1, "127.0.0.1:9901"), (2, "127.0.0.1:9902"), (3, "127.0.0.1:9903")]),
            members(&[(1, "127.0.0.1:9901"), (2, "localhost:9902"), (3, "127.0.0.1:9903")]),
        ),
        case(
            "data_dir",
            "--data-dir",
            "SHOAL_DATA_DIR",
            quoted("{dir}/a"),
            quoted("{dir}/b"),
            quoted("{dir}/cluster.key"),
        ),
        case(
            "multicast",
            "--multicast",
            "SHOAL_MULTICAST",
            plain("false"),
            plain("true"),
            quoted("maybe"),
        ),
        case(
            "multicast_group",
            "--multicast-group",
            "SHOAL_MULTICAST_GROUP",
            quoted("239.1.2.3:7000"),
            quoted("239.1.2.4:7001"),
            quoted("10.0.0.1:7700"),
        ),
        case(
            "multicast_interface",
            "--multicast-interface",
            "SHOAL_MULTICAST_INTERFACE",
            quoted("127.0.0.2"),
            quoted("127.0.0.3"),
            quoted("eth0"),
        ),
        case(
            "multicast_ttl",
            "--multicast-ttl",
            "SHOAL_MULTICAST_TTL",
            plain("3"),
            plain("4"),
            plain("256"),
        ),
        case(
            "multicast_loopback",
            "--multicast-loopback",
            "SHOAL_MULTICAST_LOOPBACK",
            plain("false"),
            plain("true"),
            quoted("maybe"),
        ),
        case(
            "unicast_peers",
            "--unicast-peer",
            "SHOAL_UNICAST_PEERS",
            list(&["127.0.0.1:7800"]),
            list(&["127.0.0.1:7801", "127.0.0.1:7802"]),
            list(&["127.0.0.1:7800", "nope"]),
        ),
        case("cluster_id", "--cluster-id", "SHOAL_CLUSTER_ID", plain("8"), plain("9"), quoted("x")),
        case(
            "cluster_key_file",
            "--cluster-key-file",
            "SHOAL_CLUSTER_KEY_FILE",
            quoted("{dir}/a.key"),
            quoted("{dir}/b.key"),
            quoted("{dir}/missing.key"),
        ),
        case(
            "member_key_file",
            "--member-key-file",
            "SHOAL_MEMBER_KEY_FILE",
            quoted("{dir}/ma.key"),
            quoted("{dir}/mb.key"),
            quoted("{dir}/a.key"),
        ),
        case(
            "fslive_interval_ms",
            "--fslive-interval-ms",
            "SHOAL_FSLIVE_INTERVAL_MS",
            plain("20000"),
            plain("25000"),
            plain("0"),
        ),
        case(
            "fslive_validity_ms",
            "--fslive-validity-ms",
            "SHOAL_FSLIVE_VALIDITY_MS",
            plain("80000"),
            plain("90000"),
            plain("30000"),
        ),
        case(
            "lock_ttl_ms",
            "--lock-ttl-ms",
            "SHOAL_LOCK_TTL_MS",
            plain("9000"),
            plain("8000"),
            plain("0"),
        ),
        case(
            "heartbeat_interval_ms",
            "--heartbeat-interval-ms",
            "SHOAL_HEARTBEAT_INTERVAL_MS",
            plain("40"),
            plain("30"),
            plain("0"),
        ),
        case(
            "election_timeout_ms",
            "--election-timeout-ms",
            "SHOAL_ELECTION_TIMEOUT_MS",
            plain("600"),
            plain("700"),
            plain("60"),
        ),
        case("lease_ms", "--lease-ms", "SHOAL_LEASE_MS", plain("200"), plain("250"), plain("500")),
        case(
            "drift_margin_ms",
            "--drift-margin-ms",
            "SHOAL_DRIFT_MARGIN_MS",
            plain("20"),
            plain("10"),
            plain("300"),
        ),
        case(
            "key_bytes_max",
            "--key-bytes-max",
            "SHOAL_KEY_BYTES_MAX",
            plain("1024"),
            plain("2048"),
            plain("1"),
        ),
        case(
            "value_bytes_max",
            "--value-bytes-max",
            "SHOAL_VALUE_BYTES_MAX",
            plain("1000000"),
            plain("2000000"),
            plain(&(VALUE_BYTES_HARD_MAX + 1).to_string()),
        ),
        case(
            "log_retention_bytes",
            "--log-retention-bytes",
            "SHOAL_LOG_RETENTION_BYTES",
            plain("1000"),
            plain("2000"),
            quoted("lots"),
        ),
        case(
            "snapshot_entries",
            "--snapshot-entries",
            "SHOAL_SNAPSHOT_ENTRIES",
            plain("300"),
            plain("400"),
            plain("0"),
        ),
        case(
            "snapshot_log_bytes",
            "--snapshot-log-bytes",
            "SHOAL_SNAPSHOT_LOG_BYTES",
            plain("1000"),
            plain("2000"),
            plain("0"),
        ),
        case(
            "log_segment_bytes",
            "--log-segment-bytes",
            "SHOAL_LOG_SEGMENT_BYTES",
            plain("65536"),
            plain("131072"),
            plain("100"),
        ),
        case(
            "log_retention_entries",
            "--log-retention-entries",
            "SHOAL_LOG_RETENTION_ENTRIES",
            plain("10"),
            plain("20"),
            quoted("lots"),
        ),
        case(
            "history_entries",
            "--history-entries",
            "SHOAL_HISTORY_ENTRIES",
            plain("10"),
            plain("20"),
            quoted("lots"),
        ),
        case(
            "history_bytes",
            "--history-bytes",
            "SHOAL_HISTORY_BYTES",
            plain("1000"),
            plain("2000"),
            quoted("many"),
        ),
        case(
            "transfer_rate_bytes_per_s",
            "--transfer-rate-bytes-per-s",
            "SHOAL_TRANSFER_RATE_BYTES_PER_S",
            plain("65536"),
            plain("100000"),
            plain("1000"),
        ),
        case(
            "metrics_addr",
            "--metrics-addr",
            "SHOAL_METRICS_ADDR",
            quoted("127.0.0.1:9900"),
            quoted("127.0.0.1:9901"),
            quoted("127.0.0.1:0"),
        ),
    ]
}

/// A directory with three key files (the base one, `a.key`, `b.key`) and a config file
/// written per load: the base settings, with one key replaced.
struct SettingsFixture {
    dir: tempfile::TempDir,
}

/// Where a value is given.
#[derive(Clone, Copy, Debug)]
enum Source {
    File,
    Env,
    Flag,
}

impl SettingsFixture {
    fn new() -> SettingsFixture {
        let dir = tempfile::tempdir().unwrap();
        for (name, key) in [("cluster.key", "k"), ("a.key", "a"), ("b.key", "b")] {
            std::fs::write(dir.path().join(name), key.repeat(32)).unwrap();
        }
        // Member keys: owner-only (a.key, readable by all, is the refused value).
        for (name, key) in [("member.key", "m"), ("ma.key", "x"), ("mb.key", "y")] {
            write_owner_only(&dir.path().join(name), key.repeat(32).as_bytes());
        }
        SettingsFixture { dir }
    }

    fn expand(&self, text: &str) -> String {
        text.replace("{dir}", self.dir.path().to_str().unwrap())
    }

    /// Loads the base file with `given` applied: each (case, value, source).
    fn load(&self, given: &[(&Case, &Value, Source)]) -> Result<Config, String> {
        let mut file: Vec<(&str, String)> = vec![
            ("node_id", "2".into()),
            ("data_dir", format!("{:?}", self.dir.path().join("data"))),
            ("cluster_id", "7".into()),
            ("cluster_key_file", format!("{:?}", self.dir.path().join("cluster.key"))),
            ("member_key_file", format!("{:?}", self.dir.path().join("member.key"))),
            (
                "members",
                members(&[(1, "127.0.0.1:7701"), (2, "127.0.0.1:7702"), (3, "127.0.0.1:7703")])
                    .toml,
            ),
        ];
        let mut argv = vec!["shoal-fs".to_string(), "--config".into()];
        let path = self.dir.path().join("shoal.toml");
        argv.push(path.to_str().unwrap().into());
        let mut env = Vec::new();
        for (case, value, source) in given {
            match source {
                Source::File => {
                    file.retain(|(key, _)| key != &case.key);
                    file.push((case.key, self.expand(&value.toml)));
                }
                Source::Env => env.push((case.env, self.expand(&value.cli))),
                Source::Flag => {
                    argv.push(case.flag.into());
                    argv.push(self.expand(&value.cli));
                }
            }
        }
        let text: String = file.iter().map(|(key, value)| format!("{key} = {value}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for (name, value) in &env {
            std::env::set_var(name, value);
        }
        let parsed = Args::try_parse_from(&argv);
        for (name, _) in &env {
            std::env::remove_var(name);
        }
        let args = parsed.map_err(|e| e.to_string())?;
        args.load().map_err(|e| match e.setting() {
            Some(setting) => format!("setting={setting}: {e}"),
            None => e.to_string(),
        })
    }
}

/// Each setting's flag, variable and TOML key set it, all three to the same configuration,
/// and one that differs from the base file's.
#[test]
fn flag_env_and_file_each_set_every_setting() {
    let fx = SettingsFixture::new();
    let base = fx.load(&[]).unwrap();
    for case in cases() {
        let by_file = fx.load(&[(&case, &case.a, Source::File)]).unwrap();
        let by_env = fx.load(&[(&case, &case.a, Source::Env)]).unwrap();
        let by_flag = fx.load(&[(&case, &case.a, Source::Flag)]).unwrap();
        assert_ne!(by_file, base, "{}: the file's value had no effect", case.key);
        assert_eq!(by_env, by_file, "{}: env and file disagree", case.key);
        assert_eq!(by_flag, by_file, "{}: flag and file disagree", case.key);
        let b = fx.load(&[(&case, &case.b, Source::File)]).unwrap();
        assert_ne!(b, by_file, "{}: a and b give the same configuration", case.key);
    }
}

/// Precedence, setting by setting: flag over environment over file over default.
#[test]
fn flag_beats_env_beats_file() {
    let fx = SettingsFixture::new();
    for case in cases() {
        let (a, b) = (&case.a, &case.b);
        let want_b = fx.load(&[(&case, b, Source::File)]).unwrap();
        for (low, high) in
            [(Source::File, Source::Env), (Source::Env, Source::Flag), (Source::File, Source::Flag)]
        {
            let got = fx.load(&[(&case, a, low), (&case, b, high)]).unwrap();
            assert_eq!(got, want_b, "{}: {high:?} does not win over {low:?}", case.key);
        }
        let all = fx
            .load(&[(&case, a, Source::File), (&case, a, Source::Env), (&case, b, Source::Flag)])
            .unwrap();
        assert_eq!(all, want_b, "{}: the flag does not win over env and file", case.key);
    }
}

/// A bad value, from any source, is refused with an error naming the setting (its key, or
/// for a value the flag parser refuses, its flag), and nothing is created.
#[test]
fn bad_value_names_the_setting() {
    let fx = SettingsFixture::new();
    for case in cases() {
        for source in [Source::File, Source::Env, Source::Flag] {
            let err = fx.load(&[(&case, &case.bad, source)]).unwrap_err();
            let named = err.contains(&format!("setting={}:", case.key))
                || (matches!(source, Source::File) && err.contains(case.key))
                || (!matches!(source, Source::File) && err.contains(case.flag));
            assert!(named, "{} from {source:?}: error does not name it: {err}", case.key);
            assert!(
                !fx.dir.path().join("data").exists(),
                "{}: a refused config created data_dir",
                case.key
            );
        }
    }
}

/// The settings table names exactly the settings pinned here, with the same TOML key, flag
/// and variable, in the same (validation) order.
#[test]
fn settings_table_is_the_pinned_one() {
    let pinned: Vec<(String, String, String)> =
        cases().iter().map(|c| (c.key.into(), c.flag.into(), c.env.into())).collect();
    let table: Vec<(String, String, String)> =
        SETTINGS.iter().map(|s| (s.key.into(), s.flag(), s.env.into())).collect();
    assert_eq!(table, pinned);
}

/// The "defaults shown" in the module doc's TOML example are the defaults: the example's
/// optional part, added to the base file, changes nothing.
#[test]
fn documented_defaults_are_the_defaults() {
    let source = include_str!("mod.rs");
    let example: String = source
        .lines()
        .skip_while(|line| !line.contains("# Optional, defaults shown."))
        .take_while(|line| !line.starts_with("//! ```"))
        .map(|line| format!("{}\n", line.trim_start_matches("//!")))
        .collect();
    assert!(example.lines().count() > 20, "the example was not found: {example}");
    let documented = RawConfig::from_toml(&example, Path::new("doc")).unwrap();
    let fx = SettingsFixture::new();
    let base = fx.load(&[]).unwrap();
    let base_raw = RawConfig::from_toml(
        &std::fs::read_to_string(fx.dir.path().join("shoal.toml")).unwrap(),
        Path::new("base"),
    )
    .unwrap();
    assert_eq!(Config::from_raw(base_raw.overridden_by(documented)).unwrap(), base);
}

/// Of two settings refused by validation, the one earlier in the table is reported:
/// validation runs in the table's order, and a setting's checks look only at settings above it.
#[test]
fn first_refusal_in_table_order_is_reported() {
    let fx = SettingsFixture::new();
    let cases = cases();
    // Bad values that reach validation (the flag parser refuses the others first).
    let validated: Vec<&Case> = cases
        .iter()
        .filter(|c| fx.load(&[(c, &c.bad, Source::Flag)]).unwrap_err().starts_with("setting="))
        .collect();
    assert!(validated.len() > 20, "{}", validated.len());
    for (i, earlier) in validated.iter().enumerate() {
        for later in &validated[i + 1..] {
            let err = fx
                .load(&[(earlier, &earlier.bad, Source::Flag), (later, &later.bad, Source::Flag)])
                .unwrap_err();
            assert!(
                err.starts_with(&format!("setting={}:", earlier.key)),
                "{} and {} both bad: {err}",
                earlier.key,
                later.key
            );
        }
    }
}

/// `--help` lists every setting with its flag and its environment variable.
#[test]
fn help_lists_every_setting() {
    let help = Args::command().render_long_help().to_string();
    for case in cases() {
        assert!(help.contains(case.flag), "--help lacks {}:\n{help}", case.flag);
        assert!(
            help.contains(&format!("[env: {}=", case.env)),
            "--help lacks {}:\n{help}",
            case.env
        );
    }
    assert!(help.contains("--config") && help.contains("[env: SHOAL_CONFIG="), "{help}");
}

/// Every TOML key the file accepts is in the table above (a setting added without being
/// pinned here fails), and the defaults documented at the top of the module parse.
#[test]
fn table_covers_every_file_key() {
    let fx = SettingsFixture::new();
    for case in cases() {
        let text = format!("{} = {}\n", case.key, fx.expand(&case.a.toml));
        RawConfig::from_toml(&text, Path::new("x")).unwrap_or_else(|e| panic!("{}: {e}", case.key));
    }
    let full = RawConfig::from_toml(
        &cases()
            .iter()
            .map(|c| format!("{} = {}\n", c.key, fx.expand(&c.a.toml)))
            .collect::<String>(),
        Path::new("x"),
    )
    .unwrap();
    assert_eq!(full.clone().overridden_by(RawConfig::default()), full);
    assert_eq!(RawConfig::default().overridden_by(full.clone()), full);
    let debug = format!("{:?}", RawConfig::default());
    let fields = debug.matches(": None").count();
    assert_eq!(fields, cases().len(), "RawConfig has settings the table lacks: {debug}");
}

/// Writes `bytes` to `path` with mode 0600, as a member key file must be.
pub(super) fn write_owner_only(path: &std::path::Path, bytes: &[u8]) {
    super::write_owner_only_file(path, bytes).unwrap();
}
