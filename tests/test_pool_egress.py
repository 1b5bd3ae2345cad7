"""Issue 15: egress that does not open the host. Sessions with `--egress enabled` or `--egress allow=…`
reach "outside" hosts — built here as a network namespace of this test's own making, joined to the
host by a veth pair — but never the host's loopback, the host's own addresses, abstract Unix sockets
or another session."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import bubblewrap_usable, code_value, start_pool

usable, why = bubblewrap_usable()
missing = [tool for tool in ("ip", "pasta", "nsenter") if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.skipif(not usable, reason=why),
    pytest.mark.skipif(bool(missing), reason=f"egress needs {', '.join(missing)} (apt-get install passt iproute2)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="building outside hosts (ip netns, veth) and egress need root"),
]

NET = f"10.231.{20 + os.getpid() % 200}"
OUTSIDE_A, OUTSIDE_B, HOST_SIDE = f"{NET}.2", f"{NET}.3", f"{NET}.1"
PORT = 8080


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def outside():
    """A namespace with two addresses serving HTTP on port 8080, reachable from the host over a veth."""
    name, host_link, peer = f"rkt-out-{os.getpid()}", f"rkh{os.getpid() % 100000}", f"rko{os.getpid() % 100000}"
    try:
        ip("netns", "add", name)
        ip("link", "add", host_link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", name)
        ip("address", "add", f"{HOST_SIDE}/24", "dev", host_link)
        ip("link", "set", host_link, "up")
        for address in (OUTSIDE_A, OUTSIDE_B):
            ip("-n", name, "address", "add", f"{address}/24", "dev", peer)
        ip("-n", name, "link", "set", peer, "up")
        ip("-n", name, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as error:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        pytest.skip(f"cannot build a test network here: {error.stderr.decode().strip()}")
    folder = Path(tempfile.mkdtemp(prefix="rk-outside-"))
    (folder / "hello.txt").write_text("hello from outside")
    server = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-m", "http.server", str(PORT),
                               "--bind", "0.0.0.0", "--directory", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{OUTSIDE_A}:{PORT}/hello.txt", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        pytest.fail("the outside host's server did not start")
    yield name
    server.kill()
    server.wait()
    subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    subprocess.run(["ip", "link", "delete", host_link], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def host_services():
    """A TCP service on all of the host's addresses and an abstract Unix socket, as a host might have."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("0.0.0.0", 0))
    tcp.listen(16)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_name = f"rk-egress-{uuid.uuid4().hex}"
    abstract.bind("\0" + abstract_name)
    abstract.listen(16)
    stop = threading.Event()

    def accept(listener: socket.socket) -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                listener.accept()[0].close()
            except OSError:
                pass

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in (tcp, abstract)]
    for thread in threads:
        thread.start()
    yield {"tcp_port": tcp.getsockname()[1], "abstract": abstract_name}
    stop.set()
    for thread in threads:
        thread.join()
    tcp.close()
    abstract.close()


def host_addresses() -> list[str]:
    links = json.loads(subprocess.run(["ip", "-j", "address", "show"], capture_output=True, text=True).stdout)
    return [a["local"] for link in links for a in link.get("addr_info", []) if "local" in a
            and not a["local"].startswith("fe80")]


PROBE = """
import socket, urllib.request
def reach(address, port):
    family = socket.AF_INET6 if ':' in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((address, port))
        return 'connected'
    except OSError as error:
        return type(error).__name__
    finally:
        s.close()
def fetch(url):
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError as error:
        return type(error).__name__
def gateways():  # the gateways of the session's routes: pasta maps none of them to the host
    import struct
    rows = [line.split() for line in open('/proc/net/route').readlines()[1:]]
    return sorted({socket.inet_ntoa(struct.pack('<I', int(row[2], 16))) for row in rows if int(row[2], 16)})
def abstract(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect('\\0' + name)
        return 'connected'
    except OSError as error:
        return type(error).__name__
    finally:
        s.close()
"""


@pytest.fixture(scope="module", params=["enabled", "allow"])
def egress_pool(request, outside):
    mode = "enabled" if request.param == "enabled" else f"allow={OUTSIDE_A}"
    pool = start_pool("--egress", mode, "--ready-sessions", "1")
    yield request.param, pool
    pool.stop()
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"rk-{pool.process.pid}-")], \
        "the sessions' namespaces outlived the pool"


def value(client: httpx.Client, identifier: str, code: str):
    return code_value(client, identifier, code)


def test_egress_reaches_outside_hosts_but_not_the_host_or_other_sessions(egress_pool, host_services):
    mode, pool = egress_pool
    with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as client:
        peer = str(uuid.uuid4())  # another session, listening on an abstract socket and a TCP port
        value(client, peer, "import socket\npeer = socket.socket(socket.AF_UNIX)\npeer.bind('\\0rk-peer-session')\n"
                            "peer.listen()\ntcp = socket.socket()\ntcp.bind(('0.0.0.0', 7777))\ntcp.listen()")
        identifier = str(uuid.uuid4())
        value(client, identifier, PROBE)
        seen = value(client, identifier, f"""{{
    'allowed': fetch('http://{OUTSIDE_A}:{PORT}/hello.txt'),
    'other_outside': fetch('http://{OUTSIDE_B}:{PORT}/hello.txt'),
    'pool': reach('127.0.0.1', {pool.port}),
    'host_side_of_the_veth': reach('{HOST_SIDE}', {host_services['tcp_port']}),
    'host_addresses': {{a: reach(a, {host_services['tcp_port']}) for a in {host_addresses()!r}}},
    'host_abstract_socket': abstract({host_services['abstract']!r}),
    'peer_abstract_socket': abstract('rk-peer-session'),
    'peer_tcp': reach('127.0.0.1', 7777),
}}""")
    assert seen["allowed"] == "hello from outside", seen
    if mode == "enabled":
        assert seen["other_outside"] == "hello from outside", seen
    else:
        assert seen["other_outside"] != "hello from outside", seen
    assert seen["pool"] != "connected", seen
    assert seen["host_side_of_the_veth"] != "connected", seen
    assert all(result != "connected" for result in seen["host_addresses"].values()), seen
    assert seen["host_abstract_socket"] != "connected" and seen["peer_abstract_socket"] != "connected", seen
    assert seen["peer_tcp"] != "connected", seen


def test_an_allow_list_gives_its_names_in_the_sessions_hosts_file(outside):
    pool = start_pool("--egress", f"allow={OUTSIDE_A},localhost", "--ready-sessions", "0")
    try:
        with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as client:
            hosts = value(client, str(uuid.uuid4()), "open('/etc/hosts').read()")
            routes = value(client, str(uuid.uuid4()), "open('/proc/net/route').read()")
    finally:
        pool.stop()
    # the allow-list's names (localhost here), and none of the host's own /etc/hosts
    assert "127.0.0.1 localhost" in hosts.splitlines()
    assert all(line.endswith(" localhost") for line in hosts.splitlines() if line.strip()), hosts
    # no default route: only the allowed addresses are routed
    assert not any(line.split("\t")[1] == "00000000" for line in routes.splitlines()[1:] if line.strip()), routes


@pytest.mark.parametrize("allowed", ["{net}.0/24", "{host_side},{outside}", "0.0.0.0/1,128.0.0.0/1"])
def test_an_allow_list_never_opens_the_hosts_own_addresses_even_when_it_holds_or_names_them(
        outside, host_services, allowed):
    allowed = allowed.format(net=NET, host_side=HOST_SIDE, outside=OUTSIDE_A)
    pool = start_pool("--egress", f"allow={allowed}", "--ready-sessions", "0")
    try:
        with httpx.Client(base_url=pool.endpoint, headers=pool.headers, timeout=120) as client:
            identifier = str(uuid.uuid4())
            value(client, identifier, PROBE)
            seen = value(client, identifier, f"""{{
    'allowed': fetch('http://{OUTSIDE_A}:{PORT}/hello.txt'),
    'host_side_of_the_veth': reach('{HOST_SIDE}', {host_services['tcp_port']}),
    'host_addresses': {{a: reach(a, {host_services['tcp_port']}) for a in {host_addresses()!r}}},
    'gateways': {{g: [reach(g, {host_services['tcp_port']}), reach(g, {pool.port})] for g in gateways()}},
}}""")
        log = pool.log()
    finally:
        pool.stop()
    assert seen["allowed"] == "hello from outside", seen
    assert seen["host_side_of_the_veth"] != "connected", seen
    assert all(result != "connected" for result in seen["host_addresses"].values()), seen
    assert all(result != "connected" for results in seen["gateways"].values() for result in results), seen
    assert "this host's own address" in log and HOST_SIDE in log, log  # said at start
