"""Wall time of `tai demo` in a fresh workspace, after install (median of several runs).

    .venv/bin/python benchmarks/demo_time.py [--repeats 3] [--against CHECKOUT]

Each run uses a new temporary workspace, so it includes the sample import, both
pipeline runs, the data change and the process start-up (imports, Prefect's server).
Also prints the median of each stage's own "<stage> done in N s" line (output not on a
terminal), in the order the demo runs them: a profile per stage. With ``--timeline`` each
line the demo prints is shown with the second it came (unbuffered), which shows the time
outside the stages: start-up, the data change, the summary.

With ``--against CHECKOUT`` (e.g. ``git worktree add /tmp/old <commit>``) each repeat also
runs that checkout's code (first on ``PYTHONPATH``, same environment), alternating with
this one so that both see the same load, and prints both medians and their ratio: the
host's speed changes by the hour, so only times measured side by side compare.
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = re.compile(r"^\s*(.+?) done in ([\d.]+) s$", re.M)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeline", action="store_true", help="stamp every output line")
    parser.add_argument("--against", type=Path, help="a checkout of the code to compare with")
    args = parser.parse_args()
    tai = shutil.which("tai", path=str(Path(sys.executable).parent))
    times, reference_times = [], []
    stages: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        if args.against is not None:
            reference_times.append(_demo(tai, args.against, stamp=args.timeline)[0])
        seconds, out = _demo(tai, None, stamp=args.timeline)
        times.append(seconds)
        seen: dict[str, int] = {}
        for name, stage_seconds in STAGE.findall(out):
            seen[name] = seen.get(name, 0) + 1
            key = f"{name} ({seen[name]})" if seen[name] > 1 else name
            stages.setdefault(key, []).append(float(stage_seconds))
    print(f"runs: {[round(t, 1) for t in times]}")
    if reference_times:
        reference = statistics.median(reference_times)
        print(
            f"runs of {args.against}: {[round(t, 1) for t in reference_times]}; median "
            f"{reference:.1f} s against {statistics.median(times):.1f} s: ratio "
            f"{reference / statistics.median(times):.2f}x"
        )
    print("| stage | median s |\n| --- | ---: |")
    for key, values in stages.items():
        print(f"| {key} | {statistics.median(values):.1f} |")
    print(f"| sum of the stages | {sum(statistics.median(v) for v in stages.values()):.1f} |")
    print(
        f"| tai demo, fresh workspace | {statistics.median(times):.0f} s (median of {len(times)}) |"
    )


def _demo(tai: str, checkout: Path | None, *, stamp: bool) -> tuple[float, str]:
    """One `tai demo` in a new workspace (of ``checkout``'s code when given): its seconds
    and its output."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("TAI_", "PREFECT_", "MLFLOW_"))
        }
        env["TAI_POLICY_FILE"] = str(ROOT / "tai-policy.yaml")
        env["PYTHONUNBUFFERED"] = "1"  # each line when it is written, for --timeline
        if checkout is not None:
            env["PYTHONPATH"] = str(checkout.resolve())
        start = time.perf_counter()
        code, out = _run([tai, "demo"], tmp, env, start, stamp=stamp)
        if code != 0:
            sys.exit(f"tai demo failed:\n{out[-4000:]}")
        return time.perf_counter() - start, out


def _run(command: list[str], cwd: str, env: dict, start: float, *, stamp: bool) -> tuple[int, str]:
    """Run ``command``; its exit code and its stdout and stderr interleaved as they came,
    each line printed with the seconds since ``start`` when ``stamp``."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    selector = selectors.DefaultSelector()
    for stream in (proc.stdout, proc.stderr):
        selector.register(stream, selectors.EVENT_READ, b"")
    lines = []
    while selector.get_map():
        for key, _ in selector.select():
            # What the pipe holds now, read from its descriptor: a buffered readline could
            # keep a second line in Python's buffer, unstamped until more output came.
            chunk = os.read(key.fileobj.fileno(), 65536)
            pending = key.data + chunk
            *complete, rest = pending.split(b"\n")
            if not chunk:  # the stream ended: its last line, if unterminated
                complete, rest = [rest] if rest else [], b""
                selector.unregister(key.fileobj)
            else:
                selector.modify(key.fileobj, selectors.EVENT_READ, rest)
            for line in complete:
                text = line.decode(errors="replace").rstrip()
                lines.append(text)
                if stamp:
                    print(f"{time.perf_counter() - start:7.2f}  {text[:110]}", flush=True)
    code = proc.wait()
    if stamp:
        print(f"{time.perf_counter() - start:7.2f}  (exit {code})", flush=True)
    return code, "\n".join(lines)


if __name__ == "__main__":
    main()
