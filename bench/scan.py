"""Log scanner throughput and accuracy, side by side with the usual alternatives.

    .venv/bin/python bench/scan.py [--size-mb 1024] [--sample-mb 20] [--skip-presidio]

- linewarden on a generated 1 GiB log (the 20 MB labeled sample repeated), one worker and
  all workers, through the same code path as `linewarden scan`;
- on the 20 MB labeled sample: linewarden cold (one worker, empty memo),
  `phonenumbers.PhoneNumberMatcher` run line by line (region GB, leniency VALID), and
  Presidio's analyzer with only its phone recognizer (region GB; spaCy blank English
  pipeline, since no model can be downloaded here), each with recall and precision on the
  sample's phone-number labels.

Presidio lives in bench/.venv-presidio, created here on first use; it is never a project
dependency. Prints the figures and writes them to bench/results/scan.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
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
started = time.perf_counter()
for line in data.split(b"\n"):
    text = line.decode("latin-1")
    for r in engine.analyze(text, language="en", entities=["PHONE_NUMBER"]):
        spans.append((offset + r.start, offset + r.end))
    offset += len(line) + 1
print(json.dumps({"seconds": time.perf_counter() - started, "spans": spans}))
"""


def _ignored_dir(path: Path) -> None:
    """Create a generated directory that git ignores by itself (a `*` .gitignore inside)."""
    path.mkdir(exist_ok=True)
    (path / ".gitignore").write_text("*\n")


def sample(sample_mb: int) -> tuple[Path, bytes, list[Label]]:
    _ignored_dir(DATA)
    path = DATA / f"scan-sample-{sample_mb}mb.log"
    labels_path = path.with_suffix(".labels.json")
    if path.exists() and labels_path.exists():
        labels = [Label(*x) for x in json.loads(labels_path.read_text())]
        return path, path.read_bytes(), labels
    text, labels = build_to(sample_mb * 1_000_000, seed=2012)
    path.write_bytes(text)
    labels_path.write_text(json.dumps([[lb.start, lb.end, lb.kind, lb.value] for lb in labels]))
    return path, text, labels


def big_file(text: bytes, size_mb: int) -> Path:
    path = DATA / f"scan-{size_mb}mb.log"
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
    recall, precision = score(spans, labels)
    return {"mbps": offset / 1e6 / seconds, "recall": recall, "precision": precision,
            "exact_recall": exact / len(labels), "exact_precision": exact / max(total, 1)}


def run_linewarden(path: Path, workers: int) -> float:
    started = time.perf_counter()
    (report,) = scan_paths([str(path)], ScanOptions(regions=("GB",), workers=workers))
    seconds = time.perf_counter() - started
    assert report.error is None and report.findings > 0
    return report.size / 1e6 / seconds


def run_matcher(text: bytes, labels: list[Label]) -> dict[str, float]:
    spans: list[tuple[int, int]] = []
    offset = 0
    started = time.perf_counter()
    for line in text.split(b"\n"):
        s = line.decode("latin-1")
        for m in phonenumbers.PhoneNumberMatcher(s, "GB", phonenumbers.Leniency.VALID):
            spans.append((offset + m.start, offset + m.end))
        offset += len(line) + 1
    seconds = time.perf_counter() - started
    recall, precision = score(spans, labels)
    return {"mbps": len(text) / 1e6 / seconds, "recall": recall, "precision": precision}


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
    spans = [tuple(s) for s in out["spans"]]
    recall, precision = score(spans, labels)  # type: ignore[arg-type]
    return {"mbps": len(text) / 1e6 / out["seconds"], "recall": recall, "precision": precision}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="big log size in MiB")
    ap.add_argument("--sample-mb", type=int, default=20, help="labeled sample size in MB")
    ap.add_argument("--skip-presidio", action="store_true")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1

    path, text, labels = sample(args.sample_mb)
    n_phone = sum(1 for lb in labels if lb.kind == MSISDN)
    print(f"sample: {len(text) / 1e6:.1f} MB, {len(labels):,} labels ({n_phone:,} phone numbers)")
    cold = run_linewarden_cold(path, labels)
    print(f"linewarden cold, 1 worker, sample: {cold['mbps']:.1f} MB/s "
          f"recall {cold['recall']:.4f} precision {cold['precision']:.4f}")
    matcher = run_matcher(text, labels)
    print(f"PhoneNumberMatcher line by line: {matcher['mbps']:.2f} MB/s "
          f"recall {matcher['recall']:.4f} precision {matcher['precision']:.4f}")
    presidio = None if args.skip_presidio else run_presidio(path, text, labels)
    if presidio:
        print(f"Presidio phone analyzer: {presidio['mbps']:.3f} MB/s "
              f"recall {presidio['recall']:.4f} precision {presidio['precision']:.4f}")
    big = big_file(text, args.size_mb)
    one = run_linewarden(big, 1)
    print(f"linewarden, {args.size_mb} MiB log, 1 worker: {one:.1f} MB/s")
    many = run_linewarden(big, cpus)
    print(f"linewarden, {args.size_mb} MiB log, {cpus} workers: {many:.1f} MB/s")

    rows = [
        f"| linewarden, {args.size_mb} MiB log, 1 worker | {one:.1f} | | |",
        f"| linewarden, {args.size_mb} MiB log, {cpus} workers | {many:.1f} | | |",
        f"| linewarden, sample, 1 worker, cold memo | {cold['mbps']:.1f} | "
        f"{cold['recall']:.4f} | {cold['precision']:.4f} |",
        f"| PhoneNumberMatcher line by line (GB, VALID), sample | {matcher['mbps']:.2f} | "
        f"{matcher['recall']:.4f} | {matcher['precision']:.4f} |",
    ]
    if presidio:
        rows.append(f"| Presidio analyzer, phone only (GB), sample | {presidio['mbps']:.3f} | "
                    f"{presidio['recall']:.4f} | {presidio['precision']:.4f} |")
    ratios = [f"- vs line-by-line PhoneNumberMatcher: {one / matcher['mbps']:.0f}x (1 worker)"]
    if presidio:
        ratios.append(f"- vs Presidio: {one / presidio['mbps']:.0f}x (1 worker)")
    doc = "\n".join([
        "# Log scanner benchmark",
        "",
        f"`.venv/bin/python bench/scan.py --size-mb {args.size_mb} --sample-mb {args.sample_mb}`"
        f" on {platform.processor() or platform.machine()}, {cpus} CPUs, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
        "",
        f"Labeled sample: {len(text) / 1e6:.1f} MB, {len(labels):,} identities of which "
        f"{n_phone:,} phone numbers (tests/scan/corpus.py, seed 2012). The big log is the "
        "sample repeated, so its numbers recur as subscribers do in real logs (the "
        "validation memo then hits); the cold row is the first pass with an empty memo.",
        "Recall/precision: phone-number labels, a result overlapping a label counts. "
        f"linewarden exact (span, kind and canonical value, all kinds): recall "
        f"{cold['exact_recall']:.4f}, precision {cold['exact_precision']:.4f}.",
        "",
        "| tool | MB/s | recall | precision |",
        "|---|---|---|---|",
        *rows,
        "",
        *ratios,
        "",
    ])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(doc)
    print(f"written to {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
