"""Test hosts made of Linux network namespaces: a hub host holding a bridge, and other hosts each
linked to it by a veth pair, on a private /24 of 10.213.0.0/16 — so a test can run the lab's
servers on one "machine" and workers on others that reach it only over their links, kill a
host's processes, or cut its link (a partition) and restore it. The test process itself
reaches the hub through a veth of its own. Names carry the pid: two test runs never share one.
Needs root and iproute2; `Hosts.create` skips the test, with the reason, where a namespace
cannot be made."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import pytest

HUB = "lab"
TESTER = 254  # the test process's own address on the bridge: .254


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def free_subnet() -> int:
    """A third octet of 10.213.x.0/24 that no interface of this machine's root namespace uses,
    starting from one chosen by the pid."""
    used = ip("-o", "-4", "addr", "show").stdout
    for n in range(250):
        x = (os.getpid() + n) % 250 + 1
        if f" 10.213.{x}." not in used:
            return x
    raise RuntimeError("no free 10.213.x.0/24")


class Hosts:
    """The namespaces `<prefix>-<host>`: `HUB` with the bridge at .1, each other host at .2, .3, …
    behind a veth whose hub end is `link(host)`. Use as a context manager: everything it made
    (processes too) is removed on exit, failure or not."""

    def __init__(self, names: Sequence[str]) -> None:
        self.prefix = f"pl{os.getpid() % 100_000}"
        self.subnet = free_subnet()
        self.names = [HUB, *names]
        self.addresses = {HUB: self.address(1)}
        self.addresses.update({name: self.address(n + 2) for n, name in enumerate(names)})
        self.made: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.root_link = f"{self.prefix}t"  # the tester's veth, in the root namespace

    def address(self, host: int) -> str:
        return f"10.213.{self.subnet}.{host}"

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def link(self, name: str) -> str:
        """The hub end of a host's veth: what a partition takes down."""
        return f"to-{name}"

    @classmethod
    @contextlib.contextmanager
    def create(cls, names: Sequence[str]) -> Iterator[Hosts]:
        """The hosts, linked and up; skips the test where `ip netns add` fails (not root, no
        iproute2, no namespaces in this container)."""
        if shutil.which("ip") is None:
            pytest.skip("no `ip` (iproute2) on this machine: cannot make network namespaces")
        if shutil.which("unshare") is None:
            pytest.skip("no `unshare` (util-linux) on this machine: cannot name the test hosts")
        hosts = cls(names)
        probe = ip("netns", "add", hosts.ns(HUB), check=False)
        if probe.returncode != 0:
            pytest.skip(f"cannot make a network namespace (`ip netns add`: "
                        f"{probe.stderr.strip() or probe.returncode}); needs root and iproute2")
        hosts.made.append(hosts.ns(HUB))
        try:
            hosts.build()
            yield hosts
        finally:
            hosts.destroy()

    def build(self) -> None:
        hub = self.ns(HUB)
        ip("-n", hub, "link", "set", "lo", "up")
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "addr", "add", f"{self.addresses[HUB]}/24", "dev", "br0")
        ip("-n", hub, "link", "set", "br0", "up")
        for name in self.names[1:]:
            ns = self.ns(name)
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", self.link(name),
               "netns", hub)
            ip("-n", ns, "addr", "add", f"{self.addresses[name]}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", hub, "link", "set", self.link(name), "master", "br0", "up")
        # the test process's way in: a veth from the root namespace onto the bridge
        ip("link", "add", self.root_link, "type", "veth", "peer", "name", "to-tester",
           "netns", hub)
        ip("addr", "add", f"{self.address(TESTER)}/24", "dev", self.root_link)
        ip("link", "set", self.root_link, "up")
        ip("-n", hub, "link", "set", "to-tester", "master", "br0", "up")
        self.wait_reachable()

    def wait_reachable(self, timeout: float = 10) -> None:
        """Every host reaches the hub: a TCP connect to a closed port of it is refused (an
        answer came back) rather than timing out. No ping: it is not on every machine."""
        probe = ("import socket, sys\ntry:\n socket.create_connection((sys.argv[1], 9), 1)\n"
                 "except ConnectionRefusedError:\n sys.exit(0)\nexcept OSError:\n sys.exit(1)")
        deadline = time.monotonic() + timeout
        for name in self.names[1:]:
            while subprocess.run(["ip", "netns", "exec", self.ns(name), sys.executable, "-c", probe,
                                  self.addresses[HUB]], capture_output=True, timeout=20).returncode:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"host {name} ({self.addresses[name]}) cannot reach the hub")
                time.sleep(0.2)

    def popen(self, host: str, command: Sequence[str], log: Path, env: dict[str, str],
              cwd: Path | None = None) -> subprocess.Popen:
        """`command` on `host`: in its network namespace and a UTS namespace of its own whose
        hostname is the host's name (so worker ids say where they ran); output to `log`."""
        out: IO[bytes] = open(log, "ab")  # noqa: SIM115  (closed by the child's exit)
        wrapped = ["ip", "netns", "exec", self.ns(host), "unshare", "--uts", "sh", "-c",
                   'hostname "$0" && exec "$@"', self.ns(host), *command]
        proc = subprocess.Popen(wrapped, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc

    def pids(self, host: str) -> list[int]:
        """Every process in the host's network namespace."""
        listed = ip("netns", "pids", self.ns(host), check=False).stdout
        return [int(pid) for pid in listed.split()]

    def kill(self, host: str) -> list[int]:
        """SIGKILL every process of the host (a power cut, for its software); the pids."""
        pids = self.pids(host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:  # reap our own children among them
            if proc.pid in pids:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        deadline = time.monotonic() + 10
        while self.pids(host) and time.monotonic() < deadline:
            time.sleep(0.1)
        return pids

    def cut(self, host: str) -> None:
        """Partition the host: its link's hub end goes down (the host's side sees no carrier;
        nothing it sends arrives, nothing reaches it)."""
        ip("-n", self.ns(HUB), "link", "set", self.link(host), "down")

    def restore(self, host: str) -> None:
        ip("-n", self.ns(HUB), "link", "set", self.link(host), "up")

    def destroy(self) -> None:
        """Kill every process in the namespaces, delete them (their veths go with them)."""
        for ns in self.made:
            host = ns.removeprefix(f"{self.prefix}-")
            with contextlib.suppress(Exception):
                self.kill(host)
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        ip("link", "del", self.root_link, check=False)
        for ns in reversed(self.made):
            ip("netns", "del", ns, check=False)
        self.made.clear()
