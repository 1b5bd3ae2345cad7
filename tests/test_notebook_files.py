"""What REMOTE_KERNEL_FILES=notebook sends (issue 25): the folder's files, without what stays on the user's side."""
from __future__ import annotations

from remote_kernel.kernel import notebook_files
from remote_kernel.kernel.notebook_files import NotebookFiles, scan


def test_hidden_folders_environments_and_excluded_patterns_stay_here(tmp_path):
    for rel in ("data/a.csv", "notes.txt", ".env", ".git/config", ".ipynb_checkpoints/x-checkpoint.ipynb",
                "venv/pyvenv.cfg", "venv/lib/site.py", "node_modules/m/index.js", "pkg/__pycache__/m.pyc",
                "pkg/__init__.py", "raw/big.bin", "out.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "outside").symlink_to("/etc/hostname")
    found = scan(tmp_path, ("raw", "*.parquet"))
    assert found.problem is None
    assert sorted(found.files) == ["data/a.csv", "notes.txt", "pkg/__init__.py"]


def test_past_a_limit_nothing_is_sent_and_the_note_says_which(tmp_path, monkeypatch):
    monkeypatch.setattr(notebook_files, "MAX_FILES", 3)
    for n in range(5):
        (tmp_path / f"f{n}.txt").write_text("x")
    found = scan(tmp_path)
    assert found.problem is not None and "more than 3 files" in found.problem
    assert "REMOTE_KERNEL_FILES_EXCLUDE" in found.problem


def test_only_what_changed_is_sent_again(tmp_path):
    import asyncio
    import os

    class Client:
        def __init__(self) -> None:
            self.sent: list[str] = []
            self.deleted: list[str] = []

        async def upload(self, path, name):
            self.sent.append(name)

        async def delete_file(self, name):
            self.deleted.append(name)

    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "b.txt").write_text("two")
    files, client = NotebookFiles("notebook", tmp_path), Client()
    assert asyncio.run(files.sync(client)) is None and sorted(client.sent) == ["a.txt", "b.txt"]
    client.sent = []
    asyncio.run(files.sync(client))
    assert client.sent == []  # nothing changed
    os.utime(tmp_path / "a.txt", ns=(1, 1))  # touched, not changed: hashed, not sent
    (tmp_path / "b.txt").write_text("three")
    asyncio.run(files.sync(client))
    assert client.sent == ["b.txt"]
    (tmp_path / "a.txt").unlink()
    asyncio.run(files.sync(client))
    assert client.deleted == ["a.txt"]
    files.forget()  # a new session: everything again
    client.sent = []
    asyncio.run(files.sync(client))
    assert client.sent == ["b.txt"]
