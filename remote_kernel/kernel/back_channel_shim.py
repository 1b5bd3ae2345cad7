"""The session side of the back channel (comms and stdin): runs inside a remote session, never in the kernel.

The kernel installs it right after `rich_shim.py`, into the same shell (`install(shim)`), and it
speaks through that shim's markers, so it works wherever rich output does (the local pool's live
stream and the hosted path's live log alike):

- **comms, session → front end**: `comm.create_comm` (the `comm` package's pluggable factory, which
  ipywidgets and ipykernel use) makes comms whose `comm_open`, `comm_msg` and `comm_close` become
  one output of type `"comm"` each (binary buffers as base64); the kernel publishes them on IOPub.
  The session's comm manager stays the `comm` package's own, so targets registered before the
  install (ipywidgets registers at import) keep working.
- **comms, front end → session**: the kernel runs `deliver(json)` as a short execution (several
  queued messages in one); they go to the comm manager's `comm_open`/`comm_msg`/`comm_close`, as
  ipykernel's shell handlers do, so observers run and their output is that execution's output.
- **a thread's comm messages between cells** (a widget updated from a thread after its cell ended): no
  execution's output would carry them, so they are held (HELD at most, state updates merged past it)
  and sent, in order, when the next execution starts; ipykernel publishes them at once.
- **stdin**: `input()`, `getpass()` (and what reads through them: pdb) emit an output of type
  `"input"`, then wait for the kernel's answer in a file of the hidden folder
  (`<nonce>-in-<token>.json`): first `{"ack": true}` (the kernel can write files while a cell runs; not
  sent by a pool with the live extension, whose file API always takes them), then `{"value": ...}` (or `{"interrupt": true}`: the user interrupted, where the pool cannot signal the
  session). With the request's `allow_stdin` false they raise ipykernel's
  `StdinNotImplementedError` at once; with no ack within ACK_WAIT the pool accepts no files during a
  cell and they raise saying so. An interrupt while waiting raises ipykernel's
  `KeyboardInterrupt("Interrupted by user")`.

`PARENT` stands for the request being answered: ipywidgets' `Output` widget records that request's
id as its `msg_id`; the kernel puts the real one in (the session never sees message ids).
Standard library only (and `comm` when the session has it).
"""
from __future__ import annotations

import base64
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import secrets
import sys
import threading
import time
import types
from typing import Any

PARENT = "remote-kernel-parent-request"
NEXT = "remote-kernel-next"  # a batch's next message begins: comms.NEXT
ACK_WAIT = 15.0  # seconds an input request waits for the kernel's first answer
POLL = 0.01  # seconds between reads of the answer file
RATE = 100.0  # comm messages a second sent on average (state updates past it are merged and sent later) ...
BURST = 400  # ... and at once (a front end's IOPub socket drops messages past ~1000 waiting)
HELD = 1000  # comm messages that threads sent between cells, kept for the next execution
INLINE_LIMIT = 256 << 10  # characters of a message that travels inline (rich_shim.INLINE_LIMIT)
NO_STDIN = "raw_input was called, but this frontend does not support input requests."
NO_FILES = ("{} was called, but this pool does not accept files while a cell runs, which the kernel needs to "
            "answer it: pass the value in code, or in a file you %upload")


class _KernelStub:
    """What ipywidgets asks of `comm.kernel`: not None (state is sent), and the request being answered."""

    def get_parent(self, channel: str = "shell") -> dict[str, Any]:
        return {"header": {"msg_id": PARENT, "msg_type": "execute_request"}}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _buffers(buffers: Any) -> list[str]:
    return [base64.b64encode(bytes(memoryview(b))).decode("ascii") for b in (buffers or [])]


class BackChannel:
    """Comms and stdin of one installed rich shim."""

    def __init__(self, shim: Any, allow_stdin: bool = False) -> None:
        self.shim = shim
        self.allow_stdin = allow_stdin
        self.kernel = _KernelStub()
        self.comms = False
        self.tokens, self.last = float(BURST), time.monotonic()
        self.stale: dict[Any, dict[str, Any]] = {}  # comm id → the state updates held back by the rate
        self.held: list[dict[str, Any]] = []  # a thread's messages while no cell ran: sent with the next execution
        self.held_lock = threading.Lock()
        self.held_dropped = 0

    def install(self) -> None:
        import builtins
        import getpass

        shim = self.shim
        shim._replace(builtins, "input", self.input)
        shim._replace(getpass, "getpass", self.getpass)
        try:
            import comm
            from comm.base_comm import BaseComm
        except ImportError:
            return  # no comm package: nothing to make comms with
        channel = self

        class SessionComm(BaseComm):
            """A comm whose messages travel to the kernel as the shim's outputs."""

            kernel = channel.kernel

            def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None,
                            **keys: Any) -> None:
                channel.publish(msg_type, dict(data=data or {}, comm_id=self.comm_id, **keys), metadata, buffers)

        self.comm_class = SessionComm
        shim._replace(comm, "create_comm", self.create_comm)
        _lazy_module("ipykernel.zmqshell")
        shim.shell.events.register("post_execute", self.flush_stale)
        shim.shell.events.register("pre_execute", self.send_held)  # after the shim's: the cell has begun
        self.comms = True

    def create_comm(self, *args: Any, **kwargs: Any) -> Any:
        return self.comm_class(*args, **kwargs)

    # --- comms --------------------------------------------------------------------------------

    def publish(self, msg_type: str, content: dict[str, Any], metadata: Any, buffers: Any) -> None:
        item = {"type": "comm", "msg_type": msg_type, "content": _jsonable(content),
                "metadata": _jsonable(metadata or {}), "buffers": _buffers(buffers)}
        comm_id = content.get("comm_id")
        data = item["content"].get("data")
        update = msg_type == "comm_msg" and isinstance(data, dict) and data.get("method") == "update" \
            and not data.get("buffer_paths") and not item["buffers"]
        if update and not self._within_rate():
            # over the rate: the latest state of each comm waits, merged, for the next message it may send
            self.stale.setdefault(comm_id, {}).update(data.get("state") or {})
            return
        stale = self.stale.pop(comm_id, None)
        if stale is not None and update:
            data["state"] = {**stale, **(data.get("state") or {})}
        elif stale is not None:
            self._send({**item, "msg_type": "comm_msg", "buffers": [],
                        "content": {"comm_id": comm_id, "data": {"method": "update", "state": stale,
                                                                 "buffer_paths": []}}})
        self._send(item)

    def _within_rate(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(BURST), self.tokens + (now - self.last) * RATE)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def flush_stale(self) -> None:
        """At a cell's end: the states held back by the rate go out (the front end ends up with the last)."""
        stale, self.stale = self.stale, {}
        for comm_id, state in stale.items():
            self._send({"type": "comm", "msg_type": "comm_msg", "metadata": {}, "buffers": [],
                        "content": {"comm_id": comm_id, "data": {"method": "update", "state": state,
                                                                 "buffer_paths": []}}})

    def _send(self, item: dict[str, Any]) -> None:
        """One message, inline in its marker unless it is large (a comm message is never held for the cell's end).
        A thread's message while no cell runs is held for the next execution: no execution's output would
        carry it (the session's output between executions goes nowhere)."""
        long = self.shim.long  # a `%%long` cell's thread writes into its own log, which polls read
        in_long = long is not None and threading.get_ident() == long.thread_ident
        if not self.shim.cell_running and not in_long and threading.current_thread() is not threading.main_thread():
            self._hold(item)
            return
        line = json.dumps(item, ensure_ascii=False)
        late, self.shim.late = self.shim.late, False
        try:
            if len(line) <= INLINE_LIMIT:
                self.shim.mark("j" + line)
            else:
                self.shim.emit(item)
        finally:
            self.shim.late = late

    def _hold(self, item: dict[str, Any]) -> None:
        """Keep a message for the next execution, in order; past HELD messages a state update is merged
        into the last held one of its comm, and anything else is dropped (counted)."""
        with self.held_lock:
            if len(self.held) < HELD:
                self.held.append(item)
                return
            data = item["content"].get("data")
            if item["msg_type"] == "comm_msg" and isinstance(data, dict) and data.get("method") == "update":
                for earlier in reversed(self.held):
                    same = earlier["content"].get("comm_id") == item["content"].get("comm_id")
                    before = earlier["content"].get("data")
                    if same and earlier["msg_type"] == "comm_msg" and isinstance(before, dict) \
                            and before.get("method") == "update" and not earlier["buffers"] and not item["buffers"]:
                        before["state"] = {**(before.get("state") or {}), **(data.get("state") or {})}
                        return
            self.held_dropped += 1

    def send_held(self) -> None:
        """At an execution's start: the messages threads sent while no cell ran, in order."""
        if self.shim.depth > 1:
            return
        with self.held_lock:
            held, self.held = self.held, []
            dropped, self.held_dropped = self.held_dropped, 0
        for item in held:
            self._send(item)
        if dropped:
            sys.stderr.write(f"[remote_kernel: {dropped} comm messages that threads sent between cells were "
                             f"dropped (over {HELD} waiting); widgets may show stale values]\n")

    def deliver(self, text: str) -> None:
        """Front-end messages (a JSON list of {msg_type, content, metadata, buffers}) to the comm manager."""
        import comm

        manager = comm.get_comm_manager()
        for index, message in enumerate(json.loads(text)):
            if index:  # what follows is the next message's output (the kernel gives it that request as parent)
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:
                        pass
                self._send({"type": "comm", "msg_type": NEXT, "index": index})
            kind = message.get("msg_type")
            handler: Any = {"comm_open": manager.comm_open, "comm_msg": manager.comm_msg,
                            "comm_close": manager.comm_close}.get(kind)
            if handler is None:
                continue
            msg = {"header": {"msg_type": kind, "msg_id": PARENT}, "parent_header": {},
                   "content": message.get("content") or {}, "metadata": message.get("metadata") or {},
                   "buffers": [memoryview(base64.b64decode(b)) for b in message.get("buffers") or []]}
            try:
                handler(None, None, msg)
            except Exception as exc:  # one bad message is lost, the rest go on (ipykernel logs it)
                sys.stderr.write(f"[remote_kernel: a {kind} message failed in the session: {exc!r}]\n")

    # --- stdin ----------------------------------------------------------------------------------

    def input(self, prompt: Any = "") -> str:
        __tracebackhide__ = True  # noqa: F841  (IPython leaves this frame out of tracebacks)
        return self.read_line(str(prompt), False, "raw_input")

    def getpass(self, prompt: Any = "Password: ", stream: Any = None) -> str:
        __tracebackhide__ = True  # noqa: F841
        return self.read_line(str(prompt), True, "getpass")

    def read_line(self, prompt: str, password: bool, call: str) -> str:
        __tracebackhide__ = True  # noqa: F841
        from IPython.core.error import StdinNotImplementedError

        if not self.allow_stdin:
            _refuse(call, prompt)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        token = secrets.token_hex(8)
        path = os.path.join(self.shim.folder, f"{self.shim.nonce}-in-{token}.json")
        self.publish_input(prompt, password, token)
        started, acked = time.monotonic(), not self.shim.live_log  # no live log: the pool is the kernel's own
        try:
            while True:
                answer = _read(path)
                if isinstance(answer, dict):
                    if "value" in answer:
                        _remove(path)
                        value = str(answer["value"])
                        if value == "\x04":
                            raise EOFError
                        return value
                    if "interrupt" in answer:  # a pool that cannot signal the session (hosted): the kernel says so here
                        raise KeyboardInterrupt
                    if "error" in answer:
                        _remove(path)
                        raise StdinNotImplementedError(str(answer["error"]))
                    acked = acked or bool(answer.get("ack"))
                if not acked and time.monotonic() - started > ACK_WAIT:
                    raise StdinNotImplementedError(NO_FILES.format(call))
                time.sleep(POLL)
        except KeyboardInterrupt:
            _remove(path)
            raise KeyboardInterrupt("Interrupted by user") from None

    def publish_input(self, prompt: str, password: bool, token: str) -> None:
        if self.shim.live_log:  # the kernel reads the request in the live log: start writing it now
            with self.shim.live_lock:
                self.shim.cell_started = 0.0
        late, self.shim.late = self.shim.late, False
        try:
            self.shim.emit({"type": "input", "prompt": prompt, "password": password, "token": token})
        finally:
            self.shim.late = late
        try:
            sys.stdout.flush()
        except Exception:
            pass


def _lazy_module(name: str) -> None:
    """Put package module `name` into sys.modules as in an ipykernel session, loaded on first use: libraries
    tell a Jupyter kernel by it (`tqdm.auto` chooses its notebook bar when `ipykernel.zmqshell` is there),
    and importing it for real costs a session ~0.2 s (zmq, tornado, jupyter_client). Its package is not
    registered (ipywidgets imports a registered `ipykernel` to read its version); the module's first use
    imports it, and the module becomes its attribute as after a real import."""
    parent_name, _, child = name.rpartition(".")
    if name in sys.modules or parent_name in sys.modules:
        return
    try:
        parent_spec = importlib.util.find_spec(parent_name)
        locations = parent_spec.submodule_search_locations if parent_spec is not None else None
        spec = importlib.machinery.PathFinder.find_spec(name, locations) if locations else None
    except Exception:
        return
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
        return  # the session has no ipykernel: nothing to look like
    spec.loader = importlib.util.LazyLoader(_OnParent(spec.loader, parent_name, child))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


class _OnParent(importlib.abc.Loader):
    """A module loader that also sets the loaded module on its package, as an import does."""

    def __init__(self, loader: importlib.abc.Loader, parent: str, child: str) -> None:
        self.loader, self.parent, self.child = loader, parent, child

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.loader.exec_module(module)
        parent = sys.modules.get(self.parent)
        if parent is not None:
            setattr(parent, self.child, module)


def _refuse(call: str, prompt: str) -> None:
    """Raise what ipykernel raises without stdin, from ipykernel's own frame when the session has it (a
    traceback's last frame is always shown: this one would be the shim's)."""
    __tracebackhide__ = True  # noqa: F841
    from IPython.core.error import StdinNotImplementedError

    kernel: Any = None
    try:
        from ipykernel.kernelbase import Kernel as kernel
    except Exception:
        pass
    if kernel is not None:
        stub = types.SimpleNamespace(_allow_stdin=False)
        (kernel.getpass if call == "getpass" else kernel.raw_input)(stub, prompt)
    raise StdinNotImplementedError(NO_STDIN.replace("raw_input", call))


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return None  # not written yet, or being written


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def install(shim: Any, allow_stdin: bool = False) -> dict[str, Any]:
    """Put the back channel into an installed rich shim (`shim.back`); the kernel reads the answer."""
    channel = BackChannel(shim, allow_stdin)
    channel.install()
    shim.back = channel
    return {"comms": channel.comms}
