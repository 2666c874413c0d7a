//! `shoal`: the Python client of Shoal, a thin pyo3 layer over cache-client's
//! [`BlockingClient`], so that Python programs get the same cache, routing, locks, sessions and
//! transactions as Rust ones. Every call that may wait on the network releases the GIL.
//!
//! What Python sees is declared in `shoal.pyi` beside this crate's Cargo.toml (keep the two
//! in step). Keys are absolute paths (`/app/config`), values are `bytes` (a `str` is written
//! as UTF-8), zxids are the 64-bit integers of the README (epoch in the high 32 bits), so they
//! compare in commit order. Errors are exceptions of one hierarchy under `ShoalError`, each
//! with the wire code (`code`, or `None` for an error the client found alone).

use bytes::Bytes;
use cache_client::net::{SocketTransport, CLUSTER_FILE_DEFAULT};
use cache_client::{
    Batch, BlockingClient, BlockingLockGuard, BlockingTxn, ClientConfig, ClientError, Kinds,
    ReadOptions, SessionState, Target, WatchEvent, WatchId,
};
use protocol::message::data::ErrorCode;
use protocol::Zxid;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyString, PyTuple};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Inner = BlockingClient<SocketTransport>;

// ---- exceptions: one class per ClientError variant, grouped as `shoal`'s exit codes are ----

create_exception!(shoal, ShoalError, PyException, "Base of every error of the Shoal client.");
create_exception!(shoal, NotFound, ShoalError, "A remove, rename or list of something absent.");
create_exception!(shoal, Refused, ShoalError, "The input was refused; nothing changed.");
create_exception!(shoal, BadKey, Refused, "The key breaks the namespace rules.");
create_exception!(shoal, TooLarge, Refused, "A value, key or batch over its limit.");
create_exception!(shoal, ParentMissing, Refused, "The parent directory does not exist.");
create_exception!(shoal, AlreadyExists, Refused, "The key exists (a create-only write).");
create_exception!(shoal, NotADirectory, Refused, "The key is not a directory.");
create_exception!(shoal, IsADirectory, Refused, "The key is a directory.");
create_exception!(shoal, DirectoryNotEmpty, Refused, "The directory is not empty.");
create_exception!(shoal, ConditionFailed, Refused, "A condition did not hold; nothing written.");
create_exception!(shoal, Undeclared, Refused, "A transaction touched an undeclared key.");
create_exception!(shoal, LockError, ShoalError, "Base of the lock and session errors.");
create_exception!(shoal, LockHeld, LockError, "The lock is held by another holder.");
create_exception!(shoal, WaitTimeout, LockError, "The lock did not become free in time.");
create_exception!(shoal, LockLost, LockError, "The lock is no longer held by this client.");
create_exception!(shoal, BadAuth, LockError, "A release or renewal named the wrong auth word.");
create_exception!(shoal, SessionLost, LockError, "The session expired or was closed.");
create_exception!(shoal, Unreachable, ShoalError, "The cluster cannot be reached or serve now.");
create_exception!(shoal, NotMaster, Unreachable, "No master accepted the write.");
create_exception!(shoal, Unavailable, Unreachable, "No live node to send to.");
create_exception!(shoal, Timeout, Unreachable, "Every attempt timed out.");
create_exception!(shoal, NotServing, Unreachable, "The node cannot serve this now (retry).");
create_exception!(shoal, TransportError, Unreachable, "The network transport failed.");
create_exception!(shoal, OutcomeUnknown, ShoalError, "A write whose outcome is unknown.");
create_exception!(shoal, ServerError, ShoalError, "The server failed (Internal).");
create_exception!(shoal, ProtocolError, ShoalError, "A reply of the wrong kind (a bug).");
create_exception!(
    shoal,
    Compacted,
    ShoalError,
    "History no longer reaches back that far; `oldest` is the lowest zxid it starts after."
);

/// The name of a wire error code, as `protocol::message::data::ErrorCode` spells it.
fn code_name(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotFound => "NotFound",
        ErrorCode::AlreadyExists => "AlreadyExists",
        ErrorCode::ParentMissing => "ParentMissing",
        ErrorCode::NotADirectory => "NotADirectory",
        ErrorCode::IsADirectory => "IsADirectory",
        ErrorCode::DirectoryNotEmpty => "DirectoryNotEmpty",
        ErrorCode::BadKey => "BadKey",
        ErrorCode::TooLarge => "TooLarge",
        ErrorCode::ConditionFailed => "ConditionFailed",
        ErrorCode::NotMaster { .. } => "NotMaster",
        ErrorCode::LockHeld => "LockHeld",
        ErrorCode::BadAuth => "BadAuth",
        ErrorCode::LockNotHeld => "LockNotHeld",
        ErrorCode::SessionExpired => "SessionExpired",
        ErrorCode::Frozen => "Frozen",
        ErrorCode::Behind => "Behind",
        ErrorCode::Unavailable => "Unavailable",
        ErrorCode::Internal => "Internal",
        ErrorCode::RequestTooOld => "RequestTooOld",
        ErrorCode::BadRequest => "BadRequest",
        ErrorCode::Compacted { .. } => "Compacted",
    }
}

/// The Python exception for `error`: its class, its sentence (the Rust error's), and `code`,
/// the wire code that means it (also for the same refusal found by the client before sending,
/// such as a bad key), or `None` for an error only the client can have.
fn raise(py: Python<'_>, error: ClientError) -> PyErr {
    let message = error.to_string();
    let (err, code): (PyErr, Option<&str>) = match &error {
        ClientError::BadKey(_) => (BadKey::new_err(message), Some("BadKey")),
        ClientError::TooLarge { .. } => (TooLarge::new_err(message), Some("TooLarge")),
        ClientError::ParentMissing { .. } => {
            (ParentMissing::new_err(message), Some("ParentMissing"))
        }
        ClientError::NotFound { .. } => (NotFound::new_err(message), Some("NotFound")),
        ClientError::AlreadyExists { .. } => {
            (AlreadyExists::new_err(message), Some("AlreadyExists"))
        }
        ClientError::NotADirectory { .. } => {
            (NotADirectory::new_err(message), Some("NotADirectory"))
        }
        ClientError::IsADirectory { .. } => (IsADirectory::new_err(message), Some("IsADirectory")),
        ClientError::DirectoryNotEmpty { .. } => {
            (DirectoryNotEmpty::new_err(message), Some("DirectoryNotEmpty"))
        }
        ClientError::ConditionFailed { .. } => {
            (ConditionFailed::new_err(message), Some("ConditionFailed"))
        }
        ClientError::NotMaster { .. } => (NotMaster::new_err(message), Some("NotMaster")),
        ClientError::Unavailable { .. } => (Unavailable::new_err(message), None),
        ClientError::Timeout { .. } => (Timeout::new_err(message), None),
        ClientError::LockHeld { .. } => (LockHeld::new_err(message), Some("LockHeld")),
        ClientError::WaitTimeout { .. } => (WaitTimeout::new_err(message), None),
        ClientError::LockLost { .. } => (LockLost::new_err(message), Some("LockNotHeld")),
        ClientError::BadAuth { .. } => (BadAuth::new_err(message), Some("BadAuth")),
        ClientError::SessionLost { .. } => (SessionLost::new_err(message), Some("SessionExpired")),
        ClientError::Undeclared { .. } => (Undeclared::new_err(message), None),
        ClientError::Refused { code, .. } => {
            let err = match code {
                ErrorCode::BadKey => BadKey::new_err(message),
                ErrorCode::TooLarge => TooLarge::new_err(message),
                _ => Refused::new_err(message),
            };
            (err, Some(code_name(code)))
        }
        ClientError::NotServing { code, .. } => {
            (NotServing::new_err(message), Some(code_name(code)))
        }
        ClientError::OutcomeUnknown { .. } => {
            (OutcomeUnknown::new_err(message), Some("RequestTooOld"))
        }
        ClientError::Server { code, .. } => (ServerError::new_err(message), Some(code_name(code))),
        ClientError::Compacted { oldest, .. } => {
            let err = Compacted::new_err(message);
            if let Err(e) = err.value(py).setattr("oldest", oldest.0) {
                return e;
            }
            (err, Some("Compacted"))
        }
        ClientError::UnexpectedReply(_) => (ProtocolError::new_err(message), None),
        ClientError::Transport(_) => (TransportError::new_err(message), None),
    };
    if let Err(e) = err.value(py).setattr("code", code) {
        return e;
    }
    err
}

fn closed() -> PyErr {
    ShoalError::new_err("the client is closed")
}

// ---- argument conversions ----

/// A value to write: `bytes`, `bytearray` or `str` (written as UTF-8).
fn value_of(value: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Bytes::copy_from_slice(s.to_cow()?.as_bytes()));
    }
    match value.extract::<PyBackedBytes>() {
        Ok(b) => Ok(Bytes::copy_from_slice(&b)),
        Err(_) => Err(PyTypeError::new_err(format!(
            "a value is bytes, bytearray or str, not {}",
            value.get_type().name()?
        ))),
    }
}

/// A zxid argument: the integer this module returns, or the `EPOCH:COUNTER` text `shoal` prints.
fn zxid_of(zxid: &Bound<'_, PyAny>) -> PyResult<Zxid> {
    if let Ok(s) = zxid.cast::<PyString>() {
        return s.to_cow()?.parse::<Zxid>().map_err(PyValueError::new_err);
    }
    match zxid.extract::<u64>() {
        Ok(z) => Ok(Zxid(z)),
        Err(_) => Err(PyTypeError::new_err(
            "a zxid is a non-negative int (as returned) or 'EPOCH:COUNTER' text",
        )),
    }
}

/// A duration in seconds: finite and not negative.
fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!("{what} is a number of seconds, at least 0; got {s}"))
    })
}

fn bytes_out(py: Python<'_>, value: &[u8]) -> Py<PyBytes> {
    PyBytes::new(py, value).unbind()
}

// ---- values returned ----

/// A value and the zxid of the write that made it.
#[pyclass(frozen, module = "shoal", get_all)]
struct Entry {
    value: Py<PyBytes>,
    zxid: u64,
}

#[pymethods]
impl Entry {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Entry(value={}, zxid={})",
            self.value.bind(py).repr().map_or_else(|_| "?".into(), |r| r.to_string()),
            self.zxid
        )
    }
}

/// One name in a directory listing.
#[pyclass(frozen, module = "shoal", get_all)]
struct DirEntry {
    name: String,
    is_dir: bool,
    zxid: u64,
}

#[pymethods]
impl DirEntry {
    fn __repr__(&self) -> String {
        format!("DirEntry(name={:?}, is_dir={}, zxid={})", self.name, self.is_dir, self.zxid)
    }
}

/// One watch event: `kind` is "created", "changed", "removed", "lock_changed", "missed"
/// (events after `zxid` may have been lost: re-read what you watch) or "compacted" (history
/// no longer holds the events after `zxid` up to `oldest`: re-read what you watch; the watch
/// goes on after `oldest`); `key` is the key or lock name (`None` for "missed" and
/// "compacted"); `holders` the lock's holders for "lock_changed".
#[pyclass(frozen, module = "shoal", get_all)]
struct Event {
    kind: &'static str,
    key: Option<String>,
    zxid: u64,
    holders: Vec<String>,
    oldest: Option<u64>,
}

#[pymethods]
impl Event {
    fn __repr__(&self) -> String {
        match (&self.key, self.oldest) {
            (Some(key), _) => format!("Event({}, {:?}, zxid={})", self.kind, key, self.zxid),
            (None, Some(oldest)) => {
                format!("Event({}, zxid={}, oldest={oldest})", self.kind, self.zxid)
            }
            (None, None) => format!("Event({}, zxid={})", self.kind, self.zxid),
        }
    }
}

impl Event {
    fn of(event: WatchEvent) -> Event {
        let (kind, key, zxid, holders, oldest) = match event {
            WatchEvent::Created { key, zxid } => ("created", Some(key), zxid, vec![], None),
            WatchEvent::Changed { key, zxid } => ("changed", Some(key), zxid, vec![], None),
            WatchEvent::Removed { key, zxid } => ("removed", Some(key), zxid, vec![], None),
            WatchEvent::LockChanged { lock, zxid, holders } => {
                ("lock_changed", Some(lock), zxid, holders, None)
            }
            WatchEvent::Missed { after } => ("missed", None, after, vec![], None),
            WatchEvent::Compacted { after, oldest } => {
                ("compacted", None, after, vec![], Some(oldest.0))
            }
        };
        Event { kind, key, zxid: zxid.0, holders, oldest }
    }
}

/// The metadata of a key (see `Client.stat`).
#[pyclass(frozen, module = "shoal", get_all)]
struct Stat {
    /// The zxid of the key's last write (what `put(if_zxid=...)` compares with).
    zxid: u64,
    is_dir: bool,
    /// The value's length in bytes (0 for a directory).
    size: u64,
    /// The session that owns the key when it is ephemeral, else `None`.
    ephemeral: Option<u64>,
}

#[pymethods]
impl Stat {
    fn __repr__(&self) -> String {
        let ephemeral = self.ephemeral.map_or_else(|| "None".to_string(), |s| s.to_string());
        format!(
            "Stat(zxid={}, is_dir={}, size={}, ephemeral={ephemeral})",
            self.zxid,
            if self.is_dir { "True" } else { "False" },
            self.size
        )
    }
}

// ---- the client ----

/// A connection to a Shoal cluster, with its own cache, routing and lease renewal.
#[pyclass(frozen, module = "shoal")]
struct Client {
    inner: Mutex<Option<Arc<Inner>>>,
}

impl Client {
    fn get_inner(&self) -> PyResult<Arc<Inner>> {
        self.inner.lock().expect("client poisoned").clone().ok_or_else(closed)
    }

    /// Runs `f` on the client with the GIL released; a `ClientError` becomes its exception.
    fn call<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Inner) -> Result<R, ClientError> + Send,
    ) -> PyResult<R> {
        let inner = self.get_inner()?;
        py.detach(|| f(&inner)).map_err(|e| raise(py, e))
    }
}

/// The conditions of a write: `if_zxid` (compare-and-set on `key`'s zxid) and `fence` (a lock
/// still held with its token).
fn conditioned(
    mut batch: Batch,
    key: &str,
    if_zxid: Option<&Bound<'_, PyAny>>,
    fence: Option<&Bound<'_, Lock>>,
) -> PyResult<Batch> {
    if let Some(z) = if_zxid {
        batch = batch.if_zxid(key, zxid_of(z)?);
    }
    if let Some(lock) = fence {
        let lock = lock.get();
        batch = batch.if_token(lock.name.clone(), Zxid(lock.token));
    }
    Ok(batch)
}

#[pymethods]
impl Client {
    /// Joins the cluster that `cluster` (a cluster file, TOML or JSON, as `shoal dev` writes)
    /// names; by default `$SHOAL_CLUSTER`, else `shoal-dev/cluster.toml`.
    #[new]
    #[pyo3(signature = (cluster=None, *, request_timeout=2.0, seeds=Vec::new()))]
    fn new(
        py: Python<'_>,
        cluster: Option<PathBuf>,
        request_timeout: f64,
        seeds: Vec<String>,
    ) -> PyResult<Client> {
        let path = cluster
            .or_else(|| std::env::var_os("SHOAL_CLUSTER").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(CLUSTER_FILE_DEFAULT));
        let request_timeout = seconds("request_timeout", request_timeout)?;
        if request_timeout.is_zero() {
            return Err(PyValueError::new_err("request_timeout must be more than 0 seconds"));
        }
        let config = ClientConfig { seeds, request_timeout, ..ClientConfig::default() };
        let inner = py.detach(|| Inner::connect(&path, config)).map_err(|e| raise(py, e))?;
        Ok(Client { inner: Mutex::new(Some(Arc::new(inner))) })
    }

    /// Closes the client: its session (if any) is closed, so its locks are released and its
    /// ephemeral entries deleted; every later call raises `ShoalError`. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(inner) = self.inner.lock().expect("client poisoned").take() else {
            return Ok(());
        };
        let result = py.detach(|| inner.close_session());
        // Locks, watches and transactions keep the runtime alive until they are dropped.
        py.detach(move || drop(inner));
        result.map_err(|e| raise(py, e))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// This client's id (its sender id on the wire).
    #[getter]
    fn id(&self) -> PyResult<u64> {
        Ok(self.get_inner()?.client().id())
    }

    /// The highest zxid this client has seen: its reads never go below it.
    #[getter]
    fn floor(&self) -> PyResult<u64> {
        Ok(self.get_inner()?.floor().0)
    }

    /// The value at `key`, or `None` when absent. Served by the cache or a lightly loaded node,
    /// never older than this client's own writes and reads; `linearizable=True` asks the master.
    #[pyo3(signature = (key, *, linearizable=false))]
    fn get(&self, py: Python<'_>, key: &str, linearizable: bool) -> PyResult<Option<Py<PyBytes>>> {
        let options =
            if linearizable { ReadOptions::linearizable() } else { ReadOptions::default() };
        let read = self.call(py, |c| c.read_with(key, options))?;
        Ok(read.map(|v| bytes_out(py, &v.value)))
    }

    /// Like `get`, with the zxid of the write that made the value (for `put(if_zxid=...)`).
    #[pyo3(signature = (key, *, linearizable=false))]
    fn get_entry(&self, py: Python<'_>, key: &str, linearizable: bool) -> PyResult<Option<Entry>> {
        let options =
            if linearizable { ReadOptions::linearizable() } else { ReadOptions::default() };
        let read = self.call(py, |c| c.read_with(key, options))?;
        Ok(read.map(|v| Entry { value: bytes_out(py, &v.value), zxid: v.zxid.0 }))
    }

    /// Whether `key` exists (a value or a directory).
    fn exists(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        self.call(py, |c| c.exists(key))
    }

    /// Whether `key` is a directory.
    fn is_dir(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        self.call(py, |c| c.is_dir(key))
    }

    /// Writes `value` at `key` (its parent directory must exist); returns the write's zxid.
    /// `if_zxid`: only if `key` is still at that zxid (0: only if absent); `if_absent`: create
    /// only (`AlreadyExists` otherwise); `fence`: only while that lock is held with its token.
    #[pyo3(signature = (key, value, *, if_zxid=None, if_absent=false, fence=None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
        if_zxid: Option<&Bound<'_, PyAny>>,
        if_absent: bool,
        fence: Option<&Bound<'_, Lock>>,
    ) -> PyResult<u64> {
        if if_absent && if_zxid.is_some() {
            return Err(PyValueError::new_err("give if_zxid or if_absent, not both"));
        }
        let value = value_of(value)?;
        let batch = if if_absent {
            Batch::new().create(key, value, None)
        } else {
            Batch::new().write(key, value)
        };
        let batch = conditioned(batch, key, if_zxid, fence)?;
        Ok(self.call(py, |c| c.batch(batch))?.0)
    }

    /// Commits `batch` (a `shoal.Batch`) as one entry; returns its zxid. The batch can be
    /// committed again (a new write each time).
    fn batch(&self, py: Python<'_>, batch: &Bound<'_, PyBatch>) -> PyResult<u64> {
        let batch = batch.get().batch.lock().expect("batch poisoned").clone();
        if batch.is_empty() {
            return Err(PyValueError::new_err("the batch is empty: add an operation first"));
        }
        Ok(self.call(py, |c| c.batch(batch))?.0)
    }

    /// Creates directory `key` (directories are explicit; its parent must exist).
    fn mkdir(&self, py: Python<'_>, key: &str) -> PyResult<u64> {
        Ok(self.call(py, |c| c.mkdir(key))?.0)
    }

    /// Removes `key` (`NotFound` when absent; a non-empty directory only with `recursive`).
    #[pyo3(signature = (key, *, recursive=false, if_zxid=None, fence=None))]
    fn delete(
        &self,
        py: Python<'_>,
        key: &str,
        recursive: bool,
        if_zxid: Option<&Bound<'_, PyAny>>,
        fence: Option<&Bound<'_, Lock>>,
    ) -> PyResult<u64> {
        let batch = conditioned(Batch::new().remove(key, recursive), key, if_zxid, fence)?;
        Ok(self.call(py, |c| c.batch(batch))?.0)
    }

    /// Moves `source` (a key or a whole directory) to `target`, atomically.
    fn rename(&self, py: Python<'_>, source: &str, target: &str) -> PyResult<u64> {
        Ok(self.call(py, |c| c.rename(source, target))?.0)
    }

    /// The metadata of `key` (the zxid of its last write, whether it is a directory, its
    /// value's size, its ephemeral owner), or `None` when nothing is there.
    fn stat(&self, py: Python<'_>, key: &str) -> PyResult<Option<Stat>> {
        let stat = self.call(py, |c| c.stat(key))?;
        Ok(stat.map(|s| Stat {
            zxid: s.zxid.0,
            is_dir: s.is_dir,
            size: s.size,
            ephemeral: s.ephemeral,
        }))
    }

    /// The entries of directory `dir`, by name.
    fn list(&self, py: Python<'_>, dir: &str) -> PyResult<Vec<DirEntry>> {
        let entries = self.call(py, |c| c.list(dir))?;
        Ok(entries
            .into_iter()
            .map(|e| DirEntry { name: e.name, is_dir: e.is_dir, zxid: e.zxid.0 })
            .collect())
    }

    /// Watches `key` (with `prefix=True`, the directory `key` and everything below it): an
    /// iterator of `Event`s in zxid order, from changes after this client's floor. `locks=True`
    /// also reports lock changes (`key` is then a lock name or prefix). `from_zxid`: resume
    /// from that zxid instead (the last one a watcher saw): every event after it once, in
    /// order, from the nodes' history then live; a "compacted" event first when history no
    /// longer reaches back to it.
    #[pyo3(signature = (key, *, prefix=false, locks=false, from_zxid=None))]
    fn watch(
        &self,
        py: Python<'_>,
        key: &str,
        prefix: bool,
        locks: bool,
        from_zxid: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Watch> {
        let inner = self.get_inner()?;
        let from = from_zxid.map(zxid_of).transpose()?;
        let target =
            if prefix { Target::Prefix(key.to_string()) } else { Target::Path(key.to_string()) };
        let kinds = if locks { Kinds::ALL } else { Kinds::DATA };
        let (tx, rx) = mpsc::channel();
        let callback = move |event: &WatchEvent| {
            let _ = tx.send(event.clone());
        };
        let id = match from {
            None => inner.watch(target, kinds, callback),
            Some(from) => inner.watch_from(target, kinds, from, callback),
        }
        .map_err(|e| raise(py, e))?;
        Ok(Watch { rx: Mutex::new(rx), id: Mutex::new(Some(id)), client: inner })
    }

    /// Takes lock `name` (exclusive, or `shared=True`) and returns it held: use it as a context
    /// manager (`with client.lock("/locks/a") as lock:`) to release it on exit. While held it
    /// is renewed in the background. Without `wait` a held lock raises `LockHeld` at once; with
    /// `wait` (seconds) this waits that long for it, then raises `WaitTimeout`.
    #[pyo3(signature = (name, *, shared=false, wait=None))]
    fn lock(&self, py: Python<'_>, name: &str, shared: bool, wait: Option<f64>) -> PyResult<Lock> {
        let inner = self.get_inner()?;
        let wait = wait.map(|w| seconds("wait", w)).transpose()?;
        let guard = py
            .detach(|| match wait {
                None => inner.lock(name, shared),
                Some(wait) => inner.lock_wait(name, shared, wait),
            })
            .map_err(|e| raise(py, e))?;
        Ok(Lock {
            name: guard.name().to_string(),
            token: guard.token().0,
            shared: guard.is_shared(),
            guard: Mutex::new(Some(guard)),
            _client: inner,
        })
    }

    /// Names of the locks this client holds.
    fn held_locks(&self) -> PyResult<Vec<String>> {
        Ok(self.get_inner()?.held_locks())
    }

    /// A transaction over the declared keys, as a context manager: entering takes their locks
    /// (in one global order, waiting at most `wait` seconds for each), reads see the locked
    /// values, writes are buffered, and leaving commits them as one entry (or, on an
    /// exception, discards them); the locks are released either way.
    #[pyo3(signature = (*, read=Vec::new(), write=Vec::new(), wait=None))]
    fn transaction(
        &self,
        read: Vec<String>,
        write: Vec<String>,
        wait: Option<f64>,
    ) -> PyResult<Transaction> {
        let inner = self.get_inner()?;
        let wait = wait.map(|w| seconds("wait", w)).transpose()?;
        Ok(Transaction {
            txn: Mutex::new(None),
            state: Mutex::new(TxnState::Declared { read, write, wait }),
            client: inner,
        })
    }

    // ---- sessions ----

    /// This client's session id, opening the session if needed. The session lives while the
    /// client renews it (in the background); its ephemeral entries are deleted when it ends.
    fn ensure_session(&self, py: Python<'_>) -> PyResult<u64> {
        self.call(py, |c| c.ensure_session())
    }

    /// Creates `key` with `value` as an ephemeral entry of this client's session (opened if
    /// needed): it is deleted when the session is closed or expires.
    fn create_ephemeral(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let value = value_of(value)?;
        Ok(self.call(py, |c| c.create_ephemeral(key, value))?.0)
    }

    /// Closes the session: its ephemeral entries are deleted and its locks released. The next
    /// lock or ephemeral entry opens a new one.
    fn close_session(&self, py: Python<'_>) -> PyResult<()> {
        self.call(py, |c| c.close_session())
    }

    /// The session's state: "healthy", "in_danger" (renewals failing, less than half the lease
    /// left: hold back side effects that rely on a lock without fencing) or "lost".
    #[getter]
    fn session_state(&self) -> PyResult<&'static str> {
        let state = *self.get_inner()?.session_state().borrow();
        Ok(match state {
            SessionState::Healthy => "healthy",
            SessionState::InDanger => "in_danger",
            SessionState::Lost => "lost",
        })
    }

    /// The session as a context manager: entering opens it, leaving closes it (deleting its
    /// ephemeral entries and releasing its locks).
    fn session(&self) -> PyResult<Session> {
        Ok(Session { client: self.get_inner()?, id: Mutex::new(None) })
    }
}

// ---- batches ----

/// Several writes committed as one entry, atomically, only if every condition holds:
/// `client.batch(shoal.Batch().put("/a", b"1").delete("/b").if_zxid("/c", z))`. Each method
/// adds to the batch and returns it.
#[pyclass(frozen, module = "shoal", name = "Batch")]
struct PyBatch {
    batch: Mutex<Batch>,
}

impl PyBatch {
    fn add(slf: &Bound<'_, Self>, f: impl FnOnce(Batch) -> Batch) {
        let mut batch = slf.get().batch.lock().expect("batch poisoned");
        *batch = f(std::mem::take(&mut *batch));
    }
}

#[pymethods]
impl PyBatch {
    #[new]
    fn new() -> PyBatch {
        PyBatch { batch: Mutex::new(Batch::new()) }
    }

    /// Writes `value` at `key` (`if_absent`: create only).
    #[pyo3(signature = (key, value, *, if_absent=false))]
    fn put<'py>(
        slf: Bound<'py, Self>,
        key: String,
        value: &Bound<'py, PyAny>,
        if_absent: bool,
    ) -> PyResult<Bound<'py, Self>> {
        let value = value_of(value)?;
        Self::add(
            &slf,
            |b| if if_absent { b.create(key, value, None) } else { b.write(key, value) },
        );
        Ok(slf)
    }

    fn mkdir(slf: Bound<'_, Self>, key: String) -> Bound<'_, Self> {
        Self::add(&slf, |b| b.mkdir(key));
        slf
    }

    #[pyo3(signature = (key, *, recursive=false))]
    fn delete(slf: Bound<'_, Self>, key: String, recursive: bool) -> Bound<'_, Self> {
        Self::add(&slf, |b| b.remove(key, recursive));
        slf
    }

    fn rename(slf: Bound<'_, Self>, source: String, target: String) -> Bound<'_, Self> {
        Self::add(&slf, |b| b.rename(source, target));
        slf
    }

    /// Only if `key` is still at `zxid` (0: only if absent).
    fn if_zxid<'py>(
        slf: Bound<'py, Self>,
        key: String,
        zxid: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, Self>> {
        let zxid = zxid_of(zxid)?;
        Self::add(&slf, |b| b.if_zxid(key, zxid));
        Ok(slf)
    }

    /// Only while `lock` is held with its fencing token.
    fn if_held<'py>(slf: Bound<'py, Self>, lock: &Bound<'py, Lock>) -> Bound<'py, Self> {
        let lock = lock.get();
        let (name, token) = (lock.name.clone(), Zxid(lock.token));
        Self::add(&slf, |b| b.if_token(name, token));
        slf
    }

    fn __len__(&self) -> usize {
        self.batch.lock().expect("batch poisoned").ops().len()
    }
}

// ---- locks ----

/// A held lock. `token` is its fencing token (the zxid of the grant): pass the lock as
/// `fence=` to a write to make it conditional on still holding it.
#[pyclass(frozen, module = "shoal")]
struct Lock {
    /// Dropped before `_client` (fields drop in order): its release runs on the client's
    /// runtime, which `_client` keeps alive.
    guard: Mutex<Option<BlockingLockGuard<SocketTransport>>>,
    _client: Arc<Inner>,
    name: String,
    token: u64,
    shared: bool,
}

#[pymethods]
impl Lock {
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn token(&self) -> u64 {
        self.token
    }

    #[getter]
    fn shared(&self) -> bool {
        self.shared
    }

    /// Whether the client still counts on the lock (false once released, expired or lost).
    #[getter]
    fn held(&self) -> bool {
        self.guard.lock().expect("lock poisoned").as_ref().is_some_and(|g| g.is_held())
    }

    /// Releases the lock and waits for the master's answer; raises `LockLost` if it had been
    /// lost meanwhile. Does nothing when already released.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let guard = self.guard.lock().expect("lock poisoned").take();
        match guard {
            None => Ok(()),
            Some(guard) => py.detach(|| guard.release()).map_err(|e| raise(py, e)),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Lock({:?}, token={}, shared={})", self.name, self.token, self.shared)
    }
}

// ---- transactions ----

enum TxnState {
    Declared { read: Vec<String>, write: Vec<String>, wait: Option<Duration> },
    Running,
    Committed(Zxid),
    Cancelled,
}

/// A transaction (see `Client.transaction`).
#[pyclass(frozen, module = "shoal")]
struct Transaction {
    /// Dropped before `client`: an unfinished transaction's locks are released on its runtime.
    txn: Mutex<Option<BlockingTxn<SocketTransport>>>,
    state: Mutex<TxnState>,
    client: Arc<Inner>,
}

impl Transaction {
    /// Runs `f` on the running transaction with the GIL released.
    fn with_txn<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut BlockingTxn<SocketTransport>) -> Result<R, ClientError> + Send,
    ) -> PyResult<R> {
        let result = py.detach(|| {
            let mut txn = self.txn.lock().expect("transaction poisoned");
            txn.as_mut().map(f)
        });
        match result {
            None => {
                Err(ShoalError::new_err("the transaction is not running: use it inside `with`"))
            }
            Some(r) => r.map_err(|e| raise(py, e)),
        }
    }
}

#[pymethods]
impl Transaction {
    /// Takes the locks of every declared key (in one global order).
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        let this = slf.get();
        let declared = {
            let mut state = this.state.lock().expect("transaction poisoned");
            match std::mem::replace(&mut *state, TxnState::Running) {
                TxnState::Declared { read, write, wait } => (read, write, wait),
                other => {
                    *state = other;
                    return Err(ShoalError::new_err("a transaction can be entered only once"));
                }
            }
        };
        let (read, write, wait) = declared;
        let client = &this.client;
        let begun = py.detach(|| {
            let mut builder = client.transaction();
            for key in read {
                builder = builder.read(key);
            }
            for key in write {
                builder = builder.write(key);
            }
            if let Some(wait) = wait {
                builder = builder.wait(wait);
            }
            builder.begin()
        });
        match begun {
            Ok(txn) => {
                *this.txn.lock().expect("transaction poisoned") = Some(txn);
                Ok(slf)
            }
            Err(e) => {
                *this.state.lock().expect("transaction poisoned") = TxnState::Cancelled;
                Err(raise(py, e))
            }
        }
    }

    /// Commits when the block ended normally, else discards the writes; releases the locks.
    #[pyo3(signature = (exc_type, _exc_value=None, _traceback=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let running = self.txn.lock().expect("transaction poisoned").is_some();
        if !running {
            return Ok(false);
        }
        if exc_type.is_some_and(|t| !t.is_none()) {
            // The block's exception goes on; a failed release only leaves the locks to expire.
            let _ = self.cancel(py);
        } else {
            self.commit(py)?;
        }
        Ok(false)
    }

    /// The value of `key` under its lock (or this transaction's own buffered write).
    fn read(&self, py: Python<'_>, key: &str) -> PyResult<Option<Py<PyBytes>>> {
        let value = self.with_txn(py, |t| t.read(key))?;
        Ok(value.map(|v| bytes_out(py, &v)))
    }

    /// Buffers a write of `value` at `key` (declared in `write=`).
    fn write(&self, py: Python<'_>, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = value_of(value)?;
        self.with_txn(py, |t| t.write(key, value))
    }

    /// Buffers a removal of `key` (declared in `write=`).
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        self.with_txn(py, |t| t.remove(key))
    }

    /// The fencing tokens of the transaction's locks, by key.
    fn tokens(&self, py: Python<'_>) -> PyResult<std::collections::BTreeMap<String, u64>> {
        let tokens = self.with_txn(py, |t| Ok(t.tokens()))?;
        Ok(tokens.into_iter().map(|(k, z)| (k, z.0)).collect())
    }

    /// Commits now (as leaving the block would), only if every lock is still held; returns the
    /// zxid of the one entry.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        let txn = self.txn.lock().expect("transaction poisoned").take();
        let Some(txn) = txn else {
            return Err(ShoalError::new_err("the transaction is not running"));
        };
        let result = py.detach(|| txn.commit());
        let mut state = self.state.lock().expect("transaction poisoned");
        match result {
            Ok(zxid) => {
                *state = TxnState::Committed(zxid);
                Ok(zxid.0)
            }
            Err(e) => {
                *state = TxnState::Cancelled;
                Err(raise(py, e))
            }
        }
    }

    /// Discards the buffered writes and releases the locks.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        let txn = self.txn.lock().expect("transaction poisoned").take();
        let Some(txn) = txn else { return Ok(()) };
        *self.state.lock().expect("transaction poisoned") = TxnState::Cancelled;
        py.detach(|| txn.cancel()).map_err(|e| raise(py, e))
    }

    /// The zxid of the commit, once committed; else `None`.
    #[getter]
    fn zxid(&self) -> Option<u64> {
        match *self.state.lock().expect("transaction poisoned") {
            TxnState::Committed(z) => Some(z.0),
            _ => None,
        }
    }
}

// ---- sessions ----

/// The client's session as a context manager (see `Client.session`).
#[pyclass(frozen, module = "shoal")]
struct Session {
    client: Arc<Inner>,
    id: Mutex<Option<u64>>,
}

#[pymethods]
impl Session {
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        let py = slf.py();
        let this = slf.get();
        let id = py.detach(|| this.client.ensure_session()).map_err(|e| raise(py, e))?;
        *this.id.lock().expect("session poisoned") = Some(id);
        Ok(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// The session id (`None` before entering).
    #[getter]
    fn id(&self) -> Option<u64> {
        *self.id.lock().expect("session poisoned")
    }

    /// Creates `key` as an ephemeral entry of this session.
    fn create_ephemeral(
        &self,
        py: Python<'_>,
        key: &str,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        let value = value_of(value)?;
        let zxid =
            py.detach(|| self.client.create_ephemeral(key, value)).map_err(|e| raise(py, e))?;
        Ok(zxid.0)
    }

    /// Closes the session: its ephemeral entries are deleted and its locks released.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.client.close_session()).map_err(|e| raise(py, e))
    }
}

// ---- watches ----

/// The events of one watch, as an iterator (each `next` waits for the next event; Ctrl-C
/// interrupts it). `get(timeout)` waits at most `timeout` seconds and returns `None` then.
/// `close()` (or leaving a `with` block) ends the watch.
#[pyclass(frozen, module = "shoal")]
struct Watch {
    rx: Mutex<mpsc::Receiver<WatchEvent>>,
    id: Mutex<Option<WatchId>>,
    client: Arc<Inner>,
}

/// How often a waiting `next` looks for a signal (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

impl Watch {
    /// The next event within `timeout` (forever when `None`); `Ok(None)` at the timeout or
    /// once the watch is closed.
    fn next_within(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Event>> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if self.id.lock().expect("watch poisoned").is_none() {
                return Ok(None);
            }
            let step = match deadline {
                None => SIGNAL_POLL,
                Some(d) => d.saturating_duration_since(std::time::Instant::now()).min(SIGNAL_POLL),
            };
            let got = py.detach(|| self.rx.lock().expect("watch poisoned").recv_timeout(step));
            match got {
                Ok(event) => return Ok(Some(Event::of(event))),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    py.check_signals()?;
                    if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

#[pymethods]
impl Watch {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Event>> {
        // `None` ends the iteration (the watch was closed).
        self.next_within(py, None)
    }

    /// The next event, waiting at most `timeout` seconds (forever when `None`); `None` when
    /// none came in time or the watch is closed.
    #[pyo3(signature = (timeout=None))]
    fn get(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Event>> {
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        self.next_within(py, timeout)
    }

    /// Ends the watch; iteration stops. Idempotent.
    fn close(&self) {
        if let Some(id) = self.id.lock().expect("watch poisoned").take() {
            self.client.unwatch(id);
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.close();
    }
}

#[pymodule]
fn shoal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<Lock>()?;
    m.add_class::<Transaction>()?;
    m.add_class::<Session>()?;
    m.add_class::<Watch>()?;
    m.add_class::<Event>()?;
    m.add_class::<Entry>()?;
    m.add_class::<PyBatch>()?;
    m.add_class::<DirEntry>()?;
    m.add_class::<Stat>()?;
    macro_rules! exceptions {
        ($($name:ident),*) => {
            $(
                let class = py.get_type::<$name>();
                // Every instance has `code`, also one raised from Python.
                class.setattr("code", py.None())?;
                m.add(stringify!($name), class)?;
            )*
        };
    }
    exceptions!(
        ShoalError,
        NotFound,
        Refused,
        BadKey,
        TooLarge,
        ParentMissing,
        AlreadyExists,
        NotADirectory,
        IsADirectory,
        DirectoryNotEmpty,
        ConditionFailed,
        Undeclared,
        LockError,
        LockHeld,
        WaitTimeout,
        LockLost,
        BadAuth,
        SessionLost,
        Unreachable,
        NotMaster,
        Unavailable,
        Timeout,
        NotServing,
        TransportError,
        OutcomeUnknown,
        ServerError,
        ProtocolError,
        Compacted
    );
    py.get_type::<Compacted>().setattr("oldest", py.None())?;
    Ok(())
}
