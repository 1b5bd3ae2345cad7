"""Issue 15: what a hostile or unlucky session must not do to the pool — executions always answered,
async executions bounded and never overwritten, downloads and odd names that end cleanly."""
from __future__ import annotations

import concurrent.futures
import signal
import time
import uuid

import httpx
import pytest

from conftest import start_pool

V2 = "2025-10-02-preview"


@pytest.fixture(scope="module")
def http(pool):
    with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=60) as client:
        yield client


def execute(http, identifier: str, code: str, headers: dict[str, str] | None = None, **extra) -> httpx.Response:
    body = {"code": code, "timeoutInSeconds": 100, **extra}
    return http.post("/executions", params={"api-version": V2, "identifier": identifier}, json=body,
                     headers=headers or {})


def value(http, identifier: str, code: str):
    body = execute(http, identifier, code).json()
    assert body["status"] == "Succeeded", body
    return body["result"]["executionResult"]


# 2: every execution gets an answer -------------------------------------------------------------------

def test_deleting_a_session_answers_its_running_synchronous_execution(pool, http):
    identifier = str(uuid.uuid4())
    assert value(http, identifier, "6 * 7") == 42
    with concurrent.futures.ThreadPoolExecutor(1) as runner:
        # the answer must come well before the cell's own end (90 s) and this client's timeout (60 s)
        running = runner.submit(execute, http, identifier, "import time\ntime.sleep(90)")
        time.sleep(1)
        deleted = http.delete("/session", params={"api-version": V2, "identifier": identifier})
        assert deleted.status_code == 204
        answer = running.result(timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "Failed"
    assert body["error"]["code"] == "SessionLost"
    assert "deleted" in body["error"]["message"]


def test_deleting_a_session_answers_its_queued_executions_and_they_stay_pollable(pool, http):
    identifier = str(uuid.uuid4())
    ids = []
    for _ in range(3):
        response = execute(http, identifier, "import time\ntime.sleep(90)", executionType="Asynchronous")
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    with concurrent.futures.ThreadPoolExecutor(1) as runner:
        waiting = runner.submit(execute, http, identifier, "1 + 1")  # synchronous, behind the three
        time.sleep(0.5)
        assert http.delete("/session", params={"api-version": V2, "identifier": identifier}).status_code == 204
        body = waiting.result(timeout=60).json()
    assert body["status"] == "Failed" and body["error"]["code"] == "SessionLost", body


def test_a_pool_that_stops_answers_the_execution_it_was_running():
    own = start_pool("--ready-sessions", "0")
    try:
        with httpx.Client(base_url=own.endpoint, headers=own.headers, timeout=60) as client:
            identifier = str(uuid.uuid4())
            assert value(client, identifier, "6 * 7") == 42
            with concurrent.futures.ThreadPoolExecutor(1) as runner:
                running = runner.submit(execute, client, identifier, "import time\ntime.sleep(90)")
                time.sleep(1)
                own.process.send_signal(signal.SIGTERM)
                answer = running.result(timeout=60)
        body = answer.json()
        assert body["status"] == "Failed" and body["error"]["code"] == "SessionLost", body
        assert "stopping" in body["error"]["message"]
        assert own.process.wait(30) == 0
    finally:
        own.stop()


# 6: async hygiene ------------------------------------------------------------------------------------------

def test_queued_executions_are_capped_each_is_pollable_and_an_operation_id_is_never_reused(http):
    identifier = str(uuid.uuid4())
    value(http, identifier, "import threading\ngate = threading.Event()")
    first = execute(http, identifier, "gate.wait(90)", executionType="Asynchronous")
    ids = [first.json()["id"]]
    while True:
        response = execute(http, identifier, f"{len(ids)}", executionType="Asynchronous")
        if response.status_code != 200:
            break
        ids.append(response.json()["id"])
        assert len(ids) <= 1000, "no cap on queued executions"
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "TooManyExecutions"
    assert "Retry-After" in response.headers
    assert len(ids) >= 10  # a cap, not a refusal of any queue
    # every queued execution can be polled, the oldest too (none was dropped to make room)
    for execution_id in ids:
        polled = http.get(f"/executions/{execution_id}", params={"api-version": V2, "identifier": identifier})
        assert polled.status_code == 200, (execution_id, polled.text)
        assert polled.json()["status"] in ("NotStarted", "Running")
    assert http.delete("/session", params={"api-version": V2, "identifier": identifier}).status_code == 204


def test_an_operation_id_used_twice_is_409_and_the_first_execution_keeps_its_answer(http):
    identifier = str(uuid.uuid4())
    operation = "op-" + uuid.uuid4().hex
    first = execute(http, identifier, "'first'", headers={"operation-id": operation})
    assert first.status_code == 200 and first.json()["id"] == operation
    second = execute(http, identifier, "'second'", headers={"operation-id": operation})
    assert second.status_code == 409, second.text
    assert second.json()["error"]["code"] == "DuplicateOperationId"
    polled = http.get(f"/executions/{operation}", params={"api-version": V2, "identifier": identifier}).json()
    assert polled["result"]["executionResult"] == "first"
    too_long = execute(http, identifier, "1", headers={"operation-id": "x" * 1000})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "InvalidOperationId"
