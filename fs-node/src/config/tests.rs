//! The configuration's unit tests: defaults, overrides and each refusal by name.

use super::*;
use clap::Parser;
use protocol::limits::{KEY_BYTES_HARD_MAX, VALUE_BYTES_HARD_MAX};
use std::io::Write;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef\n";
const MEMBER_KEY: &[u8] = b"member key: 0123456789abcdef0123\n";

/// A key file and a valid three-node TOML naming it, in a temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.key"), KEY).unwrap();
        super::every_setting::write_owner_only(&dir.path().join("member.key"), MEMBER_KEY);
        Fixture { dir }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("cluster.key")
    }

    fn toml(&self, extra: &str, members: &str) -> String {
        format!(
            "node_id = 2\ndata_dir = {:?}\ncluster_id = 7\ncluster_key_file = {:?}\nmember_key_file = {:?}\n{extra}\n[members]\n{members}\n",
            self.dir.path().join("data"),
            self.key_path(),
            self.dir.path().join("member.key"),
        )
    }

    fn write(&self, extra: &str, members: &str) -> PathBuf {
        let path = self.dir.path().join("shoal.toml");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(self.toml(extra, members).as_bytes()).unwrap();
        path
    }

    fn load(&self, extra: &str, members: &str) -> Result<Config, ConfigError> {
        Config::from_sources(Some(&self.write(extra, members)), RawConfig::default())
    }
}

const THREE: &str = "1 = \"127.0.0.1:7701\"\n2 = \"127.0.0.1:7702\"\n3 = \"127.0.0.1:7703\"";

/// A minimal file yields the design's defaults, the members by id, and the key without
/// its trailing newline.
#[test]
fn minimal_file_gets_design_defaults() {
    let fx = Fixture::new();
    let config = fx.load("", THREE).unwrap();
    assert_eq!(config.node_id, 2);
    assert_eq!(config.own_addr(), "127.0.0.1:7702".parse().unwrap());
    assert_eq!(config.members.len(), 3);
    assert_eq!(config.quorum(), 2);
    assert!(!config.is_single_node());
    assert_eq!(config.multicast_group, "239.255.77.1:7700".parse().unwrap());
    assert_eq!(config.multicast_interface, Ipv4Addr::LOCALHOST);
    assert_eq!(
        (config.multicast_ttl, config.multicast_loopback, config.multicast),
        (1, true, true)
    );
    assert_eq!((config.fslive_interval_ms, config.fslive_validity_ms), (30_000, 70_000));
    assert_eq!(config.lock_ttl_ms, 5_000);
    assert_eq!((config.key_bytes_max, config.value_bytes_max), (4096, 16 << 20));
    assert_eq!(config.cluster_key.0, &KEY[..KEY.len() - 1]);
    assert_eq!(config.cluster_auth().cluster_id, 7);
    assert_eq!(config.metrics_addr, None);
}

/// The key never appears in Debug output (it may end up in logs).
#[test]
fn debug_hides_the_key() {
    let config = Fixture::new().load("", THREE).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
    assert!(shown.contains("ClusterKey(32 bytes)"));
}

/// Flags override the file, setting by setting; unset flags leave the file's values.
#[test]
fn flags_override_file() {
    let _env = super::every_setting::ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new();
    let path = fx.write("lock_ttl_ms = 9000\nmulticast_ttl = 3", THREE);
    let args = Args::try_parse_from([
        "shoal-fs",
        "--config",
        path.to_str().unwrap(),
        "--node-id",
        "3",
        "--multicast-ttl",
        "4",
        "--multicast-loopback",
        "false",
        "--metrics-addr",
        "127.0.0.1:9900",
    ])
    .unwrap();
    let config = args.load().unwrap();
    assert_eq!(config.node_id, 3);
    assert_eq!(config.multicast_ttl, 4);
    assert!(!config.multicast_loopback);
    assert_eq!(config.lock_ttl_ms, 9000, "file value kept when no flag");
    assert_eq!(config.metrics_addr, Some("127.0.0.1:9900".parse().unwrap()));
}

/// `--member` flags replace the file's member list; a malformed one names the setting.
#[test]
fn member_flags_replace_file_members() {
    let _env = super::every_setting::ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new();
    let path = fx.write("", THREE);
    let args = Args::try_parse_from([
        "shoal-fs",
        "--config",
        path.to_str().unwrap(),
        "--member",
        "2=127.0.0.1:8802",
    ])
    .unwrap();
    let config = args.load().unwrap();
    assert!(config.is_single_node());
    assert_eq!(config.own_addr(), "127.0.0.1:8802".parse().unwrap());

    let bad = Args::try_parse_from(["shoal-fs", "--member", "2:127.0.0.1:8802"]).unwrap();
    assert_eq!(bad.overrides().unwrap_err().setting(), Some("members"));
}

/// The environment variable of a setting is read when its flag is absent.
#[test]
fn environment_variables_are_read() {
    let _env = super::every_setting::ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Only this test sets or reads SHOAL_FSLIVE_INTERVAL_MS.
    std::env::set_var("SHOAL_FSLIVE_INTERVAL_MS", "12345");
    let args = Args::try_parse_from(["shoal-fs"]).unwrap();
    std::env::remove_var("SHOAL_FSLIVE_INTERVAL_MS");
    assert_eq!(args.fslive_interval_ms, Some(12345));
    let flag = Args::try_parse_from(["shoal-fs", "--fslive-interval-ms", "7"]).unwrap();
    assert_eq!(flag.fslive_interval_ms, Some(7));
}

/// Node ids outside 1..=7 are refused, naming node_id.
#[test]
fn bad_node_id_refused() {
    let fx = Fixture::new();
    for id in ["0", "8", "-1", "300"] {
        let over = RawConfig { node_id: Some(id.parse().unwrap()), ..RawConfig::default() };
        let err = Config::from_sources(Some(&fx.write("", THREE)), over).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { setting: "node_id", .. }), "{id}: {err}");
    }
}

/// A node id absent from the members is refused with the listed ids and the fix.
#[test]
fn node_not_in_members_refused() {
    let fx = Fixture::new();
    let members = "1 = \"127.0.0.1:7701\"\n3 = \"127.0.0.1:7703\"\n4 = \"127.0.0.1:7704\"";
    let err = fx.load("", members).unwrap_err();
    assert!(
        matches!(&err, ConfigError::NodeNotMember { node_id: 2, members } if members == &[1, 3, 4])
    );
    assert!(err.to_string().contains("fix: add `2 = \"ip:port\"`"), "{err}");
}

/// Member counts other than 1, 3, 5, 7 are refused; 1 is the single-node dev mode.
#[test]
fn cluster_size_must_be_1_3_5_or_7() {
    let fx = Fixture::new();
    let two = "1 = \"127.0.0.1:7701\"\n2 = \"127.0.0.1:7702\"";
    assert!(matches!(fx.load("", two), Err(ConfigError::ClusterSize { count: 2 })));
    let four = format!("{THREE}\n4 = \"127.0.0.1:7704\"");
    assert!(matches!(fx.load("", &four), Err(ConfigError::ClusterSize { count: 4 })));
    let one = fx.load("", "2 = \"127.0.0.1:7702\"").unwrap();
    assert!(one.is_single_node());
    assert_eq!(one.quorum(), 1);
    let five: String = (1..=5).map(|i| format!("{i} = \"127.0.0.1:770{i}\"\n")).collect();
    assert_eq!(fx.load("", &five).unwrap().quorum(), 3);
}

/// Bad addresses are refused, each naming its setting: a member, a shared member address,
/// a non-multicast group, an interface, a unicast peer, the metrics address.
#[test]
fn bad_addresses_refused() {
    let fx = Fixture::new();
    let cases = [
        ("", "1 = \"127.0.0.1:7701\"\n2 = \"localhost:7702\"\n3 = \"127.0.0.1:7703\"", "members"),
        ("", "1 = \"127.0.0.1:7701\"\n2 = \"127.0.0.1\"\n3 = \"127.0.0.1:7703\"", "members"),
        ("", "1 = \"127.0.0.1:7701\"\n2 = \"127.0.0.1:7701\"\n3 = \"127.0.0.1:7703\"", "members"),
        ("", "1 = \"127.0.0.1:7701\"\n9 = \"127.0.0.1:7702\"\n2 = \"127.0.0.1:7703\"", "members"),
        ("multicast_group = \"10.0.0.1:7700\"", THREE, "multicast_group"),
        ("multicast_group = \"239.255.77.1\"", THREE, "multicast_group"),
        ("multicast_interface = \"eth0\"", THREE, "multicast_interface"),
        ("multicast_ttl = 256", THREE, "multicast_ttl"),
        ("unicast_peers = [\"127.0.0.1:7800\", \"nope\"]", THREE, "unicast_peers"),
        ("metrics_addr = \"127.0.0.1:0\"", THREE, "metrics_addr"),
    ];
    for (extra, members, setting) in cases {
        let err = fx.load(extra, members).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { setting: s, .. } if s == setting),
            "{extra} / {members}: {err}"
        );
    }
}

/// A missing or unreadable key file is refused with its path and how to make one; a short
/// key (after trimming whitespace) is refused too.
#[test]
fn key_file_problems_refused() {
    let fx = Fixture::new();
    std::fs::remove_file(fx.key_path()).unwrap();
    let err = fx.load("", THREE).unwrap_err();
    assert!(matches!(err, ConfigError::KeyFile { .. }), "{err}");
    assert!(err.to_string().contains("head -c 32 /dev/urandom"), "{err}");

    std::fs::create_dir(fx.key_path()).unwrap(); // a directory is not a readable key
    assert!(matches!(fx.load("", THREE), Err(ConfigError::KeyFile { .. })));
    std::fs::remove_dir(fx.key_path()).unwrap();

    std::fs::write(fx.key_path(), b"short key      \n").unwrap();
    assert!(matches!(fx.load("", THREE), Err(ConfigError::KeyTooShort { len: 9, min: 16, .. })));
}

/// Key and value limits above the protocol's hard maxima are refused with the maximum.
#[test]
fn limits_over_hard_max_refused() {
    let fx = Fixture::new();
    let err = fx.load(&format!("key_bytes_max = {}", KEY_BYTES_HARD_MAX + 1), THREE).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::OverHardMax { setting: "key_bytes_max", max: KEY_BYTES_HARD_MAX, .. }
    ));
    let err =
        fx.load(&format!("value_bytes_max = {}", VALUE_BYTES_HARD_MAX + 1), THREE).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::OverHardMax { setting: "value_bytes_max", max: VALUE_BYTES_HARD_MAX, .. }
    ));
    let at_max = fx
        .load(
            &format!(
                "key_bytes_max = {KEY_BYTES_HARD_MAX}\nvalue_bytes_max = {VALUE_BYTES_HARD_MAX}"
            ),
            THREE,
        )
        .unwrap();
    assert_eq!(
        (at_max.key_bytes_max, at_max.value_bytes_max),
        (KEY_BYTES_HARD_MAX, VALUE_BYTES_HARD_MAX)
    );
}

/// An unknown key in the file is refused, and the message names it (a typo must not be
/// silently ignored).
#[test]
fn unknown_toml_key_named() {
    let fx = Fixture::new();
    let err = fx.load("lock_tll_ms = 100", THREE).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("lock_tll_ms"), "{err}");
}

/// Timing settings that contradict each other are refused, naming the later setting.
#[test]
fn inconsistent_timings_refused() {
    let fx = Fixture::new();
    let cases = [
        ("fslive_validity_ms = 30000", "fslive_validity_ms"),
        ("lock_ttl_ms = 0", "lock_ttl_ms"),
        ("heartbeat_interval_ms = 300", "election_timeout_ms"),
        ("lease_ms = 500", "lease_ms"),
        ("drift_margin_ms = 300", "drift_margin_ms"),
    ];
    for (extra, setting) in cases {
        let err = fx.load(extra, THREE).unwrap_err();
        assert_eq!(err.setting(), Some(setting), "{extra}: {err}");
    }
}

/// Snapshot, log and transfer settings: defaults when absent, taken from the file, and
/// refused by name when they cannot work.
#[test]
fn snapshot_and_transfer_settings() {
    let fx = Fixture::new();
    let default = fx.load("", THREE).unwrap();
    assert_eq!(default.snapshot_entries, SNAPSHOT_ENTRIES_DEFAULT);
    assert_eq!(default.log_retention_entries, LOG_RETENTION_ENTRIES_DEFAULT);
    assert_eq!(default.transfer_rate_bytes_per_s, TRANSFER_RATE_BYTES_PER_S_DEFAULT);
    let set = fx
        .load(
            "snapshot_entries = 300\nsnapshot_log_bytes = 1000\nlog_segment_bytes = \
             65536\nlog_retention_entries = 10\ntransfer_rate_bytes_per_s = 65536",
            THREE,
        )
        .unwrap();
    assert_eq!(
        (
            set.snapshot_entries,
            set.snapshot_log_bytes,
            set.log_segment_bytes,
            set.log_retention_entries,
            set.transfer_rate_bytes_per_s
        ),
        (300, 1000, 65536, 10, 65536)
    );
    let cases = [
        ("snapshot_entries = 0", "snapshot_entries"),
        ("snapshot_log_bytes = 0", "snapshot_log_bytes"),
        ("log_segment_bytes = 100", "log_segment_bytes"),
        ("transfer_rate_bytes_per_s = 1000", "transfer_rate_bytes_per_s"),
    ];
    for (extra, setting) in cases {
        let err = fx.load(extra, THREE).unwrap_err();
        assert_eq!(err.setting(), Some(setting), "{extra}: {err}");
    }
}

/// Required settings that are absent are refused by name, with what to set.
#[test]
fn missing_settings_named() {
    let fx = Fixture::new();
    let full = RawConfig::from_toml(&fx.toml("", THREE), Path::new("x")).unwrap();
    assert!(Config::from_raw(full.clone()).is_ok());
    type Clear = fn(&mut RawConfig);
    let cases: [(&str, Clear); 6] = [
        ("node_id", |r| r.node_id = None),
        ("members", |r| r.members = None),
        ("data_dir", |r| r.data_dir = None),
        ("cluster_id", |r| r.cluster_id = None),
        ("cluster_key_file", |r| r.cluster_key_file = None),
        ("member_key_file", |r| r.member_key_file = None),
    ];
    for (setting, clear) in cases {
        let mut raw = full.clone();
        clear(&mut raw);
        let err = Config::from_raw(raw).unwrap_err();
        assert!(matches!(err, ConfigError::Missing { setting: s, .. } if s == setting), "{err}");
    }
}

/// A data_dir that exists as a file is refused; a missing one is fine (created later).
#[test]
fn data_dir_must_not_be_a_file() {
    let fx = Fixture::new();
    std::fs::write(fx.dir.path().join("data"), b"").unwrap();
    let err = fx.load("", THREE).unwrap_err();
    assert_eq!(err.setting(), Some("data_dir"), "{err}");
}

/// An unreadable config file is an error naming the path.
#[test]
fn missing_config_file_named() {
    let err =
        Config::from_sources(Some(Path::new("/nonexistent/shoal.toml")), RawConfig::default())
            .unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }));
    assert!(err.to_string().contains("/nonexistent/shoal.toml"));
}

/// The member key file is refused, by name and with the fix, when others can read it, when
/// it holds the cluster key (which every client has), or when it is short; nothing of it is
/// printed; a valid one gives the node a member key apart from the cluster key.
#[test]
fn member_key_file_rules() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let config = fx.load("", THREE).unwrap();
    assert_eq!(config.member_key.0, &MEMBER_KEY[..MEMBER_KEY.len() - 1]);
    assert!(config.cluster_auth().is_member() && config.cluster_auth().is_member_id(3));
    assert!(!format!("{config:?}").contains("member key:"));
    let path = fx.dir.path().join("member.key");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = fx.load("", THREE).unwrap_err();
    assert!(matches!(err, ConfigError::KeyFileReadable { mode: 0o640, .. }), "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert_eq!(err.setting(), Some("member_key_file"));

    super::every_setting::write_owner_only(&path, KEY);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = fx.load("", THREE).unwrap_err();
    assert!(matches!(err, ConfigError::MemberKeyIsClusterKey { .. }), "{err}");

    super::every_setting::write_owner_only(&path, b"short");
    let err = fx.load("", THREE).unwrap_err();
    assert!(matches!(err, ConfigError::KeyTooShort { setting: "member_key_file", .. }), "{err}");

    std::fs::remove_file(&path).unwrap();
    let err = fx.load("", THREE).unwrap_err();
    assert!(matches!(err, ConfigError::KeyFile { setting: "member_key_file", .. }), "{err}");
}
