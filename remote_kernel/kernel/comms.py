"""The kernel's side of the back channel: comms both ways and stdin, for sessions with the shim.

The session's side is `back_channel_shim.py`. What the session sends arrives as render events
(`render.Event`, cut out of the cell's stdout like any output, live or in the answer):

- `comm` (comm_open / comm_msg / comm_close made by the session's comm manager): checked (a JSON
  object with a comm id, a known message type, within MAX_MESSAGE bytes, within the rate), screened
  (`screen_state`: widget values that a front end renders as HTML, and the Output widget's outputs,
  pass `trust` as outputs do), then published on IOPub with its binary buffers. Only the comm targets
  of ipywidgets (TARGETS) are forwarded unless REMOTE_KERNEL_COMM_TARGETS names more (or is `*`).
- `input` (input(), getpass()): the kernel first writes `{"ack": true}` into the request's file
  (the session then knows that files reach it while the cell runs), asks the front end on the
  stdin channel (`input_request`, as ipykernel's `_input_request`), and writes the reply's value.

The front end's comm_open / comm_msg / comm_close reach the session as a short execution that
carries them (`deliver`), run between cells: a comm message that arrives while a cell runs waits for
its end (ipykernel 7 would handle it at once), and those that waited go in one execution. Its output (an observer's print, an `interact` redraw) is published with the
comm message as its parent, so the front end shows it under the widget's cell. A malformed or
oversized message from either side is lost with a log line (or one note), never the kernel.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import io
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from remote_kernel.kernel import trust
from remote_kernel.kernel.cell import CellRun
from remote_kernel.kernel.helper import HELPER_MARK
from remote_kernel.kernel.render import Event

if TYPE_CHECKING:
    from remote_kernel.sessions.client import SessionsClient

log = logging.getLogger(__name__)

#: ipywidgets' comm targets (models, the control channel of ipywidgets 8, the version check of 7)
TARGETS = frozenset({"jupyter.widget", "jupyter.widget.control", "jupyter.widget.version"})
TARGETS_SETTING = "REMOTE_KERNEL_COMM_TARGETS"  # more targets to forward, comma-separated, or `*` for any
PARENT = "remote-kernel-parent-request"  # back_channel_shim.PARENT: stands for the request being answered
MAX_MESSAGE = 16 << 20  # bytes of one comm message (its JSON and buffers), either way
RATE = 200.0  # comm messages a second a session may send on average ...
#: ... and at once; past it messages are dropped (one note a cell). ZMQ's IOPub socket drops messages past
#: 1000 waiting for a subscriber, the cell's idle status among them: bursts stay well below that
BURST = 500
ACK_DEADLINE = 10.0  # seconds to write an input request's acknowledgement
ANSWER_DEADLINE = 30.0  # seconds to write the user's answer
_TOKEN = re.compile(r"[0-9a-f]{16}")
_KINDS = ("comm_open", "comm_msg", "comm_close")
#: whether the shell request being handled was dispatched beside a running one (the kernel's dispatch_shell sets it)
CONCURRENT: contextvars.ContextVar[bool] = contextvars.ContextVar("remote_kernel_concurrent", default=False)
NEXT = "remote-kernel-next"  # back_channel_shim.NEXT: a batch's next message begins (its outputs follow)
#: widget models whose `value` a front end renders as HTML
_HTML_MODELS = frozenset({"HTMLModel", "HTMLMathModel", "LabelModel"})
_HTML_KEYS = ("description", "tooltip", "placeholder")
_MARKUP = re.compile(r"<[A-Za-z!/?]|&#?\w+;")
_DELIVER = "{mark}\n__import__('sys').modules['_remote_kernel_rich'].active.back.deliver({payload!r})\n"


def allowed_targets(setting: str | None) -> frozenset[str] | None:
    """The targets forwarded: ipywidgets' and those the setting names; None: any (`*`)."""
    names = {name.strip() for name in (setting or "").split(",") if name.strip()}
    return None if "*" in names else TARGETS | names


class CommBridge:
    """The comms of the kernel's current session, and its input requests."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.targets = allowed_targets(os.environ.get(TARGETS_SETTING))
        self.comms: dict[str, tuple[str, str]] = {}  # comm id → (target, widget model name)
        self.nonce: str | None = None  # the shim install these comms belong to
        self.tokens = float(BURST)
        self.last = time.monotonic()
        self.dropped = 0  # messages dropped in the current cell
        self.waiting: set[threading.Event] = set()  # input requests of the running cell
        self.tasks: set[asyncio.Task[None]] = set()
        self.delivering = asyncio.Lock()  # held by a front end's message on its way to the session
        #: (request, message, whether this kernel publishes its status) waiting for the session
        self.queue: list[tuple[dict[str, Any], dict[str, Any], bool]] = []
        self.batch: list[dict[str, Any]] = []  # the requests of the delivery under way (several: a batch)
        self.current: dict[str, Any] = {}  # ... the parent of its outputs, switched in place per message

    def same_session(self) -> None:
        """Forget the comms of an earlier session (the shim's nonce changes with each install)."""
        nonce = self.kernel.rich.active_nonce
        if nonce != self.nonce:
            self.comms.clear()
            self.nonce = nonce

    # --- session → front end ----------------------------------------------------------------------

    def on_event(self, client: SessionsClient, event: Event) -> None:
        """A back channel event of the running execution (render's `on_event`)."""
        if event.type == "comm" and event.body.get("msg_type") == NEXT:
            self.next_request(event.body.get("index"))
            return
        if event.type == "input":
            task = asyncio.ensure_future(self.answer_input(client, event.body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        try:
            self.publish_comm(event)
        except Exception as exc:  # a malformed message is lost, never the kernel
            log.warning("a comm message from the session was dropped: %r", exc)

    def publish_comm(self, event: Event) -> None:
        self.same_session()
        body = event.body
        kind, content, metadata = body.get("msg_type"), body.get("content"), body.get("metadata") or {}
        if kind not in _KINDS or not isinstance(content, dict) or not isinstance(metadata, dict):
            raise ValueError("not a comm message")
        comm_id = content.get("comm_id")
        if not isinstance(comm_id, str) or not comm_id or len(comm_id) > 200:
            raise ValueError("a comm message without a comm id")
        buffers = [base64.b64decode(b, validate=True) for b in body.get("buffers") or []]
        if event.size + sum(len(b) for b in buffers) > MAX_MESSAGE:
            raise ValueError(f"a comm message over {MAX_MESSAGE >> 20} MiB")
        if not self._within_rate():
            return
        if kind == "comm_open":
            target = content.get("target_name")
            if not isinstance(target, str) or not (self.targets is None or target in self.targets):
                self._note(f"a comm to the target {str(target)[:80]!r} was not opened: only ipywidgets' comms are "
                           f"forwarded (set {TARGETS_SETTING} to the targets to allow, and restart the kernel)")
                return
            state = (content.get("data") or {}).get("state") if isinstance(content.get("data"), dict) else None
            model = state.get("_model_name") if isinstance(state, dict) else None
            self.comms[comm_id] = (target, model if isinstance(model, str) else "")
        elif comm_id not in self.comms:
            return  # a comm that was never opened (or not forwarded)
        model = self.comms[comm_id][1]
        if kind == "comm_close":
            self.comms.pop(comm_id, None)
        content = {**content, "data": self.screen_data(model, content.get("data"))}
        self.kernel.send_response(self.kernel.iopub_socket, kind, content, buffers=buffers or None,
                                  metadata=metadata)

    def _within_rate(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(BURST), self.tokens + (now - self.last) * RATE)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.dropped += 1
        if self.dropped == 1:
            self._note(f"the session sent comm messages faster than {RATE:g} a second: some were dropped, and "
                       "widgets may show stale values")
        return False

    def _note(self, text: str) -> None:
        self.kernel.send_response(self.kernel.iopub_socket, "stream",
                                  {"name": "stderr", "text": f"[remote_kernel: {text}]\n"})

    def screen_data(self, model: str, data: Any) -> Any:
        """A comm message's data with the parent placeholder replaced and active content screened (also the
        states of every widget in the control comm's `update_states`, which a reloaded page renders)."""
        if isinstance(data, dict) and isinstance(data.get("states"), dict):
            states = {}
            for model_id, entry in data["states"].items():
                if not isinstance(entry, dict):
                    continue  # not a widget's state: dropped, never passed unscreened
                name = entry.get("model_name")
                states[model_id] = {**entry, **self.screen_data(name if isinstance(name, str) else "",
                                                                {"state": entry.get("state")})}
            data = {**data, "states": states}
        if not isinstance(data, dict) or not isinstance(data.get("state"), dict):
            return data
        state = dict(data["state"])
        if state.get("msg_id") == PARENT:  # the Output widget captures the request being answered
            parent = self.kernel.get_parent("shell") or {}
            state["msg_id"] = (parent.get("header") or {}).get("msg_id", "")
        guard = self.kernel.guard
        if not guard.allow_active:
            for key in _HTML_KEYS + (("value",) if model in _HTML_MODELS else ()):
                if isinstance(state.get(key), str):
                    state[key] = self._clean_html(state[key])
            if isinstance(state.get("outputs"), list):
                state["outputs"] = [self._clean_output(item) for item in state["outputs"]]
        return {**data, "state": state}

    def _clean_html(self, text: str) -> str:
        if not _MARKUP.search(text):
            return text  # plain text: nothing a front end could run
        screened, notice = self.kernel.guard.screen("display_data", {"data": {"text/html": text}, "metadata": {},
                                                                     "transient": {}})
        if notice:
            self._note(notice.strip().strip("[]"))
        return str(((screened or {}).get("data") or {}).get("text/html", ""))

    def _clean_output(self, item: Any) -> Any:
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            return item
        kind = item.get("output_type", "display_data")
        screened, notice = self.kernel.guard.screen(kind if kind in trust.BUNDLE_MESSAGES else "display_data",
                                                    {"data": item["data"], "metadata": {}, "transient": {}})
        if notice:
            self._note(notice.strip().strip("[]"))
        return {**item, "data": (screened or {}).get("data") or {"text/plain": ""}}

    # --- front end → session ----------------------------------------------------------------------

    def check_incoming(self, msg_type: str, content: Any, metadata: Any,
                       buffers: list[bytes]) -> dict[str, Any] | str:
        """The message to deliver, or why it is refused (target, size, JSON)."""
        self.same_session()
        if not isinstance(content, dict) or not isinstance(content.get("comm_id"), str):
            return "not a comm message (no comm_id)"
        metadata = metadata if isinstance(metadata, dict) else {}
        comm_id = content["comm_id"]
        try:
            size = len(json.dumps(content)) + len(json.dumps(metadata)) + sum(len(b) for b in buffers)
        except (TypeError, ValueError):
            return "content that is not JSON"
        if size > MAX_MESSAGE:
            return f"a message over {MAX_MESSAGE >> 20} MiB"
        if msg_type == "comm_open":
            target = content.get("target_name")
            if not isinstance(target, str) or not (self.targets is None or target in self.targets):
                return f"the target {str(target)[:80]!r} is not forwarded (set {TARGETS_SETTING})"
            self.comms[comm_id] = (target, "")
        elif comm_id not in self.comms:
            return "a comm the session did not open"
        elif msg_type == "comm_close":
            self.comms.pop(comm_id, None)
        return {"msg_type": msg_type, "content": content, "metadata": metadata,
                "buffers": [base64.b64encode(bytes(b)).decode("ascii") for b in buffers]}

    async def deliver(self, parent: dict[str, Any]) -> None:
        """A front end's comm message (the kernel's current request), delivered to the session's comm manager
        as a short execution whose output is this message's (an observer's print shows under the widget's
        cell). Refused (see `check_incoming`): logged, and a comm_open is answered with its comm_close.

        Dispatched beside a running request (a cell, another delivery; `CONCURRENT`), ipykernel 7 publishes
        no busy/idle for it, and makes the running request the parent again as soon as this returns: it
        returns at once, and the delivery follows in a task that publishes this message's busy and idle
        (ipywidgets' front end sends a widget's next change only after that idle)."""
        status = CONCURRENT.get()
        if status and asyncio.current_task() not in self.tasks:
            task = asyncio.ensure_future(self.deliver(parent))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        kernel = self.kernel
        msg_type = parent["header"]["msg_type"]
        content = parent.get("content")
        if not (kernel.rich.installed and kernel.rich.comms):
            with self._status(parent if status else None):
                self.answer_without_comms(msg_type, content)
            return
        checked = self.check_incoming(msg_type, content, parent.get("metadata"),
                                      [bytes(b) for b in parent.get("buffers") or []])
        if isinstance(checked, str):
            log.warning("a %s from the front end was not delivered: %s", msg_type, checked)
            with self._status(parent if status else None):
                if msg_type == "comm_open" and isinstance(content, dict) and isinstance(content.get("comm_id"), str):
                    kernel.send_response(kernel.iopub_socket, "comm_close", {"comm_id": content["comm_id"],
                                                                             "data": {}})
            return
        self.queue.append((parent, checked, status))
        await self.between_cells()
        batch, self.queue = self.queue, []
        try:
            if batch:  # empty: an earlier delivery took this message along
                with contextlib.ExitStack() as statuses:
                    for request, _, own_status in batch:
                        statuses.enter_context(self._status(request if own_status else None))
                    await self._run([(request, message) for request, message, _ in batch])
        finally:
            self.delivering.release()
            self.cell_ended()

    @contextlib.contextmanager
    def _status(self, request: dict[str, Any] | None) -> Iterator[None]:
        """`request`'s busy, then (at the end) its idle, as ipykernel publishes them around a handler; nothing
        for None (ipykernel publishes them)."""
        if request is not None:
            self.kernel._publish_status("busy", "shell", request)
        try:
            yield
        finally:
            if request is not None:
                self.kernel._publish_status("idle", "shell", request)

    async def _run(self, batch: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """One short execution for the queued messages (those that came while a cell ran go together); the
        outputs of each have its request as their parent, switched by the session's NEXT events."""
        kernel = self.kernel
        kernel._publish_silently = False  # its output is shown, whatever the last cell asked
        restore = None
        if len(batch) > 1:
            ident = kernel._get_shell_context_var(kernel._shell_parent_ident)
            restore = (ident, kernel.get_parent("shell"))
            self.batch, self.current = [request for request, _ in batch], dict(batch[0][0])
            kernel.set_parent(ident, self.current)
        try:
            client = await kernel.session_client()
            render = kernel._render(client, kernel.execution_count - 1)
            execution = await CellRun(kernel, client, render, self.delivery_code([m for _, m in batch])).run()
            kernel.remote.continuity.touched()
            await render.finish(execution)
            kernel.rich.after_cell(client)
        except Exception as exc:  # the messages are lost, the kernel is not
            log.warning("%d comm message(s) could not reach the session: %r", len(batch), exc)
        finally:
            self.batch = []
            if restore is not None:
                kernel.set_parent(*restore)

    def next_request(self, index: Any) -> None:
        """The session goes on to the batch's message `index`: its outputs have that request as their parent."""
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(self.batch):
            self.current.clear()
            self.current.update(self.batch[index])

    def answer_without_comms(self, msg_type: str, content: Any) -> None:
        """A front end's comm message before the session has comms (no cell has run yet, or the session was
        lost), answered as the comm package's manager answers it in a fresh ipykernel, where nothing has
        registered a target yet: a comm_open is closed, any other message finds no comm, and each says so
        on stderr (ipykernel's log lines). A page opened before the first cell opens ipywidgets' control
        comm; its widget manager then asks for the widgets one by one (none yet)."""
        comm_id = content.get("comm_id") if isinstance(content, dict) else None
        if not isinstance(comm_id, str):
            log.warning("a %s from the front end without a comm_id was ignored", msg_type)
            return
        if msg_type == "comm_open":
            target = content.get("target_name")
            self._stderr(f"No such comm target registered: {target}\n")
            self.kernel.send_response(self.kernel.iopub_socket, "comm_close", {"data": {}, "comm_id": comm_id})
        else:
            self._stderr(f"No such comm: {comm_id}\n")

    def _stderr(self, text: str) -> None:
        self.kernel.send_response(self.kernel.iopub_socket, "stream", {"name": "stderr", "text": text})

    async def between_cells(self) -> None:
        """Wait for the running cell to end, then hold `delivering` (which a cell waits for to start).

        ipykernel 7 dispatches a comm message at once, even while a cell runs (for async cells that await
        a widget); here the session runs one execution at a time, so a delivery waits for the cell's end:
        run beside it, it would end the cell's pending `input()` and take over its outputs."""
        while True:
            while self.kernel._cell is not None:
                await asyncio.wait({self.kernel._cell[1]})
            await self.delivering.acquire()
            if self.kernel._cell is None:
                return
            self.delivering.release()

    async def idle(self) -> None:
        """Wait for the deliveries under way (a cell starts after them)."""
        async with self.delivering:
            pass

    @staticmethod
    def delivery_code(messages: list[dict[str, Any]]) -> str:
        """The short execution that hands `messages` to the session's comm manager (kept out of the history)."""
        return _DELIVER.format(mark=f"# {HELPER_MARK.strip()}", payload=json.dumps(messages))

    def comm_info(self, target_name: str | None) -> dict[str, dict[str, str]]:
        self.same_session()
        return {comm_id: {"target_name": target} for comm_id, (target, _) in self.comms.items()
                if target_name is None or target == target_name}

    # --- stdin --------------------------------------------------------------------------------------

    async def answer_input(self, client: SessionsClient, body: dict[str, Any]) -> None:
        """Ask the front end for a line and write it where the session waits for it."""
        token, rich = body.get("token"), self.kernel.rich
        if not isinstance(token, str) or not _TOKEN.fullmatch(token) or not rich.nonce:
            log.warning("an input request without a usable token was ignored")
            return
        name = f"{rich.folder}/{rich.nonce}-in-{token}.json"
        try:  # a pool with the live extension takes files while a cell runs: the session needs no ack
            if not client.live:
                await asyncio.wait_for(client.upload(io.BytesIO(b'{"ack": true}'), name), ACK_DEADLINE)
        except Exception as exc:  # the session tells the user why after its own wait
            log.info("input request not acknowledged (no file upload while a cell runs?): %r", exc)
            return
        stop = threading.Event()
        self.waiting.add(stop)
        try:
            value = await asyncio.to_thread(self.kernel.ask_stdin, str(body.get("prompt", ""))[:10000],
                                            bool(body.get("password")), stop)
        finally:
            self.waiting.discard(stop)
        if value is None:  # interrupted, or the cell ended first: a session still waiting stops with KeyboardInterrupt
            try:
                await asyncio.wait_for(client.upload(io.BytesIO(b'{"interrupt": true}'), name), ACK_DEADLINE)
            except Exception as exc:
                log.debug("could not tell the session that its input was interrupted: %r", exc)
            return
        answer = json.dumps({"value": value}).encode()
        await asyncio.wait_for(client.upload(io.BytesIO(answer), name), ANSWER_DEADLINE)

    def interrupt_input(self) -> bool:
        """The user interrupted a cell: a pending input request ends (the session raises KeyboardInterrupt, as
        ipykernel's input() does). False when none is pending."""
        if not self.waiting:
            return False
        for stop in list(self.waiting):
            stop.set()
        return True

    def cell_ended(self) -> None:
        """The cell's execution ended: stop waiting for answers nobody reads, and its drop count starts anew."""
        for stop in list(self.waiting):
            stop.set()
        self.dropped = 0


def ask_stdin(kernel: Any, ident: Any, prompt: str, password: bool, stop: threading.Event) -> str | None:
    """ipykernel's `_input_request` (run in a thread): ask the front end for a line on the stdin channel;
    None when `stop` is set first (the cell ended, or was interrupted)."""
    import zmq

    parent = kernel.get_parent("shell")
    while True:  # stale replies go first, as ipykernel purges them
        try:
            kernel.stdin_socket.recv_multipart(zmq.NOBLOCK)
        except zmq.ZMQError:
            break
    kernel.session.send(kernel.stdin_socket, "input_request", {"prompt": prompt, "password": password}, parent,
                        ident=ident)
    while not stop.is_set():
        readable, _, failed = zmq.select([kernel.stdin_socket], [], [kernel.stdin_socket], 0.02)
        if readable or failed:
            try:
                _, reply = kernel.session.recv(kernel.stdin_socket)
            except Exception:
                log.warning("an input_reply could not be read", exc_info=True)
                continue
            if reply is not None:
                value = (reply.get("content") or {}).get("value", "")
                return value if isinstance(value, str) else str(value)
    return None
