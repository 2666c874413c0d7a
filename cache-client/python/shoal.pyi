"""Python client of Shoal: bindings of cache-client's BlockingClient (src/lib.rs).

Keys are absolute paths ("/app/config"); values are bytes (a str is written as UTF-8); zxids
are 64-bit ints (epoch in the high 32 bits, counter in the low 32), so they compare in commit
order. Every call that waits on the network releases the GIL.
"""

import os
from types import TracebackType
from typing import Dict, Iterator, List, Literal, Optional, Sequence, Type, Union

Value = Union[bytes, bytearray, str]
ZxidArg = Union[int, str]
"""A zxid as returned (int) or as `shoal` prints it ("EPOCH:COUNTER")."""

class Entry:
    """A value and the zxid of the write that made it."""

    value: bytes
    zxid: int

class DirEntry:
    """One name in a directory listing."""

    name: str
    is_dir: bool
    zxid: int

class Event:
    """One watch event. "created": a create-only put (if_absent), a mkdir, or a rename's
    target; "changed": a plain put (new key or not: the stream does not say); "removed": a
    delete, or a rename's source; "lock_changed" (watch(locks=True)): a lock changed hands;
    "missed": events after `zxid` may have been lost (re-read what you watch); "compacted"
    (watch(from_zxid=...)): the nodes' history no longer holds the events after `zxid` up to
    `oldest` (re-read what you watch; the events after `oldest` follow)."""

    kind: Literal["created", "changed", "removed", "lock_changed", "missed", "compacted"]
    key: Optional[str]
    zxid: int
    holders: List[str]
    oldest: Optional[int]
    """For "compacted": the oldest zxid history still starts after; else None."""

class Stat:
    """The metadata of a key (Client.stat)."""

    zxid: int
    """The zxid of the key's last write (what put(if_zxid=...) compares with)."""
    is_dir: bool
    size: int
    """The value's length in bytes (0 for a directory)."""
    ephemeral: Optional[int]
    """The session that owns the key when it is ephemeral, else None."""

class Client:
    """A connection to a Shoal cluster, with its own cache, routing and lease renewal.

    `cluster` is a cluster file (TOML or JSON, as `shoal dev` writes); by default
    $SHOAL_CLUSTER, else "shoal-dev/cluster.toml". Closing (or leaving a `with` block) closes
    the session: its locks are released and its ephemeral entries deleted.
    """

    def __init__(
        self,
        cluster: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        request_timeout: float = 2.0,
        seeds: Sequence[str] = ...,
    ) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Client": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    @property
    def id(self) -> int: ...
    @property
    def floor(self) -> int:
        """The highest zxid this client has seen; its reads never go below it."""
    # ---- data ----
    def get(self, key: str, *, linearizable: bool = False) -> Optional[bytes]:
        """The value at `key`, or None when absent (read-your-writes, monotonic)."""
    def get_entry(self, key: str, *, linearizable: bool = False) -> Optional[Entry]: ...
    def exists(self, key: str) -> bool: ...
    def is_dir(self, key: str) -> bool: ...
    def put(
        self,
        key: str,
        value: Value,
        *,
        if_zxid: Optional[ZxidArg] = None,
        if_absent: bool = False,
        fence: Optional["Lock"] = None,
    ) -> int:
        """Writes `value` at `key`; returns the zxid. Conditions raise ConditionFailed
        (or AlreadyExists for if_absent) and change nothing."""
    def batch(self, batch: "Batch") -> int:
        """Commits the batch's operations as one entry, only if every condition holds."""
    def mkdir(self, key: str) -> int: ...
    def delete(
        self,
        key: str,
        *,
        recursive: bool = False,
        if_zxid: Optional[ZxidArg] = None,
        fence: Optional["Lock"] = None,
    ) -> int: ...
    def rename(self, source: str, target: str) -> int: ...
    def stat(self, key: str) -> Optional[Stat]:
        """The key's metadata, or None when nothing is there."""
    def list(self, dir: str) -> List[DirEntry]: ...
    def watch(
        self,
        key: str,
        *,
        prefix: bool = False,
        locks: bool = False,
        from_zxid: Optional[ZxidArg] = None,
    ) -> "Watch":
        """Events on `key` (or, with prefix, below it) after this client's floor, or with
        `from_zxid` every event after that zxid (from history, then live)."""
    # ---- locks and transactions ----
    def lock(self, name: str, *, shared: bool = False, wait: Optional[float] = None) -> "Lock":
        """Takes the lock now (LockHeld at once, or WaitTimeout after `wait` seconds)."""
    def held_locks(self) -> List[str]: ...
    def transaction(
        self,
        *,
        read: Sequence[str] = ...,
        write: Sequence[str] = ...,
        wait: Optional[float] = None,
    ) -> "Transaction": ...
    # ---- sessions ----
    def ensure_session(self) -> int: ...
    def create_ephemeral(self, key: str, value: Value) -> int: ...
    def close_session(self) -> None: ...
    @property
    def session_state(self) -> Literal["healthy", "in_danger", "lost"]: ...
    def session(self) -> "Session": ...

class Batch:
    """Several writes committed as one entry by Client.batch; each method returns the batch."""

    def __init__(self) -> None: ...
    def put(self, key: str, value: Value, *, if_absent: bool = False) -> "Batch": ...
    def mkdir(self, key: str) -> "Batch": ...
    def delete(self, key: str, *, recursive: bool = False) -> "Batch": ...
    def rename(self, source: str, target: str) -> "Batch": ...
    def if_zxid(self, key: str, zxid: ZxidArg) -> "Batch": ...
    def if_held(self, lock: "Lock") -> "Batch": ...
    def __len__(self) -> int: ...

class Lock:
    """A held lock, renewed in the background; release() or leaving `with` releases it."""

    @property
    def name(self) -> str: ...
    @property
    def token(self) -> int:
        """The fencing token: the zxid of the grant."""
    @property
    def shared(self) -> bool: ...
    @property
    def held(self) -> bool: ...
    def release(self) -> None:
        """Raises LockLost if the lock had been lost meanwhile."""
    def __enter__(self) -> "Lock": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Transaction:
    """Entering takes the declared keys' locks; leaving commits (or, on an exception,
    discards) the buffered writes as one entry."""

    def __enter__(self) -> "Transaction": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    def read(self, key: str) -> Optional[bytes]: ...
    def write(self, key: str, value: Value) -> None: ...
    def delete(self, key: str) -> None: ...
    def tokens(self) -> Dict[str, int]: ...
    def commit(self) -> int: ...
    def cancel(self) -> None: ...
    @property
    def zxid(self) -> Optional[int]:
        """The commit's zxid once committed, else None."""

class Session:
    """Entering opens the client's session; leaving closes it (ephemerals deleted)."""

    def __enter__(self) -> "Session": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    @property
    def id(self) -> Optional[int]: ...
    def create_ephemeral(self, key: str, value: Value) -> int: ...
    def close(self) -> None: ...

class Watch(Iterator[Event]):
    """Iterating waits for each event (Ctrl-C interrupts); ends once closed."""

    def __iter__(self) -> "Watch": ...
    def __next__(self) -> Event: ...
    def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event within `timeout` seconds, or None."""
    def close(self) -> None: ...
    def __enter__(self) -> "Watch": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

# ---- errors: `code` is the wire error code, or None for an error the client found alone ----

class ShoalError(Exception):
    code: Optional[str]

class NotFound(ShoalError): ...

class Refused(ShoalError):
    """The input was refused; nothing changed."""

class BadKey(Refused): ...
class TooLarge(Refused): ...
class ParentMissing(Refused): ...
class AlreadyExists(Refused): ...
class NotADirectory(Refused): ...
class IsADirectory(Refused): ...
class DirectoryNotEmpty(Refused): ...
class ConditionFailed(Refused): ...
class Undeclared(Refused): ...

class LockError(ShoalError): ...
class LockHeld(LockError): ...
class WaitTimeout(LockError): ...
class LockLost(LockError): ...
class BadAuth(LockError): ...
class SessionLost(LockError): ...

class Unreachable(ShoalError):
    """The cluster cannot be reached or cannot serve now; a retry later may succeed."""

class NotMaster(Unreachable): ...
class Unavailable(Unreachable): ...
class Timeout(Unreachable): ...
class NotServing(Unreachable): ...
class TransportError(Unreachable): ...

class OutcomeUnknown(ShoalError):
    """The write may or may not have been applied: read the key to find out."""

class ServerError(ShoalError): ...
class ProtocolError(ShoalError): ...

class Compacted(ShoalError):
    """History no longer reaches back that far (wire code "Compacted")."""

    oldest: Optional[int]
    """The oldest zxid history still starts after."""
