"""Network namespaces for the interception tests: made, used and removed by name."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field

# What the kernel says when a container forbids namespaces or lacks netfilter; any other
# error (a syntax error in our ruleset, say) is a test failure, never a skip.
KERNEL_REFUSALS = ("Operation not permitted", "Permission denied", "not supported",
                   "No such file or directory", "Protocol not available")


class KernelRefused(Exception):
    """A namespace operation failed; the message is the tool's own."""

    def by_kernel(self) -> bool:
        return any(words in str(self) for words in KERNEL_REFUSALS)


def run(*cmd: str, ns: str | None = None, check: bool = True,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    result = subprocess.run(full, capture_output=True, text=True, input=stdin, timeout=30,
                            check=False)
    if check and result.returncode != 0:
        raise KernelRefused(f"{' '.join(full)}: {result.stderr.strip() or result.stdout}")
    return result


@dataclass
class Lab:
    """Three namespaces: subscriber --veth-- gateway --veth-- origin. Addresses:
    subscriber 10.99.1.2 / fd99:1::2, gateway 10.99.1.1 and 10.99.2.1 / fd99:1::1 and
    fd99:2::1, origin 10.99.2.2 and 10.99.2.3 / fd99:2::2."""

    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    made: list[str] = field(default_factory=list)

    @property
    def sub(self) -> str:
        return f"lw-sub-{self.suffix}"

    @property
    def gw(self) -> str:
        return f"lw-gw-{self.suffix}"

    @property
    def org(self) -> str:
        return f"lw-org-{self.suffix}"

    def build(self) -> None:
        for ns in (self.sub, self.gw, self.org):
            run("ip", "netns", "add", ns)
            self.made.append(ns)
            run("ip", "link", "set", "lo", "up", ns=ns)
        s = self.suffix
        run("ip", "link", "add", f"lws{s}", "netns", self.sub, "type", "veth",
            "peer", "name", f"lwg{s}", "netns", self.gw)
        run("ip", "link", "add", f"lwh{s}", "netns", self.gw, "type", "veth",
            "peer", "name", f"lwo{s}", "netns", self.org)
        for ns, dev, addrs in ((self.sub, f"lws{s}", ["10.99.1.2/24"]),
                               (self.gw, f"lwg{s}", ["10.99.1.1/24"]),
                               (self.gw, f"lwh{s}", ["10.99.2.1/24"]),
                               (self.org, f"lwo{s}", ["10.99.2.2/24", "10.99.2.3/24"])):
            for addr in addrs:
                run("ip", "addr", "add", addr, "dev", dev, ns=ns)
            run("ip", "link", "set", dev, "up", ns=ns)
        run("ip", "route", "add", "default", "via", "10.99.1.1", ns=self.sub)
        run("ip", "route", "add", "default", "via", "10.99.2.1", ns=self.org)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.gw)
        # IPv6 beside: fd99:1::/64 subscriber side, fd99:2::/64 origin side (nodad: usable
        # at once, no duplicate-address-detection wait).
        for ns, dev, addr in ((self.sub, f"lws{s}", "fd99:1::2/64"),
                              (self.gw, f"lwg{s}", "fd99:1::1/64"),
                              (self.gw, f"lwh{s}", "fd99:2::1/64"),
                              (self.org, f"lwo{s}", "fd99:2::2/64")):
            run("ip", "-6", "addr", "add", addr, "dev", dev, "nodad", ns=ns)
        run("ip", "-6", "route", "add", "default", "via", "fd99:1::1", ns=self.sub)
        run("ip", "-6", "route", "add", "default", "via", "fd99:2::1", ns=self.org)
        run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=self.gw)

    def nft(self, ruleset: str) -> None:
        run("nft", "-f", "-", ns=self.gw, stdin=ruleset)

    def destroy(self) -> None:
        for ns in reversed(self.made):
            run("ip", "netns", "delete", ns, check=False)
        self.made.clear()
