"""bench/chaos.py end to end, briefly (issue 23 §1): random kill -9 of the driver's process group
or of one worker on the 12-run grid with checkpoints and Typhoon, then every score and prediction
compared with an undisturbed run. The figures in the README come from longer runs of the script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_random_kills_lose_duplicate_and_change_nothing(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), "--kills", "6", "--seed", "3",
                          "--max-wait", "30", "--keep", str(tmp_path / "chaos")],
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    m = re.search(r"^(\d+) kills: (\d+) lost, (\d+) duplicated, (\d+) differing from an undisturbed run, "
                  r"(\d+) resumed from checkpoints$", out.stdout, re.M)
    assert m, out.stdout
    assert m.group(1) == "6" and m.groups()[1:4] == ("0", "0", "0")
    assert "PRAGMA integrity_check: ok" in out.stdout
    assert re.search(r"^attempts per run: ", out.stdout, re.M)
