"""Every benchmark script answers ``--help`` (argparse formats each option's help, so a stray ``%`` fails here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "bench").glob("*.py") if "argparse" in p.read_text())

# One interpreter for all scripts (torch is imported once): run each as __main__ with --help, report failures.
CHECK = """
import contextlib, io, runpy, sys, traceback
failed = []
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(path, run_name="__main__")
        failed.append(f"{path}: --help did not exit")
    except SystemExit as e:
        if e.code not in (0, None):
            failed.append(f"{path}: exit {e.code}")
    except Exception:
        failed.append(f"{path}: {traceback.format_exc(limit=-1)}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_bench_script_answers_help():
    assert len(SCRIPTS) >= 5
    proc = subprocess.run([sys.executable, "-c", CHECK, *map(str, SCRIPTS)], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
