"""Every worker's output cap, fed the same stream in many chunkings: the kept head is the stream's
first whole lines, the tail its last, and the marker counts what fell between.

A stream reaches a worker in pieces that the writer and the pipe choose (print() writes the text and
its newline apart; a pipe read returns whatever is buffered), so the cut must not depend on them.
"""
from __future__ import annotations

import importlib.util
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

WORKERS = Path(__file__).resolve().parent.parent / "remote_kernel" / "pool" / "workers"
NODE = shutil.which("node")
LIMIT = 4000
MARKER = re.compile(r"(.*?)\[output truncated: (\d+) bytes left out here \(the first (\d+) and the last (\d+) "
                    r"are shown\)\. [^\n]*\]\n(.*)", re.S)


def numbered_lines(count: int, first_line: str = "") -> bytes:
    """`first_line`, then the numbers 1 to `count`, a line each (the first line moves where the half falls)."""
    return (first_line + "\n" + "".join(f"{i}\n" for i in range(1, count + 1))).encode()


def filled_mid_line(whole: bytes) -> bool:
    """Whether the head's half of the cap ends inside a line of `whole`."""
    return whole[LIMIT // 2 - 1:LIMIT // 2 + 1].isdigit()


def chunkings(data: bytes, seed: int) -> list[list[bytes]]:
    """The same bytes cut at random places, at every line end and one byte at a time around the half."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 60))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    by_line = [line + b"\n" for line in data.rstrip(b"\n").split(b"\n")]
    half = LIMIT // 2
    bytewise = [data[:half - 8], *[data[i:i + 1] for i in range(half - 8, half + 8)], data[half + 8:]]
    return [pieces, by_line, bytewise]


def python_head_tail(module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, WORKERS / f"{module_name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda: module.HeadTail(LIMIT, "Get all of it.")


def node_capture(pieces: list[bytes]) -> str:
    """The Node worker's StreamCapture fed `pieces`, through a copy of its class run in plain Node."""
    source = (WORKERS / "node_worker.js").read_text()
    start = source.index("class StreamCapture")
    end = source.index("function chunkToText")
    script = (f"const WHOLE_OUTPUT = 'Get all of it.';\n{source[start:end]}\n"
              f"const capture = new StreamCapture({LIMIT});\n"
              "for (const piece of JSON.parse(require('fs').readFileSync(0, 'utf8'))) capture.write(piece);\n"
              "process.stdout.write(capture.text());\n")
    return subprocess.run([NODE, "-e", script], input=json.dumps([p.decode() for p in pieces]),
                          capture_output=True, text=True, check=True).stdout


def kept_by(worker: str, pieces: list[bytes]) -> str:
    if worker == "node":
        if NODE is None:
            pytest.skip("Node.js is not installed")
        return node_capture(pieces)
    kept = python_head_tail(worker)()
    for piece in pieces:
        kept.add(piece)
    return kept.text()


def assert_head_and_tail_of(whole: bytes, text: str) -> None:
    found = MARKER.fullmatch(text)
    assert found, text[:200]
    head, left_out, first, last, tail = found.groups()
    assert whole.decode().startswith(head) and head.endswith("\n"), head[-40:]
    assert whole.decode().endswith(tail) and tail.endswith(whole.decode().splitlines()[-1] + "\n")
    assert (int(first), int(last)) == (len(head.encode()), len(tail.encode()))
    assert int(left_out) + int(first) + int(last) == len(whole)
    assert len(head.encode()) + len(tail.encode()) <= LIMIT
    assert min(int(first), int(last)) >= LIMIT // 2 - LIMIT // 16  # about halves: a head may end its line


@pytest.mark.parametrize("worker", ["python_worker", "shell_worker", "node"])
@pytest.mark.parametrize("seed", range(5))
def test_the_cut_falls_at_line_ends_however_the_stream_is_chunked(worker, seed):
    whole = numbered_lines(3000, first_line="#" * seed)
    for pieces in chunkings(whole, seed):
        assert b"".join(pieces) == whole
        assert_head_and_tail_of(whole, kept_by(worker, pieces))


@pytest.mark.parametrize("worker", ["python_worker", "shell_worker", "node"])
def test_a_head_that_fills_mid_line_takes_the_rest_of_that_line(worker):
    whole = next(w for w in (numbered_lines(3000, "#" * n) for n in range(8)) if filled_mid_line(w))
    half = LIMIT // 2
    # the first piece fills the head exactly, ending inside a line; the next piece ends that line
    for pieces in ([whole[:half], whole[half:]], [whole[:half], whole[half:half + 1], whole[half + 1:]]):
        text = kept_by(worker, pieces)
        assert_head_and_tail_of(whole, text)
        assert len(MARKER.fullmatch(text)[1].encode()) == whole.index(b"\n", half) + 1


@pytest.mark.parametrize("worker", ["python_worker", "shell_worker", "node"])
def test_a_line_longer_than_a_sixteenth_of_the_cap_is_cut_by_characters(worker):
    whole = ("é" * LIMIT + "\nend\n").encode()
    text = kept_by(worker, [whole])
    head, left_out, first, last, tail = MARKER.fullmatch(text).groups()
    assert head == "é" * (LIMIT // 2 // 2) + "\n"  # half the cap in bytes (two a character), then a line end
    assert tail.endswith("é\nend\n") and set(tail) <= {"é", "\n", "e", "n", "d"}
    assert int(left_out) + int(first) + int(last) == len(whole)
    # written in pieces, the head waits a sixteenth of the cap for the line's end, then gives up on it
    text = kept_by(worker, [whole[i:i + 98] for i in range(0, len(whole), 98)])
    head, left_out, first, last, tail = MARKER.fullmatch(text).groups()
    assert set(head) == {"é", "\n"} and head.endswith("é\n")
    assert LIMIT // 2 <= int(first) <= LIMIT // 2 + LIMIT // 16 and int(first) + int(last) <= LIMIT
    assert int(left_out) + int(first) + int(last) == len(whole) and tail.endswith("é\nend\n")


@pytest.mark.parametrize("worker", ["python_worker", "shell_worker", "node"])
def test_up_to_the_cap_nothing_is_cut(worker):
    whole = numbered_lines(3000)[:LIMIT]
    assert kept_by(worker, [whole[:1000], whole[1000:]]) == whole.decode()
