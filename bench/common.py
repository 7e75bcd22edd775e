"""Helpers shared by the benchmarks: timed child runs with peak memory, seeded homes, RESULTS.md."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONUNBUFFERED="1")
MLOPS = REPO / ".venv" / "bin" / "mlops"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure(name: str, cmd: list, log_file: Path, echo=lambda line: True, env=None) -> dict:
    """Runs `cmd`, logging all output and echoing some; returns seconds, exit code, peak RSS, lines.

    Peak RSS two ways: the kernel's max RSS of the child or any descendant it waited for (os.wait4
    on this child alone, exact, no sampling) and the polled sum over the process tree (psutil).
    """
    log(f"{name}: start")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env or CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tree_peak, done = [0], threading.Event()

    def poll():
        while not done.wait(0.2):
            try:
                root = psutil.Process(proc.pid)
                total = sum(p.memory_info().rss for p in [root] + root.children(recursive=True))
            except psutil.Error:  # a process ended between listing and reading: skip this sample
                continue
            tree_peak[0] = max(tree_peak[0], total)

    threading.Thread(target=poll, daemon=True).start()
    lines = []
    with open(log_file, "w") as out:
        for line in proc.stdout:
            out.write(line)
            lines.append(line.rstrip("\n"))
            if echo(lines[-1]):
                print(f"    | {lines[-1]}", flush=True)
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone (fresh per run)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    seconds = time.monotonic() - start
    log(f"{name}: end in {seconds:.1f}s (exit {proc.returncode}, log {log_file})")
    if proc.returncode != 0:
        print("\n".join(lines[-30:]), flush=True)
    return dict(seconds=seconds, code=proc.returncode, lines=lines,
                rss_mb=usage.ru_maxrss / 1024, tree_mb=tree_peak[0] / 2**20)


def count_rows(path: Path) -> int:
    with open(path, newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def seed_home(home: Path, rows: int, date: str, days: int = 1) -> Path:
    """A project home with `days` spans of `rows` rows each, the last one on `date`; checks every
    seeded row count and returns the last span's CSV."""
    (home / "schemas" / "taxi").mkdir(parents=True)
    shutil.copy(REPO / "schemas" / "taxi" / "schema.pbtxt", home / "schemas" / "taxi" / "schema.pbtxt")
    cmd = [str(MLOPS), "--home", str(home), "data", "seed", "--days", str(days), "--rows-per-day", str(rows),
           "--end", date]
    subprocess.run(cmd, check=True, env=CHILD_ENV)
    for span_csv in sorted((home / "data" / "incoming").glob("*/data.csv")):
        found = count_rows(span_csv)
        if found != rows:
            raise SystemExit(f"seeded {found} rows in {span_csv}, expected {rows}")
    return home / "data" / "incoming" / date / "data.csv"


def write_section(path: Path, heading: str, section: str) -> None:
    """Replaces only our section (up to the next `## ` heading) or appends it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.M | re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def publish(results: Path, heading: str, section: str, tmp: Path, keep: bool) -> None:
    """Writes the section to RESULTS.md, prints it, and removes the temp dir unless asked to keep it."""
    publish_sections(results, [(heading, section)], tmp, keep)


def publish_sections(results: Path, sections: list, tmp: Path, keep: bool) -> None:
    """publish() for several (heading, section) pairs of one benchmark run; the temp dir goes last."""
    for heading, section in sections:
        write_section(results, heading, section)
        print(section, flush=True)
    log(f"wrote {', '.join(heading for heading, _ in sections)} to {results}")
    if keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp)


def seed_span(home: Path, rows: int, date: str, seed: int = 42) -> Path:
    """One span of `rows` rows on `date` (`mlops data seed --days 1 --seed`), in a home made like
    seed_home's if it is new; checks that span's row count and returns its CSV. Spans of different
    sizes in one home take one call each (a different `seed` keeps their rows apart)."""
    schema = home / "schemas" / "taxi" / "schema.pbtxt"
    if not schema.exists():
        schema.parent.mkdir(parents=True)
        shutil.copy(REPO / "schemas" / "taxi" / "schema.pbtxt", schema)
    cmd = [str(MLOPS), "--home", str(home), "data", "seed", "--days", "1", "--rows-per-day", str(rows),
           "--end", date, "--seed", str(seed)]
    subprocess.run(cmd, check=True, env=CHILD_ENV)
    span_csv = home / "data" / "incoming" / date / "data.csv"
    found = count_rows(span_csv)
    if found != rows:
        raise SystemExit(f"seeded {found} rows in {span_csv}, expected {rows}")
    return span_csv


def terminate(proc, timeout: float = 30) -> None:
    """SIGTERM a server subprocess that still runs, wait `timeout` seconds for it, then SIGKILL."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
