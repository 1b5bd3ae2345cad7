"""What a cell costs in requests to the pool (issue 17), counted, not timed.

A real kernel, driven by jupyter_client, runs against the real local pool through a proxy that
records every request (kernel_support.ContractProxy). On the contract only (as with a hosted pool)
and on the local pool's live route, every kind of cell that bench/network_bench.py measures costs
one request; the session's first cell costs one too (the rich shim travels with it).
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from kernel_support import ContractProxy, errors_of, kernel, pool_env, run, wait_for
from test_rich_output import datas, no_markers, shapes

from bench.network_bench import CELLS

EXECUTE = ("POST", "/executions")
LIVE_EXECUTE = ("POST", "/.remote-kernel/live-execute")
TABLE = "import pandas as pd\npd.DataFrame({'x': range(50)})"
#: more kinds of cell than the benchmark's, each one request too
MORE_CELLS = {
    "error": "1 / 0",
    "stderr": "import sys; print('e', file=sys.stderr)",
    "clear_output in a loop": "from IPython.display import clear_output\nfor i in range(3):\n"
                              "    clear_output(wait=True)\n    print(i)",
    "display": "from IPython.display import display, Markdown\ndisplay(Markdown('*m*'))",
    "series value": "import pandas as pd\ns = pd.Series([1, 2]).sum()\ns",
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def proxy(pool):
    p = ContractProxy(pool.endpoint)
    yield p
    p.close()


def cells(folder: Path) -> dict[str, str]:
    small = folder / "small.txt"
    small.write_bytes(b"x" * 1024)
    return {**{kind: code.replace("{small}", str(small)) for kind, code in CELLS.items()}, **MORE_CELLS}


def one_request_each(kc, proxy: ContractProxy, kinds: dict[str, str], execute: tuple[str, str]) -> None:
    for kind, code in kinds.items():
        start = len(proxy.requests)
        reply, outputs = run(kc, code)
        made = proxy.since(start)
        assert len(made) == 1, (kind, made)
        if kind.startswith("%files") or kind.startswith("%upload"):
            assert made[0][1] == "/files" and reply["status"] == "ok", (kind, reply)
        else:
            assert made == [execute], kind
        assert no_markers(outputs), kind


def test_the_first_cell_carries_the_shim_in_its_own_request_and_keeps_its_line_numbers(pool, proxy):
    env = {**pool_env(pool, str(uuid.uuid4())), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
    proxy.ignore = ".live/content"  # a cell slowed past cell.POLL_AFTER by a loaded machine reads its live log
    with kernel(env) as (km, kc):
        reply, outputs = run(kc, "x = 1\nprint('one')\n1 / 0")
        assert proxy.since(0) == [EXECUTE]
        assert reply["status"] == "error" and reply["ename"] == "ZeroDivisionError"
        assert shapes(outputs) == ["stdout", "error"] and outputs[0]["content"]["text"] == "one\n"
        traceback = ANSI.sub("", "\n".join(errors_of(outputs)[0]["traceback"]))
        assert "In[1], line 3" in traceback and "----> 3 1 / 0" in traceback, traceback
        assert "remote_kernel" not in traceback
        start = len(proxy.requests)
        reply, outputs = run(kc, TABLE)  # the shim is in: the table comes rich, in one request
        assert proxy.since(start) == [EXECUTE] and shapes(outputs) == ["execute_result:text/html"]
        _, outputs = run(kc, "print(In[1] == _i1 == 'x = 1\\nprint(\\'one\\')\\n1 / 0', len(In))")
        assert outputs[0]["content"]["text"] == "True 4\n"  # '', the two cells, this one: no helper


def test_a_first_cell_that_shows_a_table_costs_one_request_and_shows_it_rich(pool, proxy):
    env = {**pool_env(pool, str(uuid.uuid4())), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
    proxy.ignore = ".live/content"
    with kernel(env) as (km, kc):
        reply, outputs = run(kc, TABLE)
        assert proxy.since(0) == [EXECUTE]
        assert reply["execution_count"] == 1 and shapes(outputs) == ["execute_result:text/html"]
        assert outputs[0]["content"]["execution_count"] == 1


def test_a_first_cell_that_cannot_carry_the_shim_gets_it_in_a_request_of_its_own(pool, proxy):
    """A cell magic must be the cell's first line: the shim goes first, on its own (rich.can_ride)."""
    env = {**pool_env(pool, str(uuid.uuid4())), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
    proxy.ignore = ".live/content"
    with kernel(env) as (km, kc):
        reply, _ = run(kc, "%%time\nx = 1")
        assert reply["status"] == "ok" and proxy.since(0) == [EXECUTE, EXECUTE]
        start = len(proxy.requests)
        _, outputs = run(kc, TABLE)
        assert proxy.since(start) == [EXECUTE] and shapes(outputs) == ["execute_result:text/html"]


def test_each_kind_of_cell_costs_one_request_and_only_large_outputs_a_download(pool, proxy, tmp_path):
    """Plain cells, prints, errors, tables, figures, displays, updates, `%files` and `%upload` travel
    in one request (bundles up to rich_shim.INLINE_LIMIT inline in the execution's answer); only a
    larger bundle costs a download (and a delete, in the background)."""
    env = {**pool_env(pool, str(uuid.uuid4())), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
    proxy.ignore = ".live/content"
    with kernel(env) as (km, kc):
        run(kc, "x = 1")
        assert proxy.since(0) == [EXECUTE]
        kinds = cells(tmp_path)
        for code in kinds.values():
            run(kc, code)  # warm-up: imports, the first figure
        one_request_each(kc, proxy, kinds, EXECUTE)
        start = len(proxy.requests)
        _, outputs = run(kc, "from IPython.display import display, Markdown\ndisplay(Markdown('y' * 400_000))")
        assert len(datas(outputs, "text/markdown")[0]) == 400_000
        wait_for(lambda: len(proxy.since(start)) >= 3, timeout=30, what="the large bundle to be fetched and deleted")
        fetched = proxy.since(start)
        assert fetched[0] == EXECUTE and fetched[1][0] == "GET" and fetched[1][1].endswith("/content")
        assert fetched[2][0] == "DELETE" and len(fetched) == 3
        start = len(proxy.requests)
        run(kc, "x")
        assert proxy.since(start) == [EXECUTE]


def test_on_the_live_route_every_cell_is_one_request_and_short_cells_never_poll(pool, tmp_path):
    """The local pool's live route streams a cell's output in the answer of its one request: nothing
    is polled, whatever the cell shows (no request is left out of the count here)."""
    proxy = ContractProxy(pool.endpoint, contract_only=False)
    try:
        env = {**pool_env(pool, str(uuid.uuid4())), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
        with kernel(env) as (km, kc):
            reply, outputs = run(kc, "print('first')")
            assert reply["status"] == "ok"
            # the pool's extensions are learnt here, by the first cell's one execution; a first cell that outlasts
            # POLL_AFTER (the session's shim is installed with it; a loaded machine) also reads its live log
            first = proxy.since(0)
            assert first[0] == EXECUTE and all(method == "GET" and path.endswith(".live/content")
                                               for method, path in first[1:]), first
            kinds = cells(tmp_path)
            for code in kinds.values():
                run(kc, code)
            one_request_each(kc, proxy, kinds, LIVE_EXECUTE)
    finally:
        proxy.close()


def test_a_cell_whose_request_changes_allow_stdin_still_costs_one_request(pool, proxy):
    """The request's allow_stdin reaches the session's back channel in the cell's own request (as the count
    line does), and the cell keeps its own line numbers."""
    env = {**pool_env(pool, str(uuid.uuid4())), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint}
    proxy.ignore = ".live/content"
    with kernel(env) as (km, kc):
        run(kc, "x = 1", allow_stdin=True)  # the shim (and its back channel) goes in with this request's
        for allow_stdin, code in ((False, "y = 2\ninput('name? ')"), (True, "x + 1"), (False, "input('again? ')")):
            start = len(proxy.requests)
            reply, outputs = run(kc, code, allow_stdin=allow_stdin)
            assert proxy.since(start) == [EXECUTE], (allow_stdin, code)
            if not allow_stdin:
                assert (reply["status"], reply["ename"]) == ("error", "StdinNotImplementedError")
                traceback = ANSI.sub("", "\n".join(errors_of(outputs)[0]["traceback"]))
                assert f"In[{reply['execution_count']}], line {code.count(chr(10)) + 1}" in traceback, traceback
            else:
                assert reply["status"] == "ok" and outputs[0]["content"]["data"]["text/plain"] == "2"
