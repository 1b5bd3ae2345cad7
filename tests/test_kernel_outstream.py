"""The kernel process's sys.stdout/stderr (kernel/outstream.py): what is written still reaches IOPub by the
time flush returns, as with ipykernel's own OutStream, and a flush with nothing written costs no trip to
the IOPub thread."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from ipykernel import iostream
from jupyter_client.session import Session
from traitlets.utils.importstring import import_item

from remote_kernel.kernel import __main__ as kernel_main
from remote_kernel.kernel.outstream import OutStream


@pytest.fixture
def iopub() -> Iterator[tuple[iostream.IOPubThread, zmq.Socket[bytes], Session]]:
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = context.socket(zmq.SUB)
    sub.subscribe(b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    thread = iostream.IOPubThread(pub)
    thread.start()
    time.sleep(0.2)  # the subscription reaches the PUB socket
    try:
        yield thread, sub, Session(key=b"")
    finally:
        thread.stop()
        thread.close()
        sub.close(linger=0)
        context.term()


def received(sub: zmq.Socket[bytes], session: Session) -> list[tuple[str, Any]]:
    messages = []
    while sub.poll(300):
        _, frames = session.feed_identities(sub.recv_multipart())
        msg = session.deserialize(frames)
        messages.append((msg["msg_type"], msg["content"]))
    return messages


@pytest.mark.parametrize("stream_class", [iostream.OutStream, OutStream], ids=["ipykernel", "remote-python"])
def test_what_is_written_is_published_by_the_time_flush_returns(iopub, stream_class):
    thread, sub, session = iopub
    stream = stream_class(session, thread, "stdout", watchfd=False)
    stream.flush_interval = 60  # only the flush sends it
    stream.write("one line\n")
    stream.flush()
    assert received(sub, session) == [("stream", {"name": "stdout", "text": "one line\n"})]
    stream.close()


def test_a_flush_with_nothing_written_does_not_wait_for_the_iopub_thread(iopub, monkeypatch):
    thread, sub, session = iopub
    stream = OutStream(session, thread, "stderr", watchfd=False)
    stream.flush_interval = 60
    stream.write("before\n")
    stream.flush()
    scheduled: list[object] = []
    original = thread.schedule
    monkeypatch.setattr(thread, "schedule", lambda f: (scheduled.append(f), original(f)))
    for _ in range(5):
        stream.flush()
    assert scheduled == []  # ipykernel's own OutStream schedules two calls per flush
    stream.write("after\n")
    stream.flush()
    assert scheduled  # a write makes the next flush a real one
    assert received(sub, session) == [("stream", {"name": "stderr", "text": "before\n"}),
                                      ("stream", {"name": "stderr", "text": "after\n"})]
    stream.close()


def test_the_kernel_app_is_given_this_stream_class():
    assert import_item(kernel_main.OUTSTREAM) is OutStream
