"""The benchmark harness works (quick mode: small data, one run); the timings are not tested."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_orchestration_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "orchestration", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "| arrowline/chain |" in done.stdout
    path = Path(done.stdout.strip().splitlines()[-1].removeprefix("results: "))
    assert path.name.endswith("-quick.json")
    payload = json.loads(path.read_text())
    arrowline = next(o for o in payload["outcomes"] if o["contender"] == "arrowline/chain")
    assert arrowline["error"] is None
    sample = arrowline["samples"][0]
    assert (
        sample["reported"]["transitions"] == 100 * 3 + 3
    )  # every task's transitions were committed
    assert sample["peak_rss_mb"] > 0
    assert sample["cpu_s"] > 0
    assert payload["machine"]["cores"] >= 1
    path.unlink()  # a quick run is not a result worth keeping
