"""Host and Origin checks: DNS rebinding and web pages of other origins get nothing, with or without a token."""
from __future__ import annotations

import json
import socket
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import start_pool

V2 = "2025-10-02-preview"


@pytest.fixture(scope="module")
def open_pool():
    """A `--no-auth` pool: the case where nothing but these checks stands between a web page and the code."""
    p = start_pool("--no-auth", "--ready-sessions", "0")
    yield p
    p.stop()


def raw(endpoint: str, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
    """One request written by hand (every header exactly as given, Host included); (status, JSON body or {})."""
    where = urlsplit(endpoint)
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()),
             f"Content-Length: {len(body)}", "Connection: close", "", ""]
    with socket.create_connection((where.hostname, where.port), timeout=60) as conn:
        conn.sendall("\r\n".join(lines).encode("latin-1") + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, content = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(content)
    except ValueError:
        return status, {}


def execute_target(identifier: str) -> str:
    return f"/executions?api-version={V2}&identifier={identifier}"


def run_code(identifier: str, name: str) -> bytes:
    return json.dumps({"code": f"open('/mnt/data/{name}', 'w').write('ran')\n1"}).encode()


def own_host(pool) -> str:
    return urlsplit(pool.endpoint).netloc


def files_of(pool, identifier: str) -> list[str]:
    answer = httpx.get(f"{pool.endpoint}/files", params={"api-version": V2, "identifier": identifier},
                       headers={"Authorization": f"Bearer {pool.token}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    return [entry["name"] for entry in answer.json()["value"]]


BROWSER_CROSS_ORIGIN = {
    "another origin, text/plain (fetch no-cors)": {"Origin": "http://attacker.example",
                                                    "Content-Type": "text/plain;charset=UTF-8"},
    "a form post from another site": {"Origin": "https://attacker.example",
                                      "Content-Type": "application/x-www-form-urlencoded",
                                      "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
    "an opaque origin (sandboxed iframe, file:)": {"Origin": "null", "Content-Type": "text/plain"},
    "Jupyter's own page on another port": {"Origin": "http://localhost:8888", "Content-Type": "text/plain"},
    "a sibling site, no Origin sent": {"Sec-Fetch-Site": "same-site", "Content-Type": "text/plain"},
    "a multipart form from another site": {"Sec-Fetch-Site": "cross-site",
                                           "Content-Type": "multipart/form-data; boundary=x"},
}


@pytest.mark.parametrize("case", list(BROWSER_CROSS_ORIGIN))
def test_a_web_page_of_another_origin_cannot_run_code_on_a_no_auth_pool(open_pool, case):
    identifier = str(uuid.uuid4())
    headers = {"Host": own_host(open_pool), **BROWSER_CROSS_ORIGIN[case]}
    status, body = raw(open_pool.endpoint, "POST", execute_target(identifier), headers, run_code(identifier, "pwned"))
    assert status == 403, (status, body)
    assert body["error"]["code"] == "CrossOriginRequest" and "program" in body["error"]["message"]
    assert "pwned" not in files_of(open_pool, identifier)  # nothing ran


@pytest.mark.parametrize("host", ["attacker.example", "rebind.attacker.example:{port}", "localhost.attacker.example",
                                  "10.0.0.1:{port}", "", "[::1"])
def test_a_host_that_is_not_the_pools_own_is_refused_on_every_pool(open_pool, host):
    port = urlsplit(open_pool.endpoint).port
    identifier = str(uuid.uuid4())
    status, body = raw(open_pool.endpoint, "POST", execute_target(identifier),
                       {"Host": host.format(port=port), "Content-Type": "application/json"},
                       run_code(identifier, "rebound"))
    assert status in (400, 421), (status, body)  # 400: a Host uvicorn itself cannot read
    if status == 421:
        assert body["error"]["code"] == "MisdirectedRequest" and "--host" in body["error"]["message"]
    assert "rebound" not in files_of(open_pool, identifier)
    status, _ = raw(open_pool.endpoint, "GET", "/health", {"Host": host.format(port=port)})
    assert status in (400, 421)


def test_a_pool_with_a_token_checks_the_host_and_origin_too():
    pool = start_pool("--ready-sessions", "0")
    try:
        port = urlsplit(pool.endpoint).port
        auth = {"Authorization": f"Bearer {pool.token}", "Content-Type": "application/json"}
        identifier = str(uuid.uuid4())
        status, body = raw(pool.endpoint, "POST", execute_target(identifier),
                           {**auth, "Host": f"attacker.example:{port}"}, run_code(identifier, "x"))
        assert (status, body["error"]["code"]) == (421, "MisdirectedRequest")
        status, body = raw(pool.endpoint, "POST", execute_target(identifier),
                           {**auth, "Host": f"127.0.0.1:{port}", "Origin": "http://attacker.example"},
                           run_code(identifier, "x"))
        assert (status, body["error"]["code"]) == (403, "CrossOriginRequest")
        status, body = raw(pool.endpoint, "POST", "/mcp", {**auth, "Host": f"127.0.0.1:{port}",
                                                           "Origin": "http://attacker.example"}, b"{}")
        assert status in (401, 403), (status, body)  # the MCP endpoint keeps refusing
    finally:
        pool.stop()


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}",
                                  "127.0.0.1", "localhost.:{port}"])
def test_the_pools_own_names_and_programs_without_origin_are_served(open_pool, host):
    port = urlsplit(open_pool.endpoint).port
    identifier = str(uuid.uuid4())
    status, body = raw(open_pool.endpoint, "POST", execute_target(identifier),
                       {"Host": host.format(port=port), "Content-Type": "application/json"},
                       run_code(identifier, "fine"))
    assert status == 200 and body["status"] == "Succeeded", body
    own = {"Host": own_host(open_pool), "Origin": open_pool.endpoint, "Sec-Fetch-Site": "same-origin",
           "Content-Type": "application/json"}
    status, body = raw(open_pool.endpoint, "POST", execute_target(identifier), own, b'{"code": "2"}')
    assert status == 200 and body["status"] == "Succeeded", body  # a page of the pool's own origin
    with httpx.Client(base_url=open_pool.endpoint, timeout=60) as client:  # httpx sends no Origin
        assert client.get("/files", params={"api-version": V2, "identifier": identifier}).status_code == 200
    assert "fine" in files_of(open_pool, identifier)


@pytest.mark.parametrize("bound, host, served", [
    ("0.0.0.0", "192.168.1.5:8000", True),  # bound to every address: any address literal is the pool's own
    ("0.0.0.0", "[fe80::1]:8000", True),
    ("0.0.0.0", socket.gethostname(), True),
    ("0.0.0.0", "attacker.example", False),
    ("pool.internal", "pool.internal:8000", True),  # the name given with --host
    ("pool.internal", "other.internal", False),
    ("127.0.0.1", "192.168.1.5", False),
    ("::1", "[::1]:8000", True),
    ("127.0.0.1", "app.localhost", True),  # *.localhost is loopback (RFC 6761): no rebinding through it
])
def test_the_names_a_pool_serves_follow_its_host_option(bound, host, served):
    import asyncio

    from remote_kernel.pool.origin import guard

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def ask() -> int:
        transport = httpx.ASGITransport(app=guard(app, bound))
        async with httpx.AsyncClient(transport=transport, base_url="http://pool") as client:
            return (await client.get("/health", headers={"Host": host})).status_code

    assert asyncio.run(ask()) == (200 if served else 421)
