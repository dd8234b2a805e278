"""Log scanner throughput and accuracy, side by side with the usual alternatives.

    .venv/bin/python bench/scan.py [--size-mb 1024] [--sample-mb 20] [--repeat 3]
                                   [--skip-presidio] [--before GIT-REF]

Two generated corpora (tests/scan/corpus.py, seed 2012), each a labeled 20 MB sample and a
1 GiB log made of that sample repeated:

- *dense*: about one identity every two lines, every look-alike; the recall/precision corpus.
- *realistic*: the same generator with identities 40 times rarer (about one phone number per
  50 lines) drawn from a slowly growing pool of subscribers, so numbers repeat as in a real
  access log.

For each: linewarden on the 1 GiB log, one worker and all workers, through the same code
path as `linewarden scan`, the runs interleaved (`--repeat` rounds, median kept) because
the machine is shared; and on the 20 MB sample linewarden cold (one worker, empty memo),
`phonenumbers.PhoneNumberMatcher` run line by line (region GB, leniency VALID), and
Presidio's analyzer with only its phone recognizer (region GB; spaCy blank English
pipeline, since no model can be downloaded here), each with recall and precision on the
sample's phone-number labels. Every row has wall-clock MB/s and MB per CPU-second (the
process and its workers), the load average is recorded, and the ratios are taken within
this one run. `--before REF` adds the scanner as it was at git REF (its
src/linewarden/scan, the rest of the package as now) to every round, in its own process.

Presidio lives in bench/.venv-presidio, created here on first use; it is never a project
dependency. Prints the figures and writes them to bench/results/scan.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "scan"))

import phonenumbers  # noqa: E402
from corpus import Label, build_to  # noqa: E402

from linewarden.scan.detect import MSISDN, Detector  # noqa: E402
from linewarden.scan.files import iter_chunks  # noqa: E402
from linewarden.scan.scanner import ScanOptions, scan_paths  # noqa: E402

DATA = HERE / "data"
RESULTS = HERE / "results" / "scan.md"
PRESIDIO_VENV = HERE / ".venv-presidio"
PRESIDIO_PIN = "presidio-analyzer==2.2.366"

PRESIDIO_SCRIPT = r"""
import json, sys, tempfile, time
import spacy
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
from presidio_analyzer.nlp_engine import SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import PhoneRecognizer
model = tempfile.mkdtemp() + "/blank-en"
spacy.blank("en").to_disk(model)
registry = RecognizerRegistry()
registry.add_recognizer(PhoneRecognizer(supported_regions=["GB"]))
nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
engine = AnalyzerEngine(registry=registry, supported_languages=["en"], nlp_engine=nlp)
data = open(sys.argv[1], "rb").read()
spans, offset = [], 0
started, cpu = time.perf_counter(), time.process_time()
for line in data.split(b"\n"):
    text = line.decode("latin-1")
    for r in engine.analyze(text, language="en", entities=["PHONE_NUMBER"]):
        spans.append((offset + r.start, offset + r.end))
    offset += len(line) + 1
print(json.dumps({"seconds": time.perf_counter() - started,
                  "cpu": time.process_time() - cpu, "spans": spans}))
"""


def _ignored_dir(path: Path) -> None:
    """Create a generated directory that git ignores by itself (a `*` .gitignore inside)."""
    path.mkdir(exist_ok=True)
    (path / ".gitignore").write_text("*\n")


# The realistic corpus: identities 40 times rarer than in the dense one (about one phone
# number per 50 lines), numbers drawn from a pool of at most 2,000 subscribers per region.
REALISTIC_RATE = 0.025
REALISTIC_SUBSCRIBERS = 2000
CORPORA = ("dense", "realistic")


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the scan's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """fn's result, wall seconds, CPU seconds (this process and children)."""
    wall, cpu = time.perf_counter(), _cpu()
    result = fn()
    return result, time.perf_counter() - wall, _cpu() - cpu


def sample(sample_mb: int, corpus: str) -> tuple[Path, bytes, list[Label]]:
    _ignored_dir(DATA)
    name = "sample" if corpus == "dense" else "realistic"
    path = DATA / f"scan-{name}-{sample_mb}mb.log"
    labels_path = path.with_suffix(".labels.json")
    if path.exists() and labels_path.exists():
        labels = [Label(*x) for x in json.loads(labels_path.read_text())]
        return path, path.read_bytes(), labels
    if corpus == "dense":
        text, labels = build_to(sample_mb * 1_000_000, seed=2012)
    else:
        text, labels = build_to(sample_mb * 1_000_000, seed=2012,
                                identity_rate=REALISTIC_RATE, subscribers=REALISTIC_SUBSCRIBERS)
    path.write_bytes(text)
    labels_path.write_text(json.dumps([[lb.start, lb.end, lb.kind, lb.value] for lb in labels]))
    return path, text, labels


def big_file(text: bytes, size_mb: int, corpus: str) -> Path:
    name = f"scan-{size_mb}mb.log" if corpus == "dense" else f"scan-realistic-{size_mb}mb.log"
    path = DATA / name
    want = size_mb * (1 << 20)
    if not path.exists() or path.stat().st_size < want:
        with open(path, "wb") as f:
            written = 0
            while written < want:
                f.write(text)
                written += len(text)
    return path


def score(spans: list[tuple[int, int]], labels: list[Label]) -> tuple[float, float]:
    """Recall and precision of spans against phone-number labels (any overlap counts)."""
    phone = sorted((lb.start, lb.end) for lb in labels if lb.kind == MSISDN)
    spans = sorted(spans)
    hit_labels: set[int] = set()
    good = 0
    j = 0
    for s, e in spans:
        while j < len(phone) and phone[j][1] <= s:
            j += 1
        k, matched = j, False
        while k < len(phone) and phone[k][0] < e:
            hit_labels.add(k)
            matched = True
            k += 1
        good += matched
    recall = len(hit_labels) / len(phone) if phone else 1.0
    precision = good / len(spans) if spans else 1.0
    return recall, precision


def run_linewarden_cold(path: Path, labels: list[Label]) -> dict[str, float]:
    cpu = _cpu()
    det = Detector(("GB",))
    spans: list[tuple[int, int]] = []
    exact = 0
    want = {(lb.start, lb.end, lb.kind, lb.value) for lb in labels}
    total = 0
    offset = 0
    started = time.perf_counter()
    with open(path, "rb") as f:
        for chunk in iter_chunks(f):
            for fd in det.scan(chunk):
                total += 1
                exact += (offset + fd.start, offset + fd.end, fd.kind, fd.value) in want
                if fd.kind == MSISDN:
                    spans.append((offset + fd.start, offset + fd.end))
            offset += len(chunk)
    seconds = time.perf_counter() - started
    cpu = _cpu() - cpu
    recall, precision = score(spans, labels)
    return {"mbps": offset / 1e6 / seconds, "cpu_mbps": offset / 1e6 / cpu,
            "recall": recall, "precision": precision,
            "exact_recall": exact / len(labels), "exact_precision": exact / max(total, 1)}


def run_linewarden(path: Path, workers: int) -> tuple[float, float]:
    """(wall MB/s, MB per CPU-second) of `linewarden scan`'s code path on `path`."""
    options = ScanOptions(regions=("GB",), workers=workers)
    reports, wall, cpu = _timed(lambda: list(scan_paths([str(path)], options)))
    assert isinstance(reports, list) and len(reports) == 1
    report = reports[0]
    assert report.error is None and report.findings > 0
    return report.size / 1e6 / wall, report.size / 1e6 / cpu


def run_matcher(text: bytes, labels: list[Label]) -> dict[str, float]:
    spans: list[tuple[int, int]] = []
    offset = 0
    started, cpu = time.perf_counter(), _cpu()
    for line in text.split(b"\n"):
        s = line.decode("latin-1")
        for m in phonenumbers.PhoneNumberMatcher(s, "GB", phonenumbers.Leniency.VALID):
            spans.append((offset + m.start, offset + m.end))
        offset += len(line) + 1
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    recall, precision = score(spans, labels)
    return {"mbps": len(text) / 1e6 / seconds, "cpu_mbps": len(text) / 1e6 / cpu,
            "recall": recall, "precision": precision}


def run_presidio(path: Path, text: bytes, labels: list[Label]) -> dict[str, float] | None:
    python = PRESIDIO_VENV / "bin" / "python"
    if not python.exists():
        print("creating bench/.venv-presidio (bench only, never a project dependency)...")
        subprocess.run(["python3", "-m", "venv", str(PRESIDIO_VENV)], check=True)
        (PRESIDIO_VENV / ".gitignore").write_text("*\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", PRESIDIO_PIN], check=True)
    proc = subprocess.run([str(python), "-c", PRESIDIO_SCRIPT, str(path)],
                          capture_output=True, check=False)
    if proc.returncode != 0:
        print("presidio failed:", proc.stderr.decode()[-500:])
        return None
    out = json.loads(proc.stdout.splitlines()[-1])
    spans = [(s, e) for s, e in out["spans"]]
    recall, precision = score(spans, labels)
    return {"mbps": len(text) / 1e6 / out["seconds"], "cpu_mbps": len(text) / 1e6 / out["cpu"],
            "recall": recall, "precision": precision}


BEFORE_SCRIPT = r"""
import json, resource, sys, time
from linewarden.scan.scanner import ScanOptions, scan_paths
def cpu():
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
wall, used = time.perf_counter(), cpu()
(report,) = scan_paths([sys.argv[1]], ScanOptions(regions=("GB",), workers=int(sys.argv[2])))
print(json.dumps([report.size, time.perf_counter() - wall, cpu() - used]))
"""


def before_tree(ref: str) -> Path:
    """A copy of src/ with src/linewarden/scan as it was at git `ref`."""
    root = Path(tempfile.mkdtemp(prefix="scan-before-"))
    shutil.copytree(HERE.parent / "src", root / "src")
    scan_dir = root / "src" / "linewarden" / "scan"
    shutil.rmtree(scan_dir)
    scan_dir.mkdir()
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{ref}:src/linewarden/scan"],
                           cwd=HERE.parent, capture_output=True, check=True, text=True)
    for name in names.stdout.split():
        blob = subprocess.run(["git", "show", f"{ref}:src/linewarden/scan/{name}"],
                              cwd=HERE.parent, capture_output=True, check=True)
        (scan_dir / name).write_bytes(blob.stdout)
    return root / "src"


def run_before(tree: Path, path: Path, workers: int) -> tuple[float, float]:
    """(wall MB/s, MB per CPU-s) of the scanner in `tree` on `path`, in its own process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", BEFORE_SCRIPT, str(path), str(workers)],
                          capture_output=True, check=True, env=env)
    size, wall, cpu = json.loads(proc.stdout.splitlines()[-1])
    return size / 1e6 / wall, size / 1e6 / cpu


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="big log size in MiB")
    ap.add_argument("--sample-mb", type=int, default=20, help="labeled sample size in MB")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds on the big logs")
    ap.add_argument("--skip-presidio", action="store_true")
    ap.add_argument("--before", metavar="REF", help="also run the scanner as of this git ref")
    args = ap.parse_args()
    tree = before_tree(args.before) if args.before else None
    cpus = os.cpu_count() or 1
    loads = [_load()]

    rows: list[str] = []
    ratios: list[str] = []
    notes: list[str] = []
    big: dict[str, Path] = {}
    baseline: dict[str, float] = {}  # "<corpus>-matcher" / "-presidio" -> MB per CPU-s
    for corpus in CORPORA:
        path, text, labels = sample(args.sample_mb, corpus)
        n_phone = sum(1 for lb in labels if lb.kind == MSISDN)
        lines = text.count(b"\n")
        notes.append(
            f"- {corpus}: {len(text) / 1e6:.1f} MB, {lines:,} lines, {len(labels):,} identities "
            f"of which {n_phone:,} phone numbers (one per {lines / max(n_phone, 1):.0f} lines), "
            f"{len({lb.value for lb in labels if lb.kind == MSISDN}):,} distinct."
        )
        print(notes[-1][2:])
        cold = run_linewarden_cold(path, labels)
        print(f"  linewarden cold, 1 worker: {cold['mbps']:.1f} MB/s "
              f"({cold['cpu_mbps']:.1f} per CPU-s) recall {cold['recall']:.4f} "
              f"precision {cold['precision']:.4f} exact {cold['exact_recall']:.4f}/"
              f"{cold['exact_precision']:.4f}")
        matcher = run_matcher(text, labels)
        print(f"  PhoneNumberMatcher line by line: {matcher['mbps']:.2f} MB/s "
              f"({matcher['cpu_mbps']:.2f} per CPU-s) recall {matcher['recall']:.4f} "
              f"precision {matcher['precision']:.4f}")
        presidio = None if args.skip_presidio else run_presidio(path, text, labels)
        if presidio:
            print(f"  Presidio phone analyzer: {presidio['mbps']:.3f} MB/s "
                  f"({presidio['cpu_mbps']:.3f} per CPU-s) recall {presidio['recall']:.4f} "
                  f"precision {presidio['precision']:.4f}")
        loads.append(_load())
        rows += [
            f"| {corpus} | linewarden, sample, 1 worker, cold memo | {cold['mbps']:.1f} | "
            f"{cold['cpu_mbps']:.1f} | {cold['recall']:.4f} | {cold['precision']:.4f} |",
            f"| {corpus} | PhoneNumberMatcher line by line (GB, VALID), sample | "
            f"{matcher['mbps']:.2f} | {matcher['cpu_mbps']:.2f} | {matcher['recall']:.4f} | "
            f"{matcher['precision']:.4f} |",
        ]
        if presidio:
            rows.append(
                f"| {corpus} | Presidio analyzer, phone only (GB), sample | "
                f"{presidio['mbps']:.3f} | {presidio['cpu_mbps']:.3f} | "
                f"{presidio['recall']:.4f} | {presidio['precision']:.4f} |"
            )
        ratio = cold["cpu_mbps"] / matcher["cpu_mbps"]
        ratios.append(f"- {corpus}, cold sample, per CPU-second: {ratio:.0f}x the matcher"
                      + (f", {cold['cpu_mbps'] / presidio['cpu_mbps']:.0f}x Presidio"
                         if presidio else ""))
        big[corpus] = big_file(text, args.size_mb, corpus)
        if presidio:
            baseline[corpus + "-presidio"] = presidio["cpu_mbps"]
        baseline[corpus + "-matcher"] = matcher["cpu_mbps"]

    # The big logs: one worker and all workers on both corpora, interleaved round by round
    # so that other load on the machine falls on every configuration alike.
    results: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    versions = ["now", "before"] if tree else ["now"]
    for round_no in range(args.repeat):
        for corpus in CORPORA:
            for workers in (1, cpus):
                for version in versions:
                    if version == "now":
                        wall, cpu = run_linewarden(big[corpus], workers)
                    else:
                        assert tree is not None
                        wall, cpu = run_before(tree, big[corpus], workers)
                    results.setdefault((corpus, workers, version), []).append((wall, cpu))
                    print(f"round {round_no + 1}: {corpus} {args.size_mb} MiB, {workers} "
                          f"worker(s), {version}: {wall:.1f} MB/s, {cpu:.1f} MB per CPU-s "
                          f"(load {_load()})")
        loads.append(_load())
    big_rows = []
    for corpus in CORPORA:
        for workers in (1, cpus):
            for version in versions:
                walls = [w for w, _ in results[(corpus, workers, version)]]
                cpu_rates = [c for _, c in results[(corpus, workers, version)]]
                wall, cpu = statistics.median(walls), statistics.median(cpu_rates)
                label = "linewarden" if version == "now" else f"linewarden before ({args.before})"
                big_rows.append(
                    f"| {corpus} | {label}, {args.size_mb} MiB log, {workers} worker"
                    f"{'s' if workers > 1 else ''} | {wall:.1f} | {cpu:.1f} | | |"
                )
            cpu = statistics.median(c for _, c in results[(corpus, workers, "now")])
            if tree:
                before_cpu = statistics.median(
                    c for _, c in results[(corpus, workers, "before")])
                ratios.append(f"- {corpus}, {args.size_mb} MiB log, {workers} worker(s): "
                              f"{cpu / before_cpu:.1f}x before, per CPU-second")
            if workers == 1:
                line = (f"- {corpus}, {args.size_mb} MiB log, 1 worker, per CPU-second: "
                        f"{cpu / baseline[corpus + '-matcher']:.0f}x the matcher")
                if corpus + "-presidio" in baseline:
                    line += f", {cpu / baseline[corpus + '-presidio']:.0f}x Presidio"
                ratios.append(line)
        one = statistics.median(w for w, _ in results[(corpus, 1, "now")])
        many = statistics.median(w for w, _ in results[(corpus, cpus, "now")])
        ratios.append(f"- {corpus}: {cpus} workers vs 1, wall clock: {many / one:.2f}x")

    doc = "\n".join([
        "# Log scanner benchmark",
        "",
        f"`.venv/bin/python bench/scan.py --size-mb {args.size_mb} --sample-mb {args.sample_mb}"
        f" --repeat {args.repeat}{' --before ' + args.before if args.before else ''}`"
        f" on {platform.processor() or platform.machine()}, {cpus} CPUs,"
        f" Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "The machine is shared (other engineers' tests run on it): load average (1/5/15 min)"
        f" at start and after each phase: {'; '.join(loads)}. Wall-clock MB/s therefore",
        "understates what a core does; MB per CPU-second (user + system time of the process "
        "and its workers) is the steadier figure, and the ratios below use it.",
        "",
        "Corpora (tests/scan/corpus.py, seed 2012); each 1 GiB log is its sample repeated, so "
        "its numbers recur (the validation memo hits after the first pass):",
        *notes,
        "",
        "Recall/precision: phone-number labels, a result overlapping a label counts; "
        "linewarden is also checked exactly (span, kind and canonical value, every kind) "
        "by tests/scan.",
        "",
        "| corpus | tool | MB/s (wall) | MB per CPU-s | recall | precision |",
        "|---|---|---|---|---|---|",
        *big_rows,
        *rows,
        "",
        "Ratios (one run, same machine, same load):",
        "",
        *ratios,
        "",
    ])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(doc)
    print(doc)
    print(f"written to {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
