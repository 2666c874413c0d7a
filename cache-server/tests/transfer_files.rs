//! The real-filesystem source and sink of file transfer: staging, atomic install, discard,
//! clean-up after a crash, and the donor's description of its files.

use cache_server::transfer::files::{free_bytes, BlockSink, BlockSource, FsSink, FsSource};
use cache_server::transfer::md5_of;
use protocol::message::transfer::{FileOffer, TransFile};
use protocol::Zxid;
use std::path::Path;

fn offer(files: &[(&str, &[u8])]) -> TransFile {
    TransFile {
        transfer: 5,
        donor: 1,
        snapshot_zxid: Zxid(9),
        files: files
            .iter()
            .map(|(name, data)| FileOffer {
                name: name.to_string(),
                size: data.len() as u64,
                md5: md5_of(data),
            })
            .collect(),
        group: "239.255.77.2:7801".to_string(),
        block_bytes: 8192,
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Staged files are invisible at the destination until install, which moves them all at once;
/// what is installed is byte for byte what was written, and the staged MD5 is of the stored
/// bytes.
#[test]
fn fs_sink_installs_only_at_the_end_and_all_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = vec![7u8; 10_000];
    let b = b"hello".to_vec();
    let offer = offer(&[("a", &a), ("b", &b)]);
    let dest = dir.path().join("data");
    let mut sink = FsSink::new(&dest);
    sink.begin(&offer).expect("begin");
    sink.write_at(0, 8192, &a[8192..]).expect("write");
    sink.write_at(0, 0, &a[..8192]).expect("write");
    sink.write_at(1, 0, &b).expect("write");
    assert!(!dest.exists(), "nothing visible before install");
    assert_eq!(entries(dir.path()), vec!["data.partial-5".to_string()]);
    assert_eq!(sink.staged_md5(0).expect("md5"), md5_of(&a));
    assert_eq!(sink.staged_md5(1).expect("md5"), md5_of(&b));
    sink.install().expect("install");
    assert_eq!(entries(dir.path()), vec!["data".to_string()]);
    assert_eq!(std::fs::read(dest.join("a")).expect("a"), a);
    assert_eq!(std::fs::read(dest.join("b")).expect("b"), b);
}

/// Discard removes the staging; a destination that exists is refused (never overwritten);
/// staging left by a crash is removed by `clean_stale`.
#[test]
fn fs_sink_discards_refuses_existing_and_cleans_stale_staging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let offer = offer(&[("a", b"abc")]);
    let mut sink = FsSink::new(dir.path().join("data"));
    sink.begin(&offer).expect("begin");
    sink.write_at(0, 0, b"abc").expect("write");
    sink.discard();
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    std::fs::create_dir(dir.path().join("data")).expect("mkdir");
    let err = FsSink::new(dir.path().join("data")).begin(&offer).expect_err("exists");
    assert!(err.to_string().contains("move it aside"), "{err}");

    // A crash mid-transfer: the sink is forgotten without discard.
    let mut crashed = FsSink::new(dir.path().join("other"));
    crashed.begin(&offer).expect("begin");
    std::mem::forget(crashed);
    assert_eq!(FsSink::clean_stale(dir.path()).expect("clean"), 1);
    assert_eq!(entries(dir.path()), vec!["data".to_string()]);
}

/// The donor's description has each file's name, size and whole-file MD5, and reads return
/// the file's bytes.
#[test]
fn fs_source_describes_and_reads_its_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("0000000001.data");
    std::fs::write(&path, &data).expect("write");
    let empty = dir.path().join("0000000001.hint");
    std::fs::write(&empty, b"").expect("write");
    let mut source = FsSource::open(&[path, empty]).expect("open");
    let described = source.describe().expect("describe");
    assert_eq!(described[0].name, "0000000001.data");
    assert_eq!((described[0].size, described[0].md5), (data.len() as u64, md5_of(&data)));
    assert_eq!((described[1].size, described[1].md5), (0, md5_of(b"")));
    let mut buf = vec![0u8; 8192];
    source.read_at(0, 8192 * 3, &mut buf).expect("read");
    assert_eq!(buf, data[8192 * 3..8192 * 4]);
    assert!(free_bytes(dir.path()).expect("statvfs") > 0);
}
