"""Fixtures of the Python client's tests: they run against a real cluster, the one the cluster
file $SHOAL_CLUSTER names (default shoal-dev/cluster.toml, where `shoal dev` writes it).
tests/tests/python_client.rs starts `shoal dev` and runs these tests in CI."""

import os
import uuid

import pytest

import shoal

CLUSTER = os.environ.get("SHOAL_CLUSTER", "shoal-dev/cluster.toml")


@pytest.fixture(scope="session")
def cluster_file():
    if not os.path.exists(CLUSTER):
        pytest.fail(
            f"no cluster file at {CLUSTER}: start `shoal dev` in this directory, "
            "or set SHOAL_CLUSTER to the file of a running cluster"
        )
    return CLUSTER


@pytest.fixture
def client(cluster_file):
    with shoal.Client(cluster_file) as c:
        yield c


@pytest.fixture
def other(cluster_file):
    """A second client: its own cache, id and session."""
    with shoal.Client(cluster_file) as c:
        yield c


@pytest.fixture
def root(client):
    """A fresh directory for one test, so that tests never see each other's keys."""
    path = f"/py-{uuid.uuid4().hex[:12]}"
    client.mkdir(path)
    return path
