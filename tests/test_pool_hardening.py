"""Issue 15: what a hostile or unlucky session must not do to the pool — executions always answered,
async executions bounded and never overwritten, downloads and odd names that end cleanly."""
from __future__ import annotations

import concurrent.futures
import signal
import tempfile
import time
import uuid
from urllib.parse import quote

import httpx
import pytest
from conftest import start_pool

V2 = "2025-10-02-preview"


def execute(http, identifier: str, code: str, headers: dict[str, str] | None = None, **extra) -> httpx.Response:
    body = {"code": code, "timeoutInSeconds": 100, **extra}
    return http.post("/executions", params={"api-version": V2, "identifier": identifier}, json=body,
                     headers=headers or {})


SLEEPER = "open('/mnt/data/started', 'w').close()\nimport time\ntime.sleep(90)"


def wait_until_started(client: httpx.Client, identifier: str) -> None:
    """Poll the session's files (served while it is busy) until the execution has written its marker."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = client.get("/files", params={"api-version": V2, "identifier": identifier})
        if listed.status_code == 200 and any(e["name"] == "started" for e in listed.json()["value"]):
            return
        time.sleep(0.1)
    raise AssertionError("the execution did not start within 60 s")


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
        running = runner.submit(execute, http, identifier, SLEEPER)
        wait_until_started(http, identifier)
        deleted = http.delete("/session", params={"api-version": V2, "identifier": identifier})
        assert deleted.status_code == 204
        answer = running.result(timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "Failed"
    assert body["error"]["error"]["code"] == "SessionLost"
    assert "deleted" in body["error"]["error"]["message"]


def test_deleting_a_session_answers_its_queued_executions(pool, http):
    identifier = str(uuid.uuid4())
    for _ in range(3):
        response = execute(http, identifier, "import time\ntime.sleep(90)", executionType="Asynchronous")
        assert response.status_code == 200, response.text
    operation = "queued-" + uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(1) as runner:
        # synchronous, behind the three: polled (by its operation-id) until the pool has queued it
        waiting = runner.submit(execute, http, identifier, "1 + 1", headers={"operation-id": operation})
        deadline = time.monotonic() + 60
        while http.get(f"/executions/{operation}", params={"api-version": V2, "identifier": identifier}
                       ).status_code != 200:
            assert time.monotonic() < deadline, "the synchronous execution was never queued"
            time.sleep(0.05)
        assert http.delete("/session", params={"api-version": V2, "identifier": identifier}).status_code == 204
        body = waiting.result(timeout=60).json()
    assert body["status"] == "Failed" and body["error"]["error"]["code"] == "SessionLost", body


def test_a_pool_that_stops_answers_the_execution_it_was_running():
    own = start_pool("--ready-sessions", "0")
    try:
        with httpx.Client(base_url=own.endpoint, headers=own.headers, timeout=60) as client:
            identifier = str(uuid.uuid4())
            assert value(client, identifier, "6 * 7") == 42
            with concurrent.futures.ThreadPoolExecutor(1) as runner:
                running = runner.submit(execute, client, identifier, SLEEPER)
                wait_until_started(client, identifier)
                own.process.send_signal(signal.SIGTERM)
                answer = running.result(timeout=60)
        body = answer.json()
        assert body["status"] == "Failed" and body["error"]["error"]["code"] == "SessionLost", body
        assert "stopping" in body["error"]["error"]["message"]
        assert own.process.wait(30) == 0
    finally:
        own.stop()


# 6: async hygiene ------------------------------------------------------------------------------------------

def test_queued_executions_are_capped_and_each_is_pollable(http):
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


# 7: downloads of files that change, odd names ---------------------------------------------------------

def download(http, identifier: str, name: str) -> httpx.Response:
    return http.get(f"/files/{quote(name, safe='')}/content", params={"api-version": V2, "identifier": identifier})


def test_a_file_that_grows_during_its_download_is_sent_as_it_was_when_the_download_started(pool, http):
    identifier = str(uuid.uuid4())
    # a thread appends numbered 64 KiB blocks (a short sleep between them) until told to stop, up to 128 MiB
    value(http, identifier, """
import threading, time
def block(i):
    return (b'%08d' % i) * 8192
with open('/mnt/data/grows.bin', 'wb') as f:
    for i in range(64):
        f.write(block(i))
stop = threading.Event()
def grow():
    with open('/mnt/data/grows.bin', 'ab') as f:
        for i in range(64, 2048):
            if stop.is_set():
                break
            f.write(block(i)); f.flush()
            time.sleep(0.002)
grower = threading.Thread(target=grow); grower.start()
""")
    sizes = []
    while len(sizes) < 3 and value(http, identifier, "grower.is_alive()"):
        response = download(http, identifier, "grows.bin")
        assert response.status_code == 200
        assert len(response.content) == int(response.headers["Content-Length"])
        body = response.content
        sizes.append(len(body))
        # a prefix of what the file becomes: each whole block carries its own number
        assert all(body[i * 65536:i * 65536 + 8] == b"%08d" % i for i in range(len(body) // 65536))
    value(http, identifier, "stop.set(); grower.join()")
    final = download(http, identifier, "grows.bin").content
    assert sizes, "no download overlapped the growth"
    assert all(size <= len(final) for size in sizes)
    assert "longer than Content-Length" not in pool.log()


def test_a_file_cut_shorter_during_its_download_fails_the_download_never_ends_it_short(pool, http):
    identifier = str(uuid.uuid4())
    value(http, identifier, """
import os, threading
stop = threading.Event()
def churn():
    while not stop.is_set():
        with open('/mnt/data/churn.bin', 'wb') as f:
            f.write(os.urandom(1 << 20) * 16)
        os.truncate('/mnt/data/churn.bin', 1000)
churner = threading.Thread(target=churn); churner.start()
""")
    outcomes = {"whole": 0, "cut": 0}
    for _ in range(15):
        try:
            response = download(http, identifier, "churn.bin")
        except httpx.RemoteProtocolError:  # the connection was cut: the client knows it is incomplete
            outcomes["cut"] += 1
            continue
        if response.status_code == 404:  # between open() truncating and the first write
            continue
        assert response.status_code == 200
        assert len(response.content) == int(response.headers["Content-Length"])
        outcomes["whole"] += 1
    value(http, identifier, "stop.set(); churner.join()")
    assert sum(outcomes.values()) > 0
    assert "shorter than Content-Length" not in pool.log()
    assert http.get("/health").status_code == 200


ODD_NAMES = ["a\nb.txt", "tab\there.txt", "cr\rx.txt", ".rk-upload-mine", "space name.txt", "%41.txt", "q?x#y.txt",
             "é ü 漢字.txt", " lead", "trail ", "back\\slash", "semi;colon\"quote'.txt"]


@pytest.mark.parametrize("version", [V2, "2024-08-02-preview"])
def test_odd_names_are_listed_downloadable_and_deletable_and_undecodable_ones_are_left_out(http, version):
    identifier = str(uuid.uuid4())
    value(http, identifier, f"""
import os
for n, name in enumerate({ODD_NAMES!r}):
    with open(os.path.join('/mnt/data', name), 'w') as f:
        f.write(f'content {{n}}')
os.close(os.open(b'/mnt/data/bad-\\xff-utf8', os.O_CREAT | os.O_WRONLY))
""")
    params = {"api-version": version, "identifier": identifier}
    listed = http.get("/files", params=params)
    assert listed.status_code == 200, listed.text
    if version == V2:
        names = [entry["name"] for entry in listed.json()["value"]]
    else:
        names = [entry["properties"]["filename"] for entry in listed.json()["value"]]
    assert sorted(names) == sorted(ODD_NAMES)  # the non-UTF-8 name, which no URL can name, is left out
    for n, name in enumerate(ODD_NAMES):
        path = f"/files/{quote(name, safe='')}/content" if version == V2 else f"/files/content/{quote(name, safe='')}"
        response = http.get(path, params=params)
        assert response.status_code == 200, (name, response.text)
        assert response.content == f"content {n}".encode()
        assert http.get(f"/files/{quote(name, safe='')}", params=params).status_code == 200
    deleted = http.delete(f"/files/{quote(ODD_NAMES[0], safe='')}", params=params)
    assert deleted.status_code in (200, 204)
    assert value(http, identifier, f"os.path.exists({'/mnt/data/' + ODD_NAMES[0]!r})") is False


# the pool's memory under a hostile session ---------------------------------------------------------------

RSS_BOUND = 40 << 20  # growth allowed over the warm baseline: 16 MiB of kept answers (KEEP_BYTES), the rest slack


def test_the_pools_memory_stays_bounded_while_a_session_floods_it_with_answers_and_downloads():
    import psutil

    own = start_pool("--ready-sessions", "0")
    try:
        process = psutil.Process(own.process.pid)
        with httpx.Client(base_url=own.endpoint, headers=own.headers, timeout=120) as client:
            identifier = str(uuid.uuid4())
            params = {"api-version": V2, "identifier": identifier}

            def flood(rounds: int, size: int = 1 << 20) -> None:
                """Queue executions that each print `size` bytes (1 MiB: the output cap), as many as the pool
                takes, and download a 32 MiB file four times."""
                for _ in range(rounds):
                    last = None
                    for _ in range(64):
                        response = execute(client, identifier, f"print('x' * {size})", executionType="Asynchronous")
                        if response.status_code == 429:
                            break
                        assert response.status_code == 200, response.text
                        last = response.json()["id"]
                    while last and client.get(f"/executions/{last}", params=params).json()["status"] in (
                            "NotStarted", "Running"):
                        time.sleep(0.2)
                # and downloads of a file while it grows
                value(client, identifier, "f = open('/mnt/data/big.bin', 'wb'); f.write(b'y' * (32 << 20)); f.flush()")
                for _ in range(4):
                    assert len(download(client, identifier, "big.bin").content) >= 32 << 20

            flood(1, size=1000)  # warm: allocator arenas, imports, the routes; small answers
            baseline = process.memory_info().rss
            flood(5)  # 320 answers of 1 MiB, 4 downloads of 32 MiB
            grown = process.memory_info().rss - baseline
    finally:
        own.stop()
    print(f"pool RSS: baseline {baseline / 2**20:.0f} MiB, grown {grown / 2**20:.1f} MiB under the flood")
    assert grown < RSS_BOUND, f"the pool grew by {grown / 2**20:.0f} MiB"


# issue 23 #16: a session is not torn down under a request that uses it; no answer names a host path ------

BOUNDARY = "rkboundary"


def slow_upload_body(name: str, size: int, pause) -> object:
    """A multipart body sent in pieces: the first boundary, then `pause()` (which returns once the moment to
    test has come), then the part's headers and contents."""
    def body():
        yield f"--{BOUNDARY}\r\n".encode()
        pause()
        yield (f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        yield b"y" * size
        yield f"\r\n--{BOUNDARY}--\r\n".encode()
    return body()


def upload_slowly(pool, identifier: str, name: str, size: int, pause) -> httpx.Response:
    return httpx.post(f"{pool.endpoint}/files", params={"api-version": V2, "identifier": identifier},
                      headers={**pool.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                      content=slow_upload_body(name, size, pause), timeout=120)


def no_host_path(pool, text: str) -> None:
    assert "/proc/" not in text and str(pool.data_root) not in text and tempfile.gettempdir() not in text, text


def test_an_upload_that_outlasts_the_sessions_cooldown_is_not_cut_by_its_expiry():
    """The cooldown (1 s here) ends while the upload's body is still arriving: the session is held by the
    request, so the upload completes into it (before: the session was reaped under it and the answer was
    400 InvalidMultipartBody naming '/proc/<pid>/root/mnt/data')."""
    pool = start_pool("--cooldown", "1", "--ready-sessions", "0")
    try:
        identifier = str(uuid.uuid4())
        with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=60) as client:
            assert value(client, identifier, "kept = 'state'\n1") == 1
            answer = upload_slowly(pool, identifier, "late.bin", 1 << 20, lambda: time.sleep(3))
            no_host_path(pool, answer.text)
            assert answer.status_code == 200, answer.text
            assert answer.json()["sizeInBytes"] == 1 << 20
            assert value(client, identifier, "import os\n(kept, os.path.getsize('/mnt/data/late.bin'))") == \
                f"('state', {1 << 20})"  # the same session, its state and the whole file
    finally:
        pool.stop()
    assert "Traceback" not in pool.log()


def test_a_session_deleted_while_an_upload_is_in_flight_gets_a_clear_answer_without_host_paths(pool, http):
    identifier = str(uuid.uuid4())
    assert value(http, identifier, "1") == 1

    def delete_once_the_upload_is_being_written() -> None:
        probe = "import os\n[n for n in os.listdir('/mnt/data') if n.startswith('.rk-upload-')]"
        deadline = time.monotonic() + 60
        while value(http, identifier, probe) == "[]" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http.delete("/session", params={"api-version": V2, "identifier": identifier}).status_code == 204

    def body():
        yield f"--{BOUNDARY}\r\n".encode()
        yield (b'Content-Disposition: form-data; name="file"; filename="doomed.bin"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        yield b"z" * 65536
        delete_once_the_upload_is_being_written()
        yield b"z" * 65536
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    answer = httpx.post(f"{pool.endpoint}/files", params={"api-version": V2, "identifier": identifier},
                        headers={**pool.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                        content=body(), timeout=120)
    no_host_path(pool, answer.text)
    assert answer.status_code in (404, 503), answer.text  # the pool's side, never the client's 400
    assert answer.json()["error"]["code"] in ("SessionWithIdentifierNotFound", "UploadFailed")
    assert "again" in answer.json()["error"]["message"]
    listed = http.get("/files", params={"api-version": V2, "identifier": identifier}).json()["value"]
    assert listed == []  # a new session, nothing half-written


def test_no_error_answer_names_a_host_path():
    from remote_kernel.pool import hostpaths

    hostpaths.register("/srv/pools/pool-abc")
    text = hostpaths.scrub("[Errno 2] No such file or directory: '/proc/3131/root/mnt/data/x' and "
                           "'/srv/pools/pool-abc/0123456789abcdef0123456789abcdef/data/y', /srv/pools/pool-abc")
    assert text == ("[Errno 2] No such file or directory: '/mnt/data/x' and '/mnt/data/y', <pool data>")
