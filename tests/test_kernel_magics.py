"""The kernel magics, through jupyter_client, against a real local pool."""
from __future__ import annotations

import hashlib
import os
import uuid

import pytest
from kernel_support import errors_of, kernel, pool_env, result_of, run, text_of


@pytest.fixture(scope="module")
def session(pool):
    """One kernel on the test pool for the module, with a known identifier."""
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier)) as (km, kc):
        reply, _ = run(kc, "pass")
        assert reply["status"] == "ok", reply
        yield kc, identifier


def one_error(reply: dict, outputs: list[dict], ename: str) -> dict:
    assert reply["status"] == "error" and reply["ename"] == ename, reply
    errors = errors_of(outputs)
    assert len(errors) == 1 and errors[0]["ename"] == ename
    return errors[0]


def test_upload_and_download_50_mb_round_trip_keeps_every_byte(session, tmp_path):
    kc, _ = session
    source, target = tmp_path / "big.bin", tmp_path / "back.bin"
    with open(source, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
    reply, outputs = run(kc, f"%upload {source} big.bin")
    assert reply["status"] == "ok", reply
    kinds = [m["msg_type"] for m in outputs]
    assert kinds[0] == "display_data" and "update_display_data" in kinds
    ids = {m["content"]["transient"]["display_id"] for m in outputs if "display" in m["msg_type"]}
    assert len(ids) == 1
    assert "100%" in [m for m in outputs if m["msg_type"] == "update_display_data"][-1]["content"]["data"]["text/plain"]
    assert "Uploaded" in text_of(outputs, "stdout") and "50.0 MiB" in text_of(outputs, "stdout")

    reply, outputs = run(kc, "import os; os.path.getsize('/mnt/data/big.bin')")
    assert result_of(outputs) == str(50 << 20)

    reply, outputs = run(kc, f"%download big.bin {target}")
    assert reply["status"] == "ok", reply
    assert "Downloaded" in text_of(outputs, "stdout")
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(target) == digest(source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "big.bin"]  # no partial file left


def test_files_lists_name_size_and_modified(session):
    kc, _ = session
    run(kc, "open('/mnt/data/listed.txt', 'w').write('x' * 2048)")
    reply, outputs = run(kc, "%files")
    assert reply["status"] == "ok"
    table = [m for m in outputs if m["msg_type"] == "display_data"][0]["content"]["data"]
    header, _, *rows = table["text/plain"].splitlines()
    assert header.split() == ["name", "size", "modified"]
    listed = [row for row in rows if row.startswith("listed.txt")]
    assert listed and "2.0 KiB" in listed[0] and "<table>" in table["text/html"]


def test_rm_deletes_a_remote_file(session):
    kc, _ = session
    run(kc, "open('/mnt/data/gone.txt', 'w').write('bye')")
    reply, outputs = run(kc, "%rm gone.txt")
    assert reply["status"] == "ok" and "Deleted /mnt/data/gone.txt" in text_of(outputs)
    _, outputs = run(kc, "import os; os.path.exists('/mnt/data/gone.txt')")
    assert result_of(outputs) == "False"


@pytest.mark.parametrize("code, ename, says", [
    ("%upload", "UsageError", "usage: %upload LOCAL [REMOTE]"),
    ("%upload a b c", "UsageError", "usage: %upload"),
    ("%upload 'unbalanced", "UsageError", "usage: %upload"),
    ("%upload /no/such/file.csv", "FileNotFoundError", "no such local file: /no/such/file.csv"),
    ("%download", "UsageError", "usage: %download REMOTE [LOCAL]"),
    ("%download no-such-file.bin", "RemoteFileNotFound", "no such remote file: no-such-file.bin"),
    ("%download x.bin /no/such/folder/x.bin", "FileNotFoundError", "no such local folder"),
    ("%files a b", "UsageError", "usage: %files"),
    ("%rm", "UsageError", "usage: %rm REMOTE"),
    ("%rm no-such-file.bin", "RemoteFileNotFound", "no such remote file: no-such-file.bin"),
    ("%session bogus", "UsageError", "usage: %session"),
    ("%lsmagic now", "UsageError", "usage: %lsmagic"),
])
def test_wrong_arguments_give_one_short_error(session, code, ename, says, tmp_path):
    kc, _ = session
    before = set(os.listdir(tmp_path))
    reply, outputs = run(kc, code)
    error = one_error(reply, outputs, ename)
    assert says in error["evalue"]
    assert set(os.listdir(tmp_path)) == before


def test_failed_download_leaves_nothing_behind(session, tmp_path):
    kc, _ = session
    reply, outputs = run(kc, f"%download missing.bin {tmp_path / 'missing.bin'}")
    one_error(reply, outputs, "RemoteFileNotFound")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_magic_stops_the_cell_before_its_code(session):
    kc, _ = session
    reply, _ = run(kc, "%rm no-such-file.bin\nreached = True")
    assert reply["status"] == "error"
    _, outputs = run(kc, "'reached' in dir()")
    assert result_of(outputs) == "False"


def test_magics_then_code_in_one_cell(session, tmp_path):
    kc, _ = session
    local = tmp_path / "numbers.txt"
    local.write_text("1 2 3\n")
    reply, outputs = run(kc, f"%upload {local}\nsum(map(int, open('/mnt/data/numbers.txt').read().split()))")
    assert reply["status"] == "ok" and result_of(outputs) == "6"


def test_session_shows_the_connection_but_never_the_token(session, pool):
    kc, identifier = session
    reply, outputs = run(kc, "%session")
    text = text_of(outputs, "stdout")
    assert reply["status"] == "ok"
    for expected in (pool.endpoint, "2025-10-02-preview", identifier, "token", "pool type"):
        assert expected in text
    assert pool.token not in text


def test_session_new_starts_an_empty_session(pool):
    identifier = str(uuid.uuid4())
    with kernel(pool_env(pool, identifier)) as (km, kc):
        run(kc, "kept = 1")
        reply, outputs = run(kc, "%session new")
        assert reply["status"] == "ok" and "Deleted session" in text_of(outputs)
        reply, outputs = run(kc, "kept")
        assert reply["ename"] == "NameError"
        assert "lost" not in text_of(outputs)  # the user asked for it: no lost-state warning


def test_help_and_lsmagic(session):
    kc, _ = session
    reply, outputs = run(kc, "%lsmagic")
    text = text_of(outputs, "stdout")
    assert all(name in text for name in ("%upload", "%download", "%files", "%rm", "%session", "%%long"))
    kc.complete("%lo", 3)  # the kernel's cell magic completes with both signs
    assert "%%long" in kc.get_shell_msg(timeout=30)["content"]["matches"]
    kc.inspect("%%long", 6)
    assert "%%long" in kc.get_shell_msg(timeout=30)["content"]["data"]["text/plain"]
    reply, outputs = run(kc, "%long")  # only the cell magic is the kernel's: IPython answers a line magic
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    reply, _ = run(kc, "%download?")
    assert reply["payload"][0]["source"] == "page"
    assert "%download REMOTE [LOCAL]" in reply["payload"][0]["data"]["text/plain"]
    reply, outputs = run(kc, "%files -h")
    assert "%files [PATH]" in text_of(outputs)


def test_remote_magics_and_shell_lines_are_sent_through(session):
    kc, _ = session
    reply, outputs = run(kc, "%%time\nsum(range(10))")
    assert reply["status"] == "ok" and "Wall time" in text_of(outputs, "stdout") and result_of(outputs) == "45"
