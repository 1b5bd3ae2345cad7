"""`%download FOLDER/` from a pool that lies (issue 23, finding 2): a real kernel, a hostile pool on loopback.

The pool lists what the test scripts: `..`, names with '/', absolute paths, '.', empty names, NUL,
backslashes, names that differ only by case, a subfolder that a local symbolic link leads out of,
listings nested without end or too large. Whatever it lists, no file appears outside the folder the
user named (checked from its parent up, for a relative and an absolute target), nothing half-written
is left inside it, and the kernel reports an error rather than a download.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_pool import HostilePool
from fault_server import Exchange, Received
from kernel_support import embedded_env, kernel, run, text_of

Listing = dict[str, list[dict]]  # remote folder (relative to /mnt/data) → its entries


def file(name: str, size: int = 1) -> dict:
    return {"name": name, "type": "File", "sizeInBytes": size}


def folder(name: str) -> dict:
    return {"name": name, "type": "Directory", "sizeInBytes": 0}


class LyingPool:
    """Lists `listings[path]` for any folder path (or `endless` for every path), and serves b"x" for any file."""

    def __init__(self) -> None:
        self.listings: Listing = {}
        self.endless = False
        self.missing: set[str] = set()  # files answered 404
        self.pool = HostilePool({}, fallback=self.handle)

    async def handle(self, request: Received, exchange: Exchange) -> None:
        await exchange.read_body()
        if request.method == "GET" and request.path == "/files":
            where = request.query.get("path", "").strip("/")
            entries = [folder("a"), file("f.txt")] if self.endless else self.listings.get(where)
            if entries is None:
                await exchange.respond(404, json.dumps({"error": {"code": "FileNotFound", "message": where}}).encode(),
                                       {"Content-Type": "application/json"})
                return
            await exchange.respond(200, json.dumps({"value": entries}).encode(), {"Content-Type": "application/json"})
        elif request.method == "GET" and request.path.startswith("/files/") and request.path.endswith("/content"):
            name = "/".join(filter(None, [request.query.get("path", "").strip("/"),
                                          request.path[len("/files/"):-len("/content")]]))
            if name in self.missing:
                await exchange.respond(404, json.dumps({"error": {"code": "FileNotFound", "message": name}}).encode(),
                                       {"Content-Type": "application/json"})
                return
            await exchange.respond(200, b"x", {"Content-Type": "application/octet-stream"})
        else:
            await exchange.respond(404, b'{"error": {"code": "NotFound", "message": "not here"}}',
                                   {"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def lying(tmp_path_factory) -> Iterator[tuple[LyingPool, object, Path]]:
    """The lying pool, a kernel using it (started in a folder of its own), and that folder."""
    home = tmp_path_factory.mktemp("dl")
    work = home / "work"
    work.mkdir()
    fake = LyingPool()
    with fake.pool:
        env = {**embedded_env(), "POOL_MANAGEMENT_ENDPOINT": fake.pool.url, "REMOTE_KERNEL_TOKEN": "t",
               "REMOTE_KERNEL_RICH": "0", "REMOTE_KERNEL_IDENTIFIER": str(uuid.uuid4()),
               "REMOTE_KERNEL_DOWNLOAD_LIMIT": "1M"}
        try:
            with kernel(env, cwd=str(work)) as (_, kc):
                yield fake, kc, home
        finally:  # a kernel without the depth limit nests folders too deep for shutil.rmtree's recursion
            subprocess.run(["rm", "-rf", str(home)], check=False)


def every_file(root: Path) -> set[str]:
    found = set()
    for folder_path, folders, files in os.walk(root, followlinks=False):
        found.update(os.path.relpath(os.path.join(folder_path, f), root) for f in files + folders)
    return found


def target_of(home: Path, kind: str) -> tuple[str, Path]:
    """The LOCAL argument and the folder it names: relative to the kernel's folder, or absolute and deep."""
    name = f"dl-{uuid.uuid4().hex[:8]}"
    if kind == "relative":
        return name, home / "work" / name
    path = home / "abs" / "deep" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path), path


def outside_name(home: Path) -> str:
    return str(home / "outside" / "PWNED.txt")


LIES: dict[str, Listing] = {
    "a folder named ..": {"dl2": [folder(".."), file("ok.txt")], "dl2/..": [file("PWNED.txt")]},
    "a file named ../": {"dl2": [file("ok.txt"), file("../PWNED.txt")]},
    "twelve .. then .bashrc": {"dl2": [file("../" * 12 + ".bashrc")]},
    "an absolute path": {"dl2": [file("ok.txt"), file("{outside}")]},
    "a folder named .": {"dl2": [folder("."), file("ok.txt")], "dl2/.": [folder("."), file("ok.txt")]},
    "an empty name": {"dl2": [file("ok.txt"), file("")]},
    "a NUL": {"dl2": [file("ok.txt"), file("a\x00b.txt")]},
    "a backslash": {"dl2": [file("ok.txt"), file("..\\PWNED.txt")]},
    "a newline": {"dl2": [file("ok.txt"), file("a\nb.txt")]},
    "a subfolder with a slash": {"dl2": [folder("sub/../.."), file("ok.txt")], "dl2/sub/../..": [file("PWNED.txt")]},
    "names that differ only by case": {"dl2": [file("Report.txt"), file("report.txt")]},
    "a file and a folder of one name": {"dl2": [file("x"), folder("x")], "dl2/x": [file("y.txt")]},
    "a deep .. below": {"dl2": [folder("s")], "dl2/s": [folder("t")], "dl2/s/t": [file(".."), file("ok.txt")]},
}


@pytest.mark.parametrize("kind", ["relative", "absolute", "pattern", "flat pattern"])
@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_listing_writes_nothing_anywhere(lying, lie, kind):
    fake, kc, home = lying
    (home / "outside").mkdir(exist_ok=True)
    fake.listings = {where: [dict(e, name=e["name"].replace("{outside}", outside_name(home))) for e in entries]
                     for where, entries in LIES[lie].items()}
    local, target = target_of(home, "absolute" if kind == "absolute" else "relative")
    before = every_file(home)
    remote = {"pattern": "dl2/**/*.txt", "flat pattern": "dl2/*"}.get(kind, "dl2/")
    reply, outputs = run(kc, f"%download {remote} {local}")
    assert reply["status"] == "error", (lie, reply, text_of(outputs))
    assert "Downloaded" not in text_of(outputs) and "→" not in text_of(outputs)
    if kind == "flat pattern" and lie == "a deep .. below":  # 'dl2/*' reads dl2's own listing: no file, no lie
        assert reply["ename"] == "RemoteFileNotFound", reply
    else:
        assert reply["ename"] == "UnsafeName" and "nothing was downloaded" in reply["evalue"], reply
    assert every_file(home) == before, f"{lie}: {every_file(home) - before}"  # not outside, not inside
    assert not target.exists()
    assert not (home / "outside" / "PWNED.txt").exists()


def test_a_local_symbolic_link_inside_the_target_is_not_followed_out(lying):
    fake, kc, home = lying
    outside = home / "elsewhere"
    outside.mkdir()
    target = home / "work" / "linked"
    target.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)
    fake.listings = {"dl2": [folder("sub"), file("ok.txt")], "dl2/sub": [file("PWNED.txt")]}
    reply, outputs = run(kc, "%download dl2/ linked")
    assert reply["status"] == "error" and reply["ename"] == "UnsafeName", reply
    assert "symbolic link" in reply["evalue"]
    assert list(outside.iterdir()) == [] and sorted(p.name for p in target.iterdir()) == ["sub"]


def test_an_endlessly_nested_listing_stops_at_the_depth_limit(lying):
    fake, kc, home = lying
    fake.endless = True
    try:
        asked = len(fake.pool.requests)
        before = every_file(home)
        reply, outputs = run(kc, "%download dl2/ endless")
        listed = len([r for r in fake.pool.requests[asked:] if r.path == "/files"])
    finally:
        fake.endless = False
    assert reply["status"] == "error" and reply["ename"] == "ListingTooLarge", reply
    assert "32 folders deep" in reply["evalue"] and "subfolder" in reply["evalue"]
    assert listed <= 40, listed  # was followed 407 times
    assert every_file(home) == before


def test_a_listing_past_the_file_count_or_the_byte_limit_is_refused_before_any_byte(lying):
    fake, kc, home = lying
    before = every_file(home)
    fake.listings = {"dl2": [file(f"f{i}.txt") for i in range(10_001)]}
    many, _ = run(kc, "%download dl2/ many")
    fake.listings = {"dl2": [file("a.bin", 600_000), file("b.bin", 600_000)]}  # 1.2 MB declared, the limit is 1M
    large, _ = run(kc, "%download dl2/ large")
    assert many["status"] == "error" and many["ename"] == "ListingTooLarge" and "10000 files" in many["evalue"]
    assert large["status"] == "error" and large["ename"] == "DownloadTooLarge", large
    assert "REMOTE_KERNEL_DOWNLOAD_LIMIT" in large["evalue"] and "nothing was downloaded" in large["evalue"]
    assert every_file(home) == before


def test_a_download_that_fails_part_way_leaves_no_file(lying):
    fake, kc, home = lying
    fake.listings = {"dl2": [file("a.txt"), folder("s")], "dl2/s": [file("b.txt"), file("c.txt")]}
    fake.missing = {"dl2/s/c.txt"}
    try:
        before = every_file(home)
        reply, outputs = run(kc, "%download dl2/ partial")
    finally:
        fake.missing = set()
    assert reply["status"] == "error" and "Downloaded" not in text_of(outputs), reply
    assert every_file(home) == before  # neither a.txt nor b.txt, no hidden folder, no .part


def test_an_honest_nested_listing_still_downloads(lying):
    fake, kc, home = lying
    fake.listings = {"dl2": [file("a.txt"), folder("s"), file("dl2/named-by-path.txt")],
                     "dl2/s": [file("b.txt"), folder("Deeper")], "dl2/s/Deeper": [file("c.txt")]}
    reply, outputs = run(kc, "%download dl2/ honest")
    target = home / "work" / "honest"
    assert reply["status"] == "ok", reply
    assert every_file(target) == {"a.txt", "named-by-path.txt", "s", "s/b.txt", "s/Deeper", "s/Deeper/c.txt"}
    assert (target / "s" / "Deeper" / "c.txt").read_bytes() == b"x"
    assert "Downloaded 4 files" in text_of(outputs)
