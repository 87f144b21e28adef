"""Connecting to Ray: which failures are tried again and which end the job with one line.

Ray Client's per-client server sometimes dies as Ray's proxy forks it (ray-project/ray#63202,
about 7% of connections; it failed a CI run of this project). That race cannot be produced on
demand, so ``ray.init`` here raises what Ray Client raises then, word for word, and the tests
pin the policy around it: a ``ray://`` connection is tried again, anything else is not.
"""

from __future__ import annotations

import logging

import pytest
import ray

from pipeline.contract.errors import PlanError
from pipeline.execute import ray_session

#: What ray.util.client.worker raises when the proxy could not start the job's server.
SERVER_DIED = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File ".../ray/util/client/server/proxier.py", line 772, in Datapath\n'
    "    raise RuntimeError(\nRuntimeError: Starting Ray client server failed. See "
    "ray_client_server_23000.err for detailed logs.\n"
)


@pytest.fixture
def ray_init(monkeypatch):
    """ray.init that fails with the given errors, in order, then connects; records its calls."""
    calls: list[dict] = []
    failures: list[Exception] = []

    def init(**kwargs):
        calls.append(kwargs)
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(ray, "init", init)
    return calls, failures


def test_a_client_server_that_died_starting_is_connected_to_again(ray_init, caplog):
    calls, failures = ray_init
    failures.extend([SERVER_DIED, SERVER_DIED])
    with caplog.at_level(logging.WARNING, logger="bulkinfer"):
        ray_session._init({"address": "ray://head:10001"}, "ray://head:10001")
    assert len(calls) == 3
    assert [r.getMessage().split(";")[1] for r in caplog.records] == [
        " connecting again (attempt 2 of 3)",
        " connecting again (attempt 3 of 3)",
    ]


def test_the_last_attempt_failing_ends_the_job_with_the_address_key(ray_init):
    calls, failures = ray_init
    failures.extend([SERVER_DIED] * ray_session.CLIENT_START_ATTEMPTS)
    with pytest.raises(PlanError) as raised:
        ray_session._init({"address": "ray://head:10001"}, "ray://head:10001")
    assert len(calls) == ray_session.CLIENT_START_ATTEMPTS
    assert raised.value.key == "ray.address"
    assert "Starting Ray client server failed" in str(raised.value)


@pytest.mark.parametrize(
    ("address", "error"),
    [
        ("ray://head:10001", ConnectionAbortedError("Initialization failure from server:\nbad")),
        ("ray://head:10001", ConnectionError("ray client connection timeout")),
        ("10.0.0.1:6379", ConnectionAbortedError(str(SERVER_DIED))),  # not a Ray Client address
    ],
)
def test_other_connection_failures_are_not_tried_again(ray_init, address, error):
    calls, failures = ray_init
    failures.append(error)
    with pytest.raises(PlanError, match="cannot connect to Ray at"):
        ray_session._init({"address": address}, address)
    assert len(calls) == 1
