"""The back channel (issue 24) against ipykernel, both driven through jupyter_client in the same run.

- widget round trip: a front end's `comm_msg` update of an IntSlider → the session's observer prints →
  that stream message on IOPub (under the comm message);
- input() round trip: `execute_request` of `input()` → `input_request` → an immediate `input_reply` →
  the cell's idle status.

Each on ipykernel, on remote-python with a local pool through its live extension ("live"), and on
remote-python behind a proxy that passes only the contract ("hosted", the test suite's ContractProxy:
the hosted path, whose file API takes uploads while a cell runs). Samples interleave the kernels.

    python bench/back_channel_bench.py [--samples N]
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, embedded_env, install_kernelspecs, ms, p50, p95, start_pool

if TYPE_CHECKING:
    from jupyter_client.blocking.client import BlockingKernelClient

SETUP = ("import ipywidgets as w\ns = w.IntSlider(max=1000000)\n"
         "s.observe(lambda change: print('v', change['new']), 'value')\ns.model_id")


def _iopub_until(kc: BlockingKernelClient, msg_id: str, want: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no {want} within {timeout} s") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == want or (want == "idle" and msg["msg_type"] == "status"
                                       and msg["content"]["execution_state"] == "idle"):
            return msg


def _run(kc: BlockingKernelClient, code: str) -> str:
    msg_id = kc.execute(code)
    result = _iopub_until(kc, msg_id, "execute_result")["content"]["data"]["text/plain"]
    _iopub_until(kc, msg_id, "idle")
    return str(result)


def widget_round_trip(kc: BlockingKernelClient, model_id: str, value: int) -> float:
    msg = kc.session.msg("comm_msg", {"comm_id": model_id, "data": {"method": "update", "state": {"value": value},
                                                                     "buffer_paths": []}})
    started = time.perf_counter()
    kc.shell_channel.send(msg)
    _iopub_until(kc, msg["header"]["msg_id"], "stream")
    elapsed = time.perf_counter() - started
    _iopub_until(kc, msg["header"]["msg_id"], "idle")
    return elapsed


def input_round_trip(kc: BlockingKernelClient) -> float:
    started = time.perf_counter()
    msg_id = kc.execute("x = input('?')", allow_stdin=True)
    request = kc.get_stdin_msg(timeout=60)
    assert request["msg_type"] == "input_request"
    kc.input("42")
    _iopub_until(kc, msg_id, "idle")
    elapsed = time.perf_counter() - started
    while kc.get_shell_msg(timeout=60)["parent_header"].get("msg_id") != msg_id:
        pass
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    from jupyter_client.manager import start_new_kernel

    sys.path.insert(0, str(ROOT / "tests"))
    from kernel_support import ContractProxy  # the tests' contract-only proxy: the hosted path

    install_kernelspecs()
    pool = start_pool()
    proxy = ContractProxy(pool.endpoint)
    envs = {"ipykernel": ("python3", embedded_env()),
            "live": ("remote-python", {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": pool.endpoint,
                                       "REMOTE_KERNEL_TOKEN": pool.token, "REMOTE_KERNEL_IDENTIFIER": str(uuid.uuid4())}),
            "hosted": ("remote-python", {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": proxy.endpoint,
                                         "REMOTE_KERNEL_TOKEN": pool.token,
                                         "REMOTE_KERNEL_IDENTIFIER": str(uuid.uuid4())})}
    kernels = {name: start_new_kernel(kernel_name=spec, env=env, cwd=str(ROOT), startup_timeout=90)
               for name, (spec, env) in envs.items()}
    samples: dict[str, dict[str, list[float]]] = {name: {"widget": [], "input": []} for name in kernels}
    try:
        models = {name: _run(kc, SETUP).strip("'") for name, (_, kc) in kernels.items()}
        for name, (_, kc) in kernels.items():  # warm up
            widget_round_trip(kc, models[name], 1)
            input_round_trip(kc)
        for i in range(args.samples):
            for name, (_, kc) in kernels.items():
                samples[name]["widget"].append(widget_round_trip(kc, models[name], i + 2))
                samples[name]["input"].append(input_round_trip(kc))
    finally:
        for km, kc in kernels.values():
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        proxy.close()
        pool.stop()
    report: dict[str, Any] = {}
    for name, kinds in samples.items():
        for kind, values in kinds.items():
            report[f"{kind} round trip, {name}"] = {"p50_ms": ms(p50(values)), "p95_ms": ms(p95(values))}
    for name in ("live", "hosted"):
        for kind in ("widget", "input"):
            local = report[f"{kind} round trip, ipykernel"]
            mine = report[f"{kind} round trip, {name}"]
            mine["p50_ratio"] = round(mine["p50_ms"] / local["p50_ms"], 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
