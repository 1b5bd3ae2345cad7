"""A slow network, on loopback: what each kind of cell costs in requests and round trips.

On a hosted pool every request is a real round trip (tens of milliseconds), so the number of
requests a cell makes is what a user waits for. A proxy on loopback in front of a local pool adds a
chosen round-trip time to every request (half on the way in, half on the way out) and counts them;
the kernel is pointed at it through POOL_MANAGEMENT_ENDPOINT, as it would be at a hosted pool, so it
uses only the REST contract (the proxy drops the local pool's own extensions from its answers).

    python bench/network_bench.py --rtt 50        # or through `python -m bench` (section "network")

The proxy is starlette + uvicorn forwarding with httpx (streamed both ways), in a thread of its own.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REMOTE_KERNEL, ROOT, embedded_env, install_kernelspecs, median, start_pool
from bench.kernel_bench import execute, stop

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
#: headers by which the local pool offers what a hosted pool does not: dropped, so the kernel sees the contract only
EXTENSION_HEADERS = {"x-remote-kernel-extensions"}

#: The kinds of cell a notebook is made of, each measured after a warm-up cell of the same kind.
CELLS = {
    "plain": "x = 1 + 1",
    "print": "print('hello')",
    "value": "x",
    "table": "import pandas as pd\npd.DataFrame({'a': range(5), 'b': list('abcde')})",
    "figure": "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()",
    "display update": "from IPython.display import display, Markdown\n"
                      "h = display(Markdown('a'), display_id=True)\nh.update(Markdown('b'))",
    "%files": "%files",
    "%upload (1 KB)": "%upload {small} small.txt",
}


class DelayingProxy:
    """A loopback HTTP proxy that adds `rtt` seconds to each request and counts them by method and path."""

    def __init__(self, target: str, rtt: float) -> None:
        self.target = target.rstrip("/")
        self.rtt = rtt
        self.requests: list[tuple[str, str]] = []
        self.endpoint = ""
        self._ready = threading.Event()
        self._server: Any = None

    def start(self) -> DelayingProxy:
        threading.Thread(target=self._serve, name="delaying-proxy", daemon=True).start()
        if not self._ready.wait(30):
            raise RuntimeError("the proxy did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def _serve(self) -> None:
        import httpx
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import StreamingResponse
        from starlette.routing import Route

        proxy = self
        upstream = httpx.AsyncClient(base_url=self.target, timeout=None)

        async def forward(request: Request) -> StreamingResponse:
            proxy.requests.append((request.method, request.url.path))
            await asyncio.sleep(proxy.rtt / 2)
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            sent = upstream.build_request(request.method, request.url.path, params=request.query_params,
                                          headers=headers, content=request.stream())
            answer = await upstream.send(sent, stream=True)
            await asyncio.sleep(proxy.rtt / 2)
            back = {k: v for k, v in answer.headers.items()
                    if k.lower() not in HOP_BY_HOP and k.lower() not in EXTENSION_HEADERS}
            return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code, headers=back,
                                     background=None)

        app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        sock.listen(128)  # connections wait in the backlog until the server runs
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
        self._ready.set()
        asyncio.run(self._server.serve(sockets=[sock]))


def measure(rtt: float, samples: int) -> dict[str, Any]:
    """Requests and round trips per kind of cell, and a whole notebook's wall time, over `rtt` seconds."""
    from jupyter_client.manager import start_new_kernel

    install_kernelspecs()
    results: dict[str, Any] = {"rtt_ms": rtt * 1000, "samples": samples, "cells": {}}
    with tempfile.TemporaryDirectory(prefix="rk-bench-net-") as work, start_pool("--ready-sessions", "2") as pool:
        small = Path(work) / "small.txt"
        small.write_bytes(b"x" * 1024)
        proxy = DelayingProxy(pool.endpoint, rtt).start()
        try:
            env = {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint, "REMOTE_KERNEL_TOKEN": pool.token}
            km, kc = start_new_kernel(kernel_name=REMOTE_KERNEL, env=env, cwd=work, startup_timeout=90)
            try:
                before = len(proxy.requests)
                elapsed, _ = execute(kc, "x = 1")
                results["cells"]["first cell"] = {"requests": len(proxy.requests) - before,
                                                  "round_trips": elapsed / rtt if rtt else None}
                for kind, code in CELLS.items():
                    code = code.replace("{small}", str(small))
                    execute(kc, code)  # warm-up: imports, the first figure
                    counts: list[float] = []
                    trips: list[float] = []
                    for _ in range(samples):
                        before = len(proxy.requests)
                        elapsed, _ = execute(kc, code)
                        counts.append(len(proxy.requests) - before)
                        trips.append(elapsed / rtt if rtt else float("nan"))
                    results["cells"][kind] = {"requests": median(counts), "round_trips": median(trips)}
            finally:
                stop(km, kc)
            results["quickstart_s"] = quickstart(env)
        finally:
            proxy.stop()
    return results


def quickstart(env: dict[str, str]) -> float:
    """Seconds to run notebooks/quickstart.ipynb on remote-python through the proxy."""
    import os
    import shutil

    import nbformat
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="rk-bench-net-nb-") as folder:
        shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", folder)
        book = nbformat.read(Path(folder) / "quickstart.ipynb", as_version=4)  # type: ignore[no-untyped-call]
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            started = time.perf_counter()
            NotebookClient(book, kernel_name=REMOTE_KERNEL, timeout=300, startup_timeout=90,
                           resources={"metadata": {"path": folder}}).execute()
            return time.perf_counter() - started
        finally:
            os.environ.clear()
            os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", type=float, default=50, help="round-trip time to add, in ms (default: 50)")
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.rtt / 1000, args.samples), indent=2))


if __name__ == "__main__":
    main()
