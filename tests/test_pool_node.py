"""NodeLTS sessions through the real local pool over HTTP: the seeds' samples and the isolation matrix."""
from __future__ import annotations

import json
import shutil
import socket
import time
import uuid

import httpx
import pytest
from conftest import bubblewrap_usable, start_pool

NODE = shutil.which("node")
V1 = "2024-02-02-preview"
V2 = "2025-02-02-preview"
NO_NODE = "Node.js is not installed (install nodejs, version 18 or later)"
SANDBOX_OK, SANDBOX_WHY = bubblewrap_usable()
NEEDS_SANDBOX = pytest.mark.skipif(not SANDBOX_OK, reason=f"no sandbox: {SANDBOX_WHY}")
HOST_SECRET = "host-secret-" + uuid.uuid4().hex

# the seeds' samples, verbatim (seeds/002: code interpreter API samples; seeds/003: the tutorial)
SEED_FILE_SAMPLE = (
    "$$.async(); var fs2 = require(\"fs\");\nvar path2 = require(\"path\");\n\n// Define the file path and "
    "content\nvar filePath2 = path.join(\"/mnt/data\", \"example.txt\");\nvar fileContent2 = \"Hello, this is a "
    "sample content!\";\n\n// Write the file\nfs2.writeFile(filePath2, fileContent2, (err) => {\nif (err) {\n"
    "console.log(`Error file creation  ${err.message}`);\nreturn console.error(`A problem occurred while writing "
    "the file: ${err.message}`);\n}\nconsole.log(\"File has been created and saved successfully!\");\n});\n "
    "setTimeout($$.done, 10000)"
)
SEED_NPM_LIST_SAMPLE = (
    "console.time(\"time taken\");\nvar result3 = require(\"child_process\").spawnSync(\"npm\", [\"list\"], "
    "{ encoding: \"utf-8\" });\nconsole.timeEnd(\"time taken\");\nif (result3.error) {\nconsole.error(`Error: "
    "${result3.error.message}`);\nprocess.exit(1);\n}\nif (result3.status !== 0) {\nconsole.error(`stderr: "
    "${result3.stderr}`);\nprocess.exit(result3.status);\n}\nconsole.log(`stdout: ${result3.stdout}`);\n"
)



@pytest.fixture(scope="module")
def node_pool():
    if NODE is None:
        pytest.skip(NO_NODE)
    pool = start_pool("--container-type", "NodeLTS", "--max-sessions", "50", "--ready-sessions", "1",
                      env={"RK_TEST_HOST_SECRET": HOST_SECRET})
    yield pool
    pool.stop()


def new_identifier() -> str:
    return str(uuid.uuid4())


def execute_v1(pool, identifier: str, code: str, code_input_type: str = "inline", timeout: int = 60) -> dict:
    response = httpx.post(
        f"{pool.endpoint}/code/execute", params={"api-version": V1, "identifier": identifier}, headers=pool.headers,
        json={"properties": {"codeInputType": code_input_type, "executionType": "synchronous", "code": code,
                             "timeoutInSeconds": timeout}},
        timeout=timeout + 30,
    )
    assert response.is_success, response.text
    return response.json()["properties"]


def execute_v2(pool, identifier: str, code: str, timeout: int = 60, **extra) -> dict:
    response = httpx.post(
        f"{pool.endpoint}/executions", params={"api-version": V2, "identifier": identifier}, headers=pool.headers,
        json={"codeInputType": "Inline", "executionType": "Synchronous", "code": code, "timeoutInSeconds": timeout,
              **extra},
        timeout=timeout + 30,
    )
    assert response.is_success, response.text
    return response.json()


def value_v1(pool, identifier: str, code: str, **kwargs):
    properties = execute_v1(pool, identifier, code, **kwargs)
    assert properties["status"] == "Success", properties
    return properties["executionResult"]


def delete_session(pool, identifier: str) -> None:
    httpx.delete(f"{pool.endpoint}/session", params={"api-version": V2, "identifier": identifier},
                 headers=pool.headers, timeout=30)


def pool_answers(pool) -> bool:
    return httpx.get(f"{pool.endpoint}/health", timeout=10).is_success


# --- the seeds' samples -------------------------------------------------------------------------

def test_seed_hello_world_prints_to_stdout(node_pool):
    properties = execute_v1(node_pool, new_identifier(), 'console.log("hello-world")')
    assert properties["status"] == "Success"
    assert properties["stdout"] == "hello-world\n" and properties["stderr"] == ""
    assert properties["executionResult"] == "" and properties["result"] == ""


@pytest.mark.parametrize(("code_input_type", "code", "stdout", "result"), [
    ("inline", 'console.log("inline-synchronous")', "inline-synchronous\n", ""),
    ("inlinetext", "1+3", "", 4),
    ("InlineBase64", "MSsy", "", 3),
])
def test_seed_code_input_types(node_pool, code_input_type, code, stdout, result):
    properties = execute_v1(node_pool, new_identifier(), code, code_input_type=code_input_type)
    assert properties["status"] == "Success", properties
    assert properties["stdout"] == stdout and properties["executionResult"] == result


def test_seed_file_sample_creates_a_downloadable_file(node_pool):
    identifier = new_identifier()
    properties = execute_v1(node_pool, identifier, SEED_FILE_SAMPLE)
    assert properties["status"] == "Success", properties
    assert properties["stdout"] == "File has been created and saved successfully!\n"
    content = httpx.get(f"{node_pool.endpoint}/files/content/example.txt", params={"api-version": V1, "identifier": identifier},
                        headers=node_pool.headers, timeout=30)
    assert content.status_code == 200 and content.text == "Hello, this is a sample content!"
    content = httpx.get(f"{node_pool.endpoint}/files/example.txt/content", params={"api-version": V2, "identifier": identifier},
                        headers=node_pool.headers, timeout=30)
    assert content.status_code == 200 and content.text == "Hello, this is a sample content!"


def test_seed_npm_list_sample_runs_without_network(node_pool):
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    properties = execute_v1(node_pool, new_identifier(), SEED_NPM_LIST_SAMPLE, timeout=100)
    assert properties["status"] == "Success", properties
    assert properties["stdout"].startswith("time taken: ")
    assert "stdout: /mnt/data\n└── (empty)" in properties["stdout"]


# --- executions through both wire shapes ----------------------------------------------------------

def test_state_persists_and_v2_reports_values_and_errors(node_pool):
    identifier = new_identifier()
    assert execute_v2(node_pool, identifier, "let x = 2; const half = 21")["status"] == "Succeeded"
    done = execute_v2(node_pool, identifier, "console.log('seen'); x * half")
    assert done["status"] == "Succeeded"
    assert done["result"]["stdout"] == "seen\n" and done["result"]["executionResult"] == 42
    failed = execute_v2(node_pool, identifier, "null.property")
    assert failed["status"] == "Failed" and failed["error"]["error"]["code"] == "TypeError"
    assert failed["result"]["stderr"].startswith("TypeError: Cannot read properties of null")
    assert value_v1(node_pool, identifier, "x") == 2


def test_top_level_await_and_async_done_through_the_pool(node_pool):
    identifier = new_identifier()
    assert value_v1(node_pool, identifier, "const v = await new Promise(r => setTimeout(() => r(5), 50)); v * 2") == 10
    assert value_v1(node_pool, identifier, "$$.async(); setTimeout(() => $$.done({v}), 50)") == {"v": 5}
    rejected = execute_v1(node_pool, identifier, "await Promise.reject(new Error('no'))")
    assert rejected["status"] == "Failure" and rejected["stderr"].startswith("Error: no")


def test_asynchronous_v2_execution_is_polled_to_its_value(node_pool):
    identifier = new_identifier()
    started = execute_v2(node_pool, identifier, "$$.async(); setTimeout(() => $$.done('later'), 200)",
                         executionType="Asynchronous")
    deadline = time.monotonic() + 30
    while True:
        polled = httpx.get(f"{node_pool.endpoint}/executions/{started['id']}",
                           params={"api-version": V2, "identifier": identifier}, headers=node_pool.headers, timeout=30)
        assert polled.status_code == 200
        body = polled.json()
        if body["status"] not in ("NotStarted", "Running"):
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert body["status"] == "Succeeded" and body["result"]["executionResult"] == "later"


def test_require_finds_a_package_uploaded_into_the_working_folder(node_pool):
    identifier = new_identifier()
    files = {
        "package.json": b'{"name": "greeter", "main": "main.js"}',
        "main.js": b"module.exports = (who) => `hello ${who}`;",
    }
    for name, data in files.items():
        response = httpx.post(f"{node_pool.endpoint}/files",
                              params={"api-version": V2, "identifier": identifier, "path": "node_modules/greeter"},
                              headers=node_pool.headers, files={"file": (name, data)}, timeout=30)
        assert response.status_code == 200, response.text
    assert value_v1(node_pool, identifier, "require('greeter')('pool')") == "hello pool"


def test_busy_loop_past_its_timeout_is_interrupted_and_state_kept(node_pool):
    identifier = new_identifier()
    value_v1(node_pool, identifier, "var before = 'kept'")
    properties = execute_v1(node_pool, identifier, "while (true) {}", timeout=2)
    assert properties["status"] == "Failure" and "ExecutionTimeout" in json.dumps(properties)
    failed = execute_v2(node_pool, identifier, "for (;;) {}", timeout=2)
    assert failed["status"] == "Failed" and failed["error"]["error"]["code"] == "ExecutionTimeout"
    pending = execute_v2(node_pool, identifier, "$$.async()", timeout=2)
    assert pending["status"] == "Failed" and pending["error"]["error"]["code"] == "ExecutionTimeout"
    assert value_v1(node_pool, identifier, "before") == "kept"


def test_a_client_that_disconnects_interrupts_its_execution(node_pool):
    identifier = new_identifier()
    value_v1(node_pool, identifier, "var spins = 0")
    body = json.dumps({"properties": {"codeInputType": "inline", "executionType": "synchronous", "timeoutInSeconds": 200,
                                      "code": "fs.writeFileSync('started', ''); while (true) spins++"}}).encode()
    request = (f"POST /code/execute?api-version={V1}&identifier={identifier} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: Bearer {node_pool.token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", node_pool.port)) as client:
        client.sendall(request)
        deadline = time.monotonic() + 30
        while httpx.get(f"{node_pool.endpoint}/files/started", params={"api-version": V2, "identifier": identifier},
                        headers=node_pool.headers, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the loop did not start"
            time.sleep(0.05)
    # the loop was interrupted (else this would wait for the 200 s limit) and the session kept its state
    assert value_v1(node_pool, identifier, "spins > 0", timeout=30) is True


# --- the isolation matrix -------------------------------------------------------------------------

NETWORK_PROBE = """
const net = require('net');
const attempt = (host, port) => new Promise((resolve) => {
  const socket = net.connect({host, port});
  socket.setTimeout(3000);
  socket.on('connect', () => { socket.destroy(); resolve('connected') });
  socket.on('timeout', () => { socket.destroy(); resolve('timeout') });
  socket.on('error', (e) => resolve(e.code));
});
({
  outside: await attempt('93.184.215.14', 80),
  pool: await attempt('127.0.0.1', PORT),
  dns: await require('dns').promises.lookup('example.com').then(() => 'resolved', (e) => e.code),
  fetch: await fetch('http://127.0.0.1:PORT/health').then(() => 'fetched', (e) => e.cause ? e.cause.code : e.name),
})
"""


@NEEDS_SANDBOX
def test_sessions_have_no_network(node_pool):
    result = value_v1(node_pool, new_identifier(), NETWORK_PROBE.replace("PORT", str(node_pool.port)))
    assert result["outside"] != "connected" and result["pool"] != "connected"
    assert result["dns"] != "resolved" and result["fetch"] != "fetched", result


@NEEDS_SANDBOX
def test_sessions_cannot_see_each_others_files_or_processes(node_pool):
    first, second = new_identifier(), new_identifier()
    value_v1(node_pool, first, "fs.writeFileSync('/mnt/data/secret.txt', 'first'); "
                               "require('child_process').spawn('sleep', ['300.25'], {detached: true}); 1")
    probe = (
        "const cmdlines = fs.readdirSync('/proc').filter(p => /^\\d+$/.test(p)).map(p => {"
        " try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8') } catch { return '' } });"
        f"({{files: fs.readdirSync('/mnt/data'), sleeper: cmdlines.some(c => c.includes('300.25')),"
        f" root: (() => {{ try {{ return fs.readdirSync({json.dumps(str(node_pool.data_root))}) }} catch (e) {{ return e.code }} }})()}})"
    )
    assert value_v1(node_pool, first, probe)["sleeper"] is True  # the probe does see a session's own processes
    seen = value_v1(node_pool, second, probe)
    assert "secret.txt" not in seen["files"] and seen["sleeper"] is False
    assert not isinstance(seen["root"], list)
    delete_session(node_pool, first)


@NEEDS_SANDBOX
def test_the_host_environment_and_the_pool_token_are_not_visible(node_pool):
    probe = (
        "const environs = fs.readdirSync('/proc').filter(p => /^\\d+$/.test(p)).map(p => {"
        " try { return fs.readFileSync(`/proc/${p}/environ`, 'utf8') } catch { return '' } });"
        "JSON.stringify(process.env) + environs.join('\\n')"
    )
    seen = value_v1(node_pool, new_identifier(), probe)
    assert HOST_SECRET not in seen and node_pool.token not in seen
    assert "/mnt/data" in seen  # the probe did read the session's own environment


@pytest.fixture(scope="module")
def small_pool():
    """A pool with tight limits, for the bombs."""
    if NODE is None:
        pytest.skip(NO_NODE)
    pool = start_pool("--container-type", "NodeLTS", "--memory", "384M", "--max-processes", "64",
                      "--ready-sessions", "0")
    yield pool
    pool.stop()


@NEEDS_SANDBOX
@pytest.mark.parametrize("bomb", [
    "const hog = []; while (true) hog.push(Buffer.alloc(16 << 20, 1))",  # outside V8's heap
    "const hog = []; while (true) hog.push(new Array(1 << 20).fill(1.5))",  # V8's heap
])
def test_memory_bombs_are_bounded(small_pool, bomb):
    identifier = new_identifier()
    properties = execute_v1(small_pool, identifier, bomb, timeout=60)
    assert properties["status"] == "Failure", properties
    assert pool_answers(small_pool)
    assert value_v1(small_pool, new_identifier(), "1+1") == 2
    delete_session(small_pool, identifier)


@NEEDS_SANDBOX
def test_process_bomb_through_child_process_is_bounded(small_pool):
    identifier = new_identifier()
    bomb = """
const cp = require('child_process');
let started = 0, refused = 0;
for (let i = 0; i < 400; i++) {
  try {
    const child = cp.spawn('sleep', ['60']);
    child.on('error', () => refused++);
    started++;
  } catch (e) { refused++ }
}
await new Promise((r) => setTimeout(r, 500));
({started, refused})
"""
    result = value_v1(small_pool, identifier, bomb)
    assert result["refused"] > 0, result
    assert value_v1(small_pool, new_identifier(), "1+1") == 2
    delete_session(small_pool, identifier)


@NEEDS_SANDBOX
def test_worker_threads_bomb_is_bounded(small_pool):
    identifier = new_identifier()
    bomb = """
const { Worker } = require('worker_threads');
const workers = [];
let failure = null;
try {
  for (let i = 0; i < 400; i++) workers.push(new Worker('setInterval(() => {}, 1000)', { eval: true }));
} catch (e) { failure = e.code || e.name }
await new Promise((r) => setTimeout(r, 500));
({ created: workers.length, failure })
"""
    properties = execute_v1(small_pool, identifier, bomb, timeout=60)
    # either the session refuses more threads or it dies at its limits; the pool and others carry on
    assert properties["status"] in ("Success", "Failure"), properties
    assert pool_answers(small_pool)
    assert value_v1(small_pool, new_identifier(), "1+1") == 2
    delete_session(small_pool, identifier)


def test_pool_refuses_to_start_without_node(tmp_path):
    """Runs on every machine: the refusal is what a machine without Node.js shows."""
    with pytest.raises(RuntimeError) as failure:
        start_pool("--container-type", "NodeLTS", "--node", str(tmp_path / "no-such-node"), timeout=30)
    assert "Node.js" in str(failure.value) and "install" in str(failure.value)


@pytest.mark.parametrize("code", ["console.log('started'); await new Promise(() => {})",
                                  "console.log('started'); $$.async()",
                                  "console.log('started'); while (true) {}"])
def test_an_interrupt_sent_as_the_first_line_arrives_always_ends_the_cell_and_keeps_the_session(node_pool, code):
    """Each interrupt lands while the cell's synchronous part may still be ending, the moment a SIGINT
    alone can be lost or end the worker (Node's vm breakOnSigint): each must end its cell, state kept."""
    identifier = new_identifier()
    value_v1(node_pool, identifier, "var kept = 'yes'")
    params = {"api-version": V2, "identifier": identifier}
    with httpx.Client(base_url=node_pool.endpoint, headers=node_pool.headers, timeout=60) as client:
        for attempt in range(15):
            with client.stream("POST", "/.remote-kernel/live-execute", params=params,
                               json={"code": code, "timeoutInSeconds": 60}) as stream:
                lines = stream.iter_lines()
                started = json.loads(next(lines))
                assert started["event"] == "started"
                first = json.loads(next(lines))
                assert first == {"event": "stream", "name": "stdout", "text": "started\n"}
                answer = client.post("/.remote-kernel/live-interrupt",
                                     params={**params, "execution": started["id"]}).json()
                assert answer["status"] == "Running"
                done = json.loads(next(lines))
            assert done["event"] == "done", done
            error = done["execution"]["error"]["error"]  # an ErrorResponse
            assert (error["code"], attempt) == ("Interrupted", attempt), error
    assert value_v1(node_pool, identifier, "kept") == "yes"


@pytest.mark.parametrize("jupyter", [False, True])
@pytest.mark.parametrize("code", [
    "({[Symbol.for('nodejs.util.inspect.custom')]() { throw {get message() { throw new Error('x') }} }})",
    "throw {get message() { throw new Error('m') }}",
    "throw new Proxy({}, {get() { throw new Error('p') }, getPrototypeOf() { throw new Error('g') }})",
    "throw new Proxy(new Error('e'), {get() { throw new Error('p') }})",
    "new Proxy({}, {get() { throw new Error('p') }, ownKeys() { throw new Error('k') }})",
])
def test_a_value_or_throw_whose_description_throws_keeps_the_session(node_pool, code, jupyter):
    """Issue 23, finding 15 for Node: showing a value or a thrown value runs session code (custom inspect,
    getters, proxy traps); what it throws must fail at most that execution, never stall the worker."""
    identifier = new_identifier()
    assert execute_v2(node_pool, identifier, "globalThis.kept = 41")["status"] == "Succeeded"
    for _ in range(2):  # the second run of the same cell was the one that hung
        body = execute_v2(node_pool, identifier, code, timeout=20, returnJupyterFormatExecutionResult=jupyter)
        assert (body.get("error") or {}).get("code") != "ExecutionTimeout", body
        assert isinstance(body["result"]["executionResult"], str) or body["status"] == "Failed", body
    after = execute_v2(node_pool, identifier, "kept + 1")
    assert after["status"] == "Succeeded" and after["result"]["executionResult"] == 42, after
