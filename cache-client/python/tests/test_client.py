"""The Python client against a real `shoal dev` cluster: the data calls, watches, locks,
transactions, sessions and the exception mapping."""

import os
import threading
import time

import pytest

import shoal

WAIT = 10.0  # seconds: the most any awaited event may take
LOCK_TTL = 5.0  # seconds: the lock lease of a `shoal dev` cluster (the default)


def test_put_get_round_trip(client, root):
    zxid = client.put(f"{root}/k", b"\x00value\xff")
    assert isinstance(zxid, int) and zxid > 0
    assert client.get(f"{root}/k") == b"\x00value\xff"
    entry = client.get_entry(f"{root}/k")
    assert entry.value == b"\x00value\xff" and entry.zxid == zxid
    assert client.put(f"{root}/s", "text é") > zxid, "zxids grow in commit order"
    assert client.get(f"{root}/s") == "text é".encode()
    assert client.get(f"{root}/absent") is None
    assert client.get_entry(f"{root}/absent") is None
    assert client.exists(f"{root}/k") and not client.exists(f"{root}/absent")
    assert client.is_dir(root) and not client.is_dir(f"{root}/k")


def test_read_your_writes_and_another_clients_write(client, other, root):
    key = f"{root}/shared"
    client.put(key, b"one")
    assert client.get(key) == b"one", "a client reads its own write at once"
    written = other.put(key, b"two")
    # Linearizable: the master answers, so the other client's acknowledged write is seen.
    assert client.get(key, linearizable=True) == b"two"
    assert client.floor >= written
    # And the floor keeps plain reads from going back to the old value.
    assert client.get(key) == b"two"
    assert other.get(key) == b"two"


def test_delete(client, root):
    key = f"{root}/gone"
    client.put(key, b"x")
    assert client.delete(key) > 0
    assert client.get(key) is None
    with pytest.raises(shoal.NotFound) as err:
        client.delete(key)
    assert err.value.code == "NotFound"
    client.mkdir(f"{root}/d")
    client.put(f"{root}/d/x", b"1")
    with pytest.raises(shoal.DirectoryNotEmpty):
        client.delete(f"{root}/d")
    client.delete(f"{root}/d", recursive=True)
    assert not client.exists(f"{root}/d")


def test_rename(client, root):
    client.put(f"{root}/a", b"moved")
    client.rename(f"{root}/a", f"{root}/b")
    assert client.get(f"{root}/a") is None
    assert client.get(f"{root}/b") == b"moved"
    with pytest.raises(shoal.NotFound):
        client.rename(f"{root}/a", f"{root}/c")


def test_list(client, root):
    client.mkdir(f"{root}/sub")
    x = client.put(f"{root}/x", b"1")
    client.put(f"{root}/y", b"2")
    entries = client.list(root)
    assert [(e.name, e.is_dir) for e in entries] == [("sub", True), ("x", False), ("y", False)]
    assert entries[1].zxid == x
    assert client.list(f"{root}/sub") == []
    with pytest.raises(shoal.NotFound):
        client.list(f"{root}/none")


def test_stat(client, other, root):
    key = f"{root}/v"
    zxid = client.put(key, b"12345")
    stat = client.stat(key)
    assert (stat.zxid, stat.is_dir, stat.size, stat.ephemeral) == (zxid, False, 5, None)
    assert "size=5" in repr(stat)
    directory = client.stat(root)
    assert directory.is_dir and directory.size == 0
    assert client.stat(f"{root}/absent") is None
    session = other.ensure_session()
    made = other.create_ephemeral(f"{root}/e", b"x")
    stat = other.stat(f"{root}/e")
    assert (stat.ephemeral, stat.zxid) == (session, made), "an ephemeral entry names its session"
    with pytest.raises(shoal.BadKey) as err:
        client.stat("relative")
    assert err.value.code == "BadKey"


def test_batch_commits_atomically_only_if_its_conditions_hold(client, root):
    a, b = f"{root}/a", f"{root}/b"
    first = client.put(a, b"0")
    batch = shoal.Batch().if_zxid(a, first).put(a, b"1").mkdir(f"{root}/d").put(b, "2")
    assert len(batch) == 3
    zxid = client.batch(batch)
    assert client.get_entry(a).zxid == zxid == client.get_entry(b).zxid
    assert client.is_dir(f"{root}/d")
    stale = shoal.Batch().if_zxid(a, first).put(a, b"x").delete(b)
    with pytest.raises(shoal.ConditionFailed) as err:
        client.batch(stale)
    assert err.value.code == "ConditionFailed"
    assert client.get(a) == b"1" and client.get(b) == b"2", "nothing of it was written"
    with pytest.raises(ValueError):
        client.batch(shoal.Batch())


def _next_for(watch, key):
    """The first event on `key` within WAIT (other keys' events are passed over)."""
    for _ in range(100):
        event = watch.get(timeout=WAIT)
        assert event is not None, f"no event on {key} within {WAIT} s"
        if event.key == key:
            return event
    raise AssertionError(f"no event on {key} among 100")


def test_watch_iterator_yields_events(client, other, root):
    key = f"{root}/w"
    with other.watch(root, prefix=True) as watch:
        # A create-only put is "created"; a plain put is "changed" (the Update stream does not
        # say whether the key existed before).
        zxid = client.put(key, b"1", if_absent=True)
        event = _next_for(watch, key)
        assert (event.kind, event.zxid) == ("created", zxid)
        changed = client.put(key, b"2")
        # The iterator protocol: `next` waits for the next event.
        event = next(iter(watch))
        assert (event.kind, event.key, event.zxid) == ("changed", key, changed)
        client.delete(key)
        assert _next_for(watch, key).kind == "removed"
    assert list(watch) == [], "a closed watch ends the iteration"


def test_watch_from_a_zxid_resumes_with_every_event_after_it(client, other, root):
    key = f"{root}/r"
    first = client.put(key, b"0", if_absent=True)
    later = [client.put(key, str(i)) for i in range(1, 4)]
    removed = client.delete(key)
    # `other` saw none of it; from `first` it gets every event after it once, in order, from
    # the nodes' history, then the live ones. The zxid may also be given as shoal prints it.
    expected = [("changed", key, z) for z in later] + [("removed", key, removed)]
    with other.watch(root, prefix=True, from_zxid=first) as watch:
        events = [watch.get(timeout=WAIT) for _ in range(4)]
        assert None not in events, events
        assert [(e.kind, e.key, e.zxid) for e in events] == expected
        live = client.put(key, b"live", if_absent=True)
        event = watch.get(timeout=WAIT)
        assert (event.kind, event.key, event.zxid) == ("created", key, live)
    expected.append(("created", key, live))
    text = f"{first >> 32}:{first & 0xFFFFFFFF}"
    with other.watch(key, from_zxid=text) as watch:
        events = [watch.get(timeout=WAIT) for _ in range(5)]
        assert None not in events, events
        assert [(e.kind, e.key, e.zxid) for e in events] == expected
    with pytest.raises(ValueError):
        other.watch(root, from_zxid="yesterday")


def test_watch_from_below_the_history_window_reports_compacted(client, other, root):
    """The cluster keeps the last SHOAL_HISTORY_ENTRIES notices (python_client.rs starts
    `shoal dev` with a small window); a watch resuming from before them is told so, with the
    oldest zxid history holds, and then gets the events after that."""
    window = int(os.environ.get("SHOAL_HISTORY_ENTRIES", "0"))
    if not window:
        pytest.skip("needs a cluster started with SHOAL_HISTORY_ENTRIES (a small window)")
    key = f"{root}/c"
    first = client.put(key, b"0")
    writes = [client.put(key, str(i)) for i in range(window + 20)]
    last = writes[-1]
    with other.watch(key, from_zxid=first) as watch:
        event = watch.get(timeout=WAIT)
        assert event is not None and event.kind == "compacted", event
        assert event.key is None and event.zxid == first
        oldest = event.oldest
        assert first < oldest < last
        assert "oldest=" in repr(event)
        seen = []
        while not seen or seen[-1] < last:
            event = watch.get(timeout=WAIT)
            assert event is not None, f"no event up to {last} within {WAIT} s: {seen[-3:]}"
            assert event.kind == "changed", event
            seen.append(event.zxid)
        assert seen == [z for z in writes if z > oldest], "each event after oldest once, in order"


def test_watch_with_locks_reports_lock_changes(client, other, root):
    name = f"/locks{root}"
    with other.watch(name, locks=True) as watch:
        with client.lock(name) as lock:
            taken = _next_for(watch, name)
            assert (taken.kind, taken.zxid, len(taken.holders)) == ("lock_changed", lock.token, 1)
        freed = _next_for(watch, name)
        assert (freed.kind, freed.holders) == ("lock_changed", [])
        assert freed.zxid > taken.zxid


def test_watch_of_one_key_ignores_others(client, other, root):
    with other.watch(f"{root}/only") as watch:
        client.put(f"{root}/elsewhere", b"x")
        zxid = client.put(f"{root}/only", b"y")
        event = watch.get(timeout=WAIT)
        assert event is not None and (event.key, event.zxid) == (f"{root}/only", zxid)


def test_lock_context_manager(client, other, root):
    name = f"/locks{root}"
    with client.lock(name) as lock:
        assert lock.held and lock.name == name and not lock.shared
        assert client.held_locks() == [name]
        with pytest.raises(shoal.LockHeld) as err:
            other.lock(name)
        assert err.value.code == "LockHeld"
        assert isinstance(err.value, shoal.LockError)
        with pytest.raises(shoal.WaitTimeout) as err:
            other.lock(name, wait=0.3)
        assert err.value.code is None
        # A write fenced by the token goes through while the lock is held.
        client.put(f"{root}/fenced", b"ok", fence=lock)
        first = lock.token
    assert not lock.held and client.held_locks() == []
    with other.lock(name) as again:
        assert again.token > first, "fencing tokens only grow"


def test_lock_is_renewed_while_held(client, other, root):
    """Held past its 5 s lease (the dev cluster's lock TTL), the lock is still this client's:
    the background renewal runs on the client's own thread while Python does other things."""
    name = f"/locks{root}"
    with client.lock(name) as lock:
        time.sleep(LOCK_TTL + 1.5)  # the time passing is what is tested: no event to await
        assert lock.held
        with pytest.raises(shoal.LockHeld):
            other.lock(name)
        assert client.put(f"{root}/fenced", b"still mine", fence=lock) > lock.token
    with other.lock(name):
        pass


def test_lock_wait_gets_the_lock_when_released(client, other, root):
    """A second holder waits while the lock is held, and gets it once it is released. The
    waiting call releases the GIL: were it held, this thread could not release the lock
    until the wait had timed out, and the waiter would get WaitTimeout."""
    name = f"/locks{root}"
    lock = client.lock(name)
    got = {}
    started = threading.Event()

    def wait_for_it():
        started.set()
        try:
            with other.lock(name, wait=WAIT) as second:
                got["token"] = second.token
        except shoal.ShoalError as e:
            got["error"] = e

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert started.wait(WAIT)
    assert "token" not in got, "the waiter does not get a held lock"
    lock.release()
    waiter.join(WAIT * 2)
    assert not waiter.is_alive()
    assert "error" not in got, got.get("error")
    assert got["token"] > lock.token
    lock.release()  # releasing twice does nothing


def test_transaction_commits_on_exit(client, root):
    src, a, b = f"{root}/src", f"{root}/a", f"{root}/b"
    client.put(src, b"5")
    with client.transaction(read=[src], write=[a, b], wait=WAIT) as txn:
        value = txn.read(src)
        assert value == b"5"
        txn.write(a, value + b"!")
        txn.write(b, b"second")
        assert txn.read(a) == b"5!", "a transaction reads its own buffered write"
        assert set(txn.tokens()) == {src, a, b}
        assert client.get(a) is None, "nothing is visible before the commit"
    assert txn.zxid is not None
    assert client.get_entry(a).zxid == txn.zxid == client.get_entry(b).zxid
    assert client.get(b) == b"second"
    assert client.held_locks() == []


def test_transaction_aborts_on_exception(client, other, root):
    key = f"{root}/t"
    client.put(key, b"before")
    with pytest.raises(RuntimeError, match="boom"):
        with client.transaction(write=[key]) as txn:
            txn.write(key, b"after")
            txn.delete(key)
            raise RuntimeError("boom")
    assert txn.zxid is None
    assert client.get(key, linearizable=True) == b"before"
    assert client.held_locks() == []
    # Its locks were released: another client's transaction on the key goes through.
    with other.transaction(write=[key]) as second:
        second.write(key, b"other")
    assert client.get(key, linearizable=True) == b"other"


def test_transaction_refuses_undeclared_keys(client, root):
    with pytest.raises(shoal.Undeclared) as err:
        with client.transaction(read=[f"{root}/r"]) as txn:
            txn.write(f"{root}/r", b"x")
    assert err.value.code is None
    assert isinstance(err.value, shoal.Refused)
    assert txn.zxid is None


def test_session_ephemeral_vanishes_when_the_session_closes(client, other, root, cluster_file):
    key = f"{root}/member"
    with other.session() as session:
        assert session.id and session.id == other.ensure_session()
        session.create_ephemeral(key, b"here")
        assert client.get(key, linearizable=True) == b"here"
        assert other.session_state == "healthy"
    assert client.get(key, linearizable=True) is None, "closing the session deleted it"
    # Closing a client closes its session too.
    third = shoal.Client(cluster_file)
    third.create_ephemeral(f"{key}2", "x")
    assert client.get(f"{key}2", linearizable=True) == b"x"
    third.close()
    assert client.get(f"{key}2", linearizable=True) is None
    with pytest.raises(shoal.ShoalError, match="closed"):
        third.get(key)


def test_errors_are_exceptions_with_the_wire_code(client, root):
    with pytest.raises(shoal.BadKey) as err:
        client.put("no-slash", b"x")
    assert err.value.code == "BadKey"
    assert isinstance(err.value, shoal.Refused) and isinstance(err.value, shoal.ShoalError)
    assert "must start with '/'" in str(err.value)
    with pytest.raises(shoal.ParentMissing) as err:
        client.put(f"{root}/no/such", b"x")
    assert err.value.code == "ParentMissing"
    assert str(err.value) == f"parent directory {root}/no does not exist; create it with mkdir first"
    first = client.put(f"{root}/cas", b"1")
    client.put(f"{root}/cas", b"2", if_zxid=first)
    with pytest.raises(shoal.ConditionFailed) as err:
        client.put(f"{root}/cas", b"3", if_zxid=first)
    assert err.value.code == "ConditionFailed"
    assert client.get(f"{root}/cas") == b"2", "a refused write changes nothing"
    with pytest.raises(shoal.AlreadyExists) as err:
        client.put(f"{root}/cas", b"4", if_absent=True)
    assert err.value.code == "AlreadyExists"
    with pytest.raises(TypeError):
        client.put(f"{root}/cas", 5)
    with pytest.raises(ValueError):
        client.put(f"{root}/cas", b"x", if_zxid="not a zxid")
    with pytest.raises(ValueError):
        client.lock(f"/locks{root}", wait=-1.0)
    # History compaction (a watch resuming from before the window) has its own class; its
    # wire code is "Compacted" and `oldest` says where history starts.
    assert issubclass(shoal.Compacted, shoal.ShoalError)
    assert shoal.Compacted.code is None and shoal.Compacted.oldest is None
    with pytest.raises(shoal.Unavailable) as err:
        shoal.Client(f"{root}/no-such-cluster.toml")
    assert "no-such-cluster.toml" in str(err.value)
