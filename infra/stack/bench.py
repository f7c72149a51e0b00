"""Numbers for BENCHMARKS.md, measured on a running stack (``python -m infra.stack up``):

- **merge to registered version**: ``tai data merge`` of a branch that adds a few images, until
  the version of the merge commit is registered on the MLflow server (the worker ran the
  on-data-merge deployment), against ``tai run --commit`` of the same commit in-process on the
  embedded stack (Oxen, MLflow on SQLite, Prefect's temporary server) in a workspace of its
  own; median of ``--runs`` each, interleaved, and their ratio;
- **webhook throughput**: bursts of ``--requests`` post-merge calls (each a new commit of the
  repository ``bench``, which no deployment listens to) from 1, 4, 16 and 32 concurrent
  clients; requests per second of each burst and whether every answer was right (202 with
  an event id); median of ``--bursts`` bursts per level.

The machine's load average is printed before and after. Every loop is bounded in count and
time; only 127.0.0.1 is contacted.

Usage: ``python -m infra.stack.bench [--state FILE] [--runs 3] [--requests 300] [--bursts 3]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from infra.stack.stack import Stack

SECRET_HEADER = "X-TAI-Webhook-Secret"


def _tai(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 900) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tai"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"tai {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def _write_tiny(root: Path, counts: dict[str, int], seed: int, size: int = 16) -> None:
    """The integration tests' tiny dataset (tests/conftest.py): class k is a bright square in
    the k-th corner of a dim noisy background, ``root/tiny/<split>/<k>/<i>.png``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    corners = [(0, 0), (0, size // 2), (size // 2, 0)]
    for split, n in counts.items():
        for k, (r, c) in enumerate(corners):
            folder = root / "tiny" / split / str(k)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = (rng.random((size, size)) * 60).astype(np.uint8)
                img[r : r + size // 2, c : c + size // 2] = 230
                Image.fromarray(img, mode="L").save(folder / f"{i}.png")


def _new_images(folder: Path, name: str, seed: int) -> Path:
    _write_tiny(folder, {"train": 3}, seed)
    for png in folder.rglob("*.png"):
        png.rename(png.with_name(f"{name}-{png.name}"))
    return folder / "tiny"


def merge_to_registered(stack: Stack, work: Path, runs: int) -> dict:
    from mlflow import MlflowClient

    env = stack.client_env()
    client = MlflowClient(stack.urls["mlflow"])
    embedded_ws = work / "embedded"
    embedded_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TAI_", "PREFECT_", "MLFLOW_"))
    }
    embedded_env.update(
        {k: v for k, v in stack.state["settings_env"].items() if k.startswith("TAI_")}
    )
    embedded_env["TAI_WORKSPACE"] = str(embedded_ws / ".tai")
    embedded_env["TAI_DATA_STORE"] = "oxen"
    (embedded_ws).mkdir(parents=True, exist_ok=True)
    if not (stack.workspace / "data" / "data" / ".oxen").is_dir():
        _tai(["data", "init"], env, work)
        _write_tiny(work / "base", {"train": 40, "val": 15, "test": 15}, seed=0)
        _tai(["data", "commit", str(work / "base"), "--branch", "main", "-m", "tiny"], env, work)
    model = stack.state["settings_env"].get("TAI_REGISTERED_MODEL_NAME", "tai-classifier")
    stack_s, embedded_s = [], []
    for i in range(runs):
        name = f"bench-{uuid.uuid4().hex[:6]}"
        images = _new_images(work / name, name, seed=100 + i)
        _tai(["data", "branch", name], env, work)
        _tai(
            ["data", "commit", str(images), "--branch", name, "--prefix", "tiny", "-m", name],
            env,
            work,
        )
        started = time.monotonic()
        out = _tai(["data", "merge", name], env, work)
        commit = next(x for x in out.splitlines() if x.startswith("merged ")).rsplit(": ", 1)[1]
        deadline = started + 900
        while time.monotonic() < deadline:
            found = client.search_model_versions(f"name='{model}'")
            if any(v.tags.get("tai.data.commit") == commit for v in found):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"no version of {commit} after 900 s")
        stack_s.append(time.monotonic() - started)
        # The same commit, in-process on the embedded stack: a copy of the data at that
        # commit committed to a workspace of its own, then `tai run --commit`.
        source = next((stack.workspace / "cache" / "data" / "oxen" / "data").glob(f"{commit}*"))
        if not (embedded_ws / ".tai" / "data" / "data" / ".oxen").is_dir():
            _tai(["data", "init"], embedded_env, embedded_ws)
        copy = work / f"{name}-copy"
        shutil.copytree(source, copy)
        out = _tai(
            ["data", "commit", str(copy), "--branch", "main", "-m", name], embedded_env, embedded_ws
        )
        local_commit = out.strip().rsplit(": ", 1)[1]
        started = time.monotonic()
        _tai(["run", "--commit", local_commit], embedded_env, embedded_ws)
        embedded_s.append(time.monotonic() - started)
        print(
            f"run {i + 1}: stack {stack_s[-1]:.1f} s, embedded {embedded_s[-1]:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    stack_m, embedded_m = statistics.median(stack_s), statistics.median(embedded_s)
    return {
        "stack_merge_to_registered_s": [round(x, 1) for x in stack_s],
        "embedded_tai_run_s": [round(x, 1) for x in embedded_s],
        "median_stack_s": round(stack_m, 1),
        "median_embedded_s": round(embedded_m, 1),
        "ratio_stack_over_embedded": round(stack_m / embedded_m, 2),
    }


def webhook_throughput(stack: Stack, requests: int, bursts: int) -> dict:
    url = stack.urls["webhook"]
    headers = {SECRET_HEADER: stack.webhook_secret}
    levels = {}
    for concurrency in (1, 4, 16, 32):
        rates, all_right = [], True
        for _ in range(bursts):
            commits = [uuid.uuid4().hex for _ in range(requests)]
            clients = [httpx.Client(base_url=url, timeout=60) for _ in range(concurrency)]

            def post(i: int, commits=commits, clients=clients, n=concurrency) -> bool:
                body = {
                    "event_type": "post-merge",
                    "repository_id": "bench",
                    "branch_id": "main",
                    "commit_id": commits[i],
                }
                r = clients[i % n].post("/webhooks/lakefs", json=body, headers=headers)
                return r.status_code == 202 and bool(r.json().get("event_id"))

            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                answers = list(pool.map(post, range(requests), timeout=600))
            elapsed = time.monotonic() - started
            for c in clients:
                c.close()
            rates.append(requests / elapsed)
            all_right = all_right and all(answers)
        levels[str(concurrency)] = {
            "rps_median": round(statistics.median(rates), 1),
            "rps": [round(r, 1) for r in rates],
            "every_answer_right": all_right,
        }
        print(f"webhook, {concurrency} clients: {levels[str(concurrency)]}", file=sys.stderr)
    good = [v["rps_median"] for v in levels.values() if v["every_answer_right"]]
    return {"levels": levels, "best_rps_all_right": max(good) if good else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack.bench")
    parser.add_argument("--state", help="the stack's state file (default: the last started)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-webhook", action="store_true")
    args = parser.parse_args(argv)
    stack = Stack.load(args.state)
    result: dict = {"load_before": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="tai-bench-") as tmp:
        if not args.skip_pipeline:
            result["pipeline"] = merge_to_registered(stack, Path(tmp), args.runs)
        if not args.skip_webhook:
            result["webhook"] = webhook_throughput(stack, args.requests, args.bursts)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
