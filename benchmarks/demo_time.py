"""Wall time of `tai demo` in a fresh workspace, after install (median of several runs).

    .venv/bin/python benchmarks/demo_time.py [--repeats 3]

Each run uses a new temporary workspace, so it includes the sample import, both
pipeline runs, the data change and the process start-up (imports, Prefect's server).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tai = shutil.which("tai", path=str(Path(sys.executable).parent))
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("TAI_", "PREFECT_", "MLFLOW_"))
            }
            env["TAI_POLICY_FILE"] = str(ROOT / "tai-policy.yaml")
            start = time.perf_counter()
            done = subprocess.run([tai, "demo"], cwd=tmp, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"tai demo failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
            times.append(time.perf_counter() - start)
    print(f"runs: {[round(t, 1) for t in times]}")
    print(
        f"| tai demo, fresh workspace | {statistics.median(times):.0f} s (median of {len(times)}) |"
    )


if __name__ == "__main__":
    main()
