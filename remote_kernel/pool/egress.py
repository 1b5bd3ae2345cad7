"""Outbound network for sessions that does not open the host: one network namespace per session, with
pasta (Debian's `passt`) as its user-mode network stack, as rootless Podman does.

A session with egress gets its own network namespace (so its loopback, its abstract Unix sockets and its
ports are its own: the host's loopback services and other sessions are out of reach), in which pasta
puts an interface that carries the session's connections out through ordinary sockets of the host.
pasta runs with no port forwarding in either direction (`-t none -u none -T none -U none`) and without
mapping the gateway's address to the host (`--no-map-gw`). What the session may reach is then decided
by the namespace's routes, which the pool (root in the initial namespace) writes and the session (with
no capability over a namespace the pool owns) cannot change:

- `--egress enabled`: the default route, minus a `prohibit` route for each address of the host's own
  interfaces (a service listening on 0.0.0.0 of the host stays out of reach);
- `--egress allow=HOST,…`: no default route at all; a route only to the addresses the allowed names
  resolve to (resolved by the pool when the session starts) and, for each name, a line in the session's
  own /etc/hosts, so that the names resolve with no DNS server reachable. An entry may be an address
  or a network (203.0.113.0/24);
- in both modes, a `prohibit` route for each address of the host's own interfaces, more specific than
  any allowed network: the host is never reachable through its addresses, even one an allowed network
  holds or the list names (a pool that could reach a host service that way would open it to every
  session; the pool says at start which allowed entries hold host addresses).

Why pasta: it needs no privileges in the namespace's owner and no firewall (nftables may be absent).
It needs the pool to run as root to create named namespaces (a pool that is not root, or lacks pasta,
ip or nsenter, refuses `allow=` and gives `enabled` the host's own network, with a loud warning, as
`--sandbox auto` does without bubblewrap), and is run as root (`--runas 0`) because
it cannot join a namespace owned by the initial user namespace after dropping to `nobody`; it still
isolates itself (its own namespaces, empty filesystem, seccomp filter, no capabilities but the few it
needs).
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("remote_kernel.pool")

NETNS_DIR = Path("/run/netns")


class EgressUnavailable(RuntimeError):
    """Egress was asked for but cannot be given safely here."""


@dataclass(frozen=True)
class EgressPolicy:
    """`--egress`: None (disabled), every destination but the host's own addresses, or an allow-list."""

    allow: tuple[str, ...] | None = None  # None: any destination; else names, addresses or networks
    shared: bool = False  # `enabled` where no private network can be made: the host's own (loudly)

    @staticmethod
    def parse(text: str) -> EgressPolicy | None:
        """`disabled`, `enabled` or `allow=HOST[,HOST…]` (ValueError otherwise)."""
        if text == "disabled":
            return None
        if text == "enabled":
            return EgressPolicy()
        if text.startswith("allow="):
            hosts = tuple(h.strip() for h in text[len("allow="):].split(",") if h.strip())
            if not hosts:
                raise ValueError("allow= needs at least one host, e.g. allow=pypi.org,files.pythonhosted.org")
            return EgressPolicy(hosts)
        raise ValueError(f"{text!r}: use enabled, disabled or allow=HOST[,HOST…]")

    def __str__(self) -> str:
        return "enabled" if self.allow is None else "allow=" + ",".join(self.allow)

    def check(self) -> None:
        """EgressUnavailable when this machine cannot give sessions a network of their own."""
        missing = [tool for tool in ("pasta", "ip", "nsenter") if shutil.which(tool) is None]
        if missing:
            raise EgressUnavailable(f"--egress {self} needs {', '.join(missing)} (apt-get install passt iproute2 "
                                    "util-linux); without them sessions would share the host's network")
        if os.geteuid() != 0:
            raise EgressUnavailable(f"--egress {self} gives each session its own network namespace, which needs "
                                    "the pool to run as root; run it as root or with --egress disabled")

    def note_host_addresses(self) -> None:
        """Say at start which allowed entries hold addresses of this host: sessions cannot reach those."""
        try:
            links = json.loads(subprocess.run(["ip", "-j", "address", "show"], capture_output=True, text=True,
                                              env={"PATH": os.defpath + ":/usr/sbin:/sbin"}).stdout or "[]")
        except (OSError, ValueError):
            return
        own = {ipaddress.ip_address(a["local"].split("%")[0]) for link in links
               for a in link.get("addr_info", []) if "local" in a}
        networks, _ = self.resolve()
        for net in networks:
            held = sorted(str(a) for a in own if a.version == net.version and a in net)
            if held:
                log.warning("egress allow-list: %s holds this host's own address%s %s, which sessions cannot reach "
                            "(a host address is never allowed, even when named)", net, "es" * (len(held) > 1),
                            ", ".join(held))

    def resolve(self) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], list[tuple[str, str]]]:
        """The networks the allow-list names now, and (address, name) lines for /etc/hosts."""
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        hosts: list[tuple[str, str]] = []
        for entry in self.allow or ():
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            try:
                answers = socket.getaddrinfo(entry, None, proto=socket.IPPROTO_TCP)
            except OSError as error:
                log.warning("egress allow-list: %s does not resolve (%s); sessions cannot reach it", entry, error)
                continue
            for address in sorted({a[4][0] for a in answers}):
                networks.append(ipaddress.ip_network(address))
                hosts.append((str(address), entry))
        return networks, hosts


@dataclass
class SessionNetwork:
    """A session's network namespace, its pasta, and the /etc/hosts it sees."""

    name: str
    hosts_file: bytes | None = None
    pasta_pid: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)

    @classmethod
    async def create(cls, policy: EgressPolicy, guid: str) -> SessionNetwork:
        """A namespace with pasta in it and the routes of `policy`; EgressUnavailable if it fails."""
        network = cls(f"rk-{os.getpid()}-{guid[:12]}")
        try:
            await run("ip", "netns", "add", network.name)
            with tempfile.TemporaryDirectory(prefix="rk-pasta-") as folder:
                pid_file = Path(folder) / "pid"
                await run("pasta", "--config-net", "--netns", network.path, "--netns-only", "--runas", "0", "--quiet",
                          "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--no-map-gw", "-P", str(pid_file))
                try:
                    network.pasta_pid = int(pid_file.read_text().strip())
                except (OSError, ValueError):
                    pass
            if policy.allow is not None:
                await network._allow_only(policy)
            await network._prohibit_host_addresses()  # after the allowed routes: a host address within one too
        except BaseException:
            await network.remove()
            raise
        return network

    async def _prohibit_host_addresses(self) -> None:
        inside = {a["local"] for a in await addresses(self.name)}
        for address in {a["local"] for a in await addresses(None)} - inside:
            family = "-6" if ":" in address else "-4"
            await run("ip", "-n", self.name, family, "route", "replace", "prohibit", address)  # an allowed one too

    async def _allow_only(self, policy: EgressPolicy) -> None:
        networks, hosts = await asyncio.to_thread(policy.resolve)
        for family in ("-4", "-6"):
            routes = json.loads(await run("ip", "-n", self.name, "-j", family, "route", "show", "default") or "[]")
            await run("ip", "-n", self.name, family, "route", "flush", "table", "main")
            if not routes:
                continue
            gateway, device = routes[0].get("gateway"), routes[0].get("dev")
            for net in networks:
                if (net.version == 6) == (family == "-6") and gateway and device:
                    await run("ip", "-n", self.name, family, "route", "add", str(net), "via", gateway, "dev", device,
                              "onlink")
        lines = ["127.0.0.1 localhost", "::1 localhost"] + [f"{address} {name}" for address, name in hosts]
        self.hosts_file = ("\n".join(lines) + "\n").encode()

    async def remove(self) -> None:
        """Delete the namespace (pasta quits when it goes) and make sure pasta is gone."""
        if (NETNS_DIR / self.name).exists():
            try:
                await run("ip", "netns", "delete", self.name)
            except EgressUnavailable as problem:
                log.warning("%s", problem)
        if self.pasta_pid:
            try:
                os.kill(self.pasta_pid, 9)
            except ProcessLookupError:
                pass
            self.pasta_pid = None


async def addresses(namespace: str | None) -> list[dict[str, Any]]:
    """Every address of every interface, of the host (None) or of a named namespace."""
    argv = ["ip", *(["-n", namespace] if namespace else []), "-j", "address", "show"]
    links = json.loads(await run(*argv) or "[]")
    return [info for link in links for info in link.get("addr_info", []) if "local" in info]


async def run(*argv: str) -> str:
    """Run a tool; its stdout, or EgressUnavailable with what it said."""
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE, env={"PATH": os.defpath + ":/usr/sbin:/sbin"})
    out, err = await process.communicate()
    if process.returncode != 0:
        raise EgressUnavailable(f"{' '.join(argv[:4])}… failed: {err.decode(errors='replace').strip()[-300:]}")
    return out.decode()


def sweep() -> None:
    """Delete the namespaces of pools that are gone (named rk-<pid>-…)."""
    if not NETNS_DIR.is_dir() or shutil.which("ip") is None:
        return
    for entry in NETNS_DIR.glob("rk-*-*"):
        pid = entry.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "delete", entry.name], capture_output=True)
