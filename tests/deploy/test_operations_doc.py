"""docs/operations.md runs as written: every shell block marked `<!-- runnable: gateway -->`
runs in a scratch directory beside a real `linewarden serve --config linewarden.toml`,
`runnable: repo` blocks in the repository, `runnable: netns` blocks inside a fresh network
namespace (never in the host's own); `check: haproxy` blocks pass `haproxy -c`. A shell block
marked neither runnable nor `not run: <why>` fails the test."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from netns import KernelRefused, run

from lwtest import DEFAULT_PARTNERS, MSISDN_1, ROOT, launch_serve, stop_process

DOC = ROOT / "docs" / "operations.md"
SHELLS = ("sh", "bash", "shell", "console")
MARKER = re.compile(r"<!-- (runnable: (gateway|repo|netns)|not run: .+|check: haproxy) -->")


@dataclass
class Block:
    line: int
    language: str
    marker: str  # "runnable: gateway", "not run: ...", "check: haproxy" or ""
    text: str


def blocks() -> list[Block]:
    lines = DOC.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        start, language = i, fence.group(1)
        i += 1
        while not lines[i].startswith("```"):
            i += 1
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.fullmatch(before.strip())
        found.append(Block(start + 1, language, marker.group(1) if marker else "",
                           "\n".join(lines[start + 1:i]) + "\n"))
        i += 1
    return found


def test_every_shell_block_is_marked() -> None:
    unmarked = [b.line for b in blocks() if b.language in SHELLS and not b.marker]
    assert unmarked == [], f"docs/operations.md shell blocks at lines {unmarked} are marked " \
        "neither `<!-- runnable: ... -->` nor `<!-- not run: why -->`"
    kinds = [b.marker for b in blocks() if b.marker.startswith("runnable")]
    assert kinds.count("runnable: gateway") >= 6 and "runnable: netns" in kinds


def bash(text: str, cwd: Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def gateway_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("opsdoc")

    def write(proxy_port: int, web_port: int) -> Path:
        config = directory / "linewarden.toml"
        config.write_text(f"""
state_dir = ".linewarden"
[proxy]
listen = "127.0.0.1:{proxy_port}"
instance_id = "opsdoc"
[proxy.resolve]
"partner.test" = "127.0.0.1:9"
[identity]
operator = "234-10"
[[bindings]]
ip = "127.0.0.1"
msisdn = "{MSISDN_1}"
[web]
listen = "127.0.0.1:{web_port}"
{DEFAULT_PARTNERS}
""")
        return config

    proc, *_ = launch_serve(directory, write)
    try:
        yield directory
    finally:
        stop_process(proc)


@pytest.mark.parametrize("block", [b for b in blocks() if b.marker == "runnable: gateway"],
                         ids=lambda b: f"line{b.line}")
def test_gateway_block_runs(block: Block, gateway_dir: Path) -> None:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    result = bash(block.text, gateway_dir, env)
    assert result.returncode == 0, f"line {block.line}:\n{block.text}\n{result.stdout}" \
        f"\n{result.stderr}"
    if "http://admin/metrics" in block.text:
        assert "linewarden_requests" in result.stdout


@pytest.mark.parametrize("block", [b for b in blocks() if b.marker == "runnable: repo"],
                         ids=lambda b: f"line{b.line}")
def test_repo_block_runs(block: Block) -> None:
    for tool in re.findall(r"^(\S+)", block.text, re.M):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (make debs)")
    result = bash(block.text, ROOT)
    assert result.returncode == 0, f"line {block.line}:\n{result.stdout}\n{result.stderr}"
    if "systemd-analyze security" in block.text:
        assert "2.0 OK" in result.stdout, result.stdout  # the figure the doc quotes


@pytest.mark.parametrize("block", [b for b in blocks() if b.marker == "runnable: netns"],
                         ids=lambda b: f"line{b.line}")
def test_netns_block_runs(block: Block) -> None:
    ns = f"lw-doc-{secrets.token_hex(3)}"
    try:
        try:
            run("ip", "netns", "add", ns)
        except KernelRefused as exc:
            if not exc.by_kernel():
                raise
            pytest.skip(f"the kernel refused a network namespace: {exc}")
        result = run("bash", "-e", "-o", "pipefail", "-c", block.text, ns=ns, check=False)
        if result.returncode != 0 and KernelRefused(result.stderr).by_kernel():
            pytest.skip(f"the kernel refused: {result.stderr.strip()}")
        assert result.returncode == 0, f"line {block.line}:\n{result.stdout}\n{result.stderr}"
        tables = run("nft", "list", "tables", ns=ns).stdout
        for name in re.findall(r"^table (\w+ \w+)", block.text, re.M):
            assert f"table {name}" in tables
    finally:
        run("ip", "netns", "delete", ns, check=False)


@pytest.mark.parametrize("block", [b for b in blocks() if b.marker == "check: haproxy"],
                         ids=lambda b: f"line{b.line}")
def test_haproxy_block_is_valid(block: Block, tmp_path: Path) -> None:
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.fail("haproxy is not installed (make debs)")
    config = tmp_path / "haproxy.cfg"
    config.write_text(block.text)
    result = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
