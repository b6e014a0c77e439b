"""Simulated hosts on this machine: network namespaces joined to ours by veth pairs.

Each host gets a namespace of its own with one address in a /30 that only exists on its veth
pair (10.213.N.0/30: the host side .1, the namespace side .2), so a process bound there is
reachable from the test at that address and from nowhere else. Needs root and iproute2.
Before anything connects, `route_is_local` checks the address really routes through our veth,
so a failed setup can never send traffic anywhere else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

SKIP_ENV = "GGUF_SERVE_TEST_SKIP_RPC"  # "1": skip the simulated-host RPC tests, explicitly


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class SimHost:
    """One namespace and its veth pair."""

    index: int
    netns: str
    host_if: str
    address: str  # inside the namespace
    gateway: str  # our side of the pair
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def exec_argv(self, *argv: str) -> list[str]:
        """Run `argv` inside this host's namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def route_is_local(self) -> bool:
        out = _ip("-o", "route", "get", self.address)
        return f" dev {self.host_if} " in out


def preflight() -> str | None:
    """Why simulated hosts cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def make_hosts(count: int) -> list[SimHost]:
    """Create `count` namespaces with a veth pair each; names are unique to this process."""
    tag = f"gsv{os.getpid() % 100000}"
    hosts: list[SimHost] = []
    try:
        for i in range(1, count + 1):
            net = f"10.213.{(os.getpid() + i) % 250 + 1}"
            host = SimHost(i, f"{tag}-h{i}", f"{tag}h{i}", f"{net}.2", f"{net}.1")
            _ip("netns", "add", host.netns)
            hosts.append(host)
            _ip(
                "link",
                "add",
                host.host_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.netns,
            )
            _ip("addr", "add", f"{host.gateway}/30", "dev", host.host_if)
            _ip("link", "set", host.host_if, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/30", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
            if not host.route_is_local():
                raise RuntimeError(f"{host.address} does not route through {host.host_if}")
    except BaseException:
        remove_hosts(hosts)
        raise
    return hosts


def remove_hosts(hosts: list[SimHost]) -> None:
    """Stop what runs in each namespace and delete it (its veth pair goes with it)."""
    for host in hosts:
        for proc in host.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, timeout=10)
