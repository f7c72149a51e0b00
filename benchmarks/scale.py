"""Wall time per stage and peak memory of `tai run` on generated image folders.

    .venv/bin/python benchmarks/scale.py --images 5000 --size 64
    .venv/bin/python benchmarks/scale.py --images 5000 --size 224 --mixed
    .venv/bin/python benchmarks/scale.py --images 5000 --size 64 --model resnet18
    .venv/bin/python benchmarks/scale.py --images 2000 --size 64 --reruns 3

A data set of coloured shapes (disc, square, triangle, cross) on noisy backgrounds, RGB
PNGs, split 70/15/15, is written to a temporary folder (``--mixed``: each image of a
random size between 0.6x and 1.4x ``--size`` on each side, so the pipeline must resize
and crop). It is committed to a new embedded workspace and `tai run` trains on it once
(``TAI_MAX_EPOCHS``, default 1). Peak memory is the largest sum, over the `tai run`
process and its children (DataLoader workers, Prefect's temporary server), of their
proportional set sizes (PSS: shared pages split between the processes), sampled
every 0.2 s; the stage times are the run's own "<stage> done in N s" lines. Nothing is
downloaded; one row per call, printed as a Markdown table row.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ("disc", "square", "triangle", "cross")
SPLITS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
SAMPLE_S = 0.2
MAX_RUN_S = 3 * 3600  # every wait is bounded


def shape_image(rng: np.random.Generator, shape: str, height: int, width: int) -> Image.Image:
    """One RGB image: a shape of a random colour, size and place on a noisy background."""
    background = rng.integers(0, 256, 3)
    noise = rng.normal(0, 25, (height, width, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    side = min(height, width)
    r = rng.uniform(0.2, 0.4) * side
    cy, cx = rng.uniform(r, height - r), rng.uniform(r, width - r)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        w = r / 3
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
    return image


def write_dataset(folder: Path, n_images: int, size: int, mixed: bool, seed: int = 0) -> None:
    """``n_images`` shape images under ``folder/<split>/<shape>/``, classes balanced."""
    rng = np.random.default_rng(seed)
    per_class = n_images // len(SHAPES)
    for shape in SHAPES:
        start = 0
        for split, share in SPLITS:
            count = round(per_class * share) if split != "test" else per_class - start
            out = folder / split / shape
            out.mkdir(parents=True, exist_ok=True)
            for i in range(start, start + count):
                h, w = (size, size)
                if mixed:
                    h, w = (int(size * f) for f in rng.uniform(0.6, 1.4, 2))
                shape_image(rng, shape, h, w).save(out / f"{i}.png")
            start += count


# A line the run prints when a stage or an evaluation check ends: "<stage> done in N s" or
# "evaluation: <check> N s (k/n)". The peak since the previous such line is that stage's.
_STAGE_END = re.compile(
    r"^(?:([a-z][a-z ]*?) done in [\d.]+ s|evaluation: (\S+) [\d.]+ s \(\d+/\d+\))$"
)


def peak_tree_rss(
    proc: subprocess.Popen, log: Path
) -> tuple[int, float, dict[str, int], list[tuple[str, int]]]:
    """Wait for ``proc``; the largest summed PSS of it and its children, the wall time, the
    peak of each process (by its command line), and the peak of the whole tree during each
    stage, in order (from the stage lines ``proc`` writes to ``log``)."""
    parent = psutil.Process(proc.pid)
    peak, start = 0, time.perf_counter()
    each: dict[str, int] = {}
    stages: list[tuple[str, int]] = []
    stage_peak, last, pending = 0, 0, ""
    reader = log.open(errors="replace")
    while proc.poll() is None:
        if time.perf_counter() - start > MAX_RUN_S:
            proc.kill()
            sys.exit(f"tai run took more than {MAX_RUN_S} s; stopped")
        try:
            tree = [parent, *parent.children(recursive=True)]
            # PSS, not RSS: forked DataLoader workers share the parent's pages, and
            # summing their RSS would count those pages once per worker.
            rss = {
                f"{p.pid} {' '.join(p.cmdline()[:4])[:90]}": p.memory_full_info().pss for p in tree
            }
            total = sum(rss.values())
            peak, stage_peak, last = max(peak, total), max(stage_peak, total), total
            for name, value in rss.items():
                each[name] = max(each.get(name, 0), value)
        except psutil.Error:
            pass
        *lines, pending = (pending + reader.read()).split("\n")
        for line in lines:
            ended = _STAGE_END.match(line.strip())
            if ended:
                stages.append((ended.group(1) or f"check {ended.group(2)}", stage_peak))
                stage_peak = last  # a stage shorter than a sample still holds this
        time.sleep(SAMPLE_S)
    reader.close()
    return peak, time.perf_counter() - start, each, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--mixed", action="store_true", help="images of mixed original sizes")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="TAI_NUM_WORKERS")
    parser.add_argument("--budget", type=int, help="TAI_TAI_BUDGET (default: the setting's)")
    parser.add_argument("--keep", type=Path, help="keep the workspace here")
    parser.add_argument(
        "--reruns", type=int, default=0, help="then time N unchanged re-runs (median printed)"
    )
    args = parser.parse_args()
    tai = shutil.which("tai", path=str(Path(sys.executable).parent))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = Path(tmp) / "shapes"
        t0 = time.perf_counter()
        write_dataset(data, args.images, args.size, args.mixed)
        generated = time.perf_counter() - t0
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TAI_", "MLFLOW_"))}
        env.update(
            TAI_POLICY_FILE=str(ROOT / "tai-policy.yaml"),
            TAI_DATASET="shapes",
            TAI_MODEL=args.model,
            TAI_MAX_EPOCHS=str(args.epochs),
            TAI_NUM_WORKERS=str(args.workers),
            TAI_IMAGE_SIZE=str(args.size),
            TAI_AUGMENT="crop-flip",
        )
        if args.budget is not None:
            env["TAI_TAI_BUDGET"] = str(args.budget)  # the setting `tai_budget`

        def tai_cmd(*argv: str) -> None:
            done = subprocess.run([tai, *argv], cwd=work, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"tai {' '.join(argv)} failed:\n{done.stderr[-3000:]}")

        t0 = time.perf_counter()
        tai_cmd("data", "init")
        tai_cmd(
            "data", "commit", str(data), "--branch", "main", "-m", "shapes", "--prefix", "shapes"
        )
        committed = time.perf_counter() - t0
        log = Path(tmp) / "run.log"
        with log.open("w") as err:
            proc = subprocess.Popen([tai, "run"], cwd=work, env=env, stdout=err, stderr=err)
            peak, wall, each, stage_peaks = peak_tree_rss(proc, log)
        text = log.read_text()
        if args.keep:
            (work / "run.log").write_text(text)
        if proc.returncode != 0:
            sys.exit(f"tai run failed ({proc.returncode}):\n{text[-3000:]}")
        reruns = []
        for _ in range(args.reruns):
            # The same commit, code and settings: the run must answer with the version.
            t0 = time.perf_counter()
            again = subprocess.run([tai, "run"], cwd=work, env=env, capture_output=True, text=True)
            reruns.append(time.perf_counter() - t0)
            if again.returncode != 0 or "unchanged" not in again.stdout:
                sys.exit(f"the unchanged re-run did not reuse the version:\n{again.stdout[-2000:]}")
    stages = dict(re.findall(r"^([a-z][a-z ]*?) done in ([\d.]+) s$", text, re.M))
    label = f"{args.images:,} RGB {args.size}x{args.size}"
    label += " (mixed sizes)" if args.mixed else ""
    label += f", TAI_TAI_BUDGET={args.budget}" if args.budget is not None else ""
    for name, value in sorted(each.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  peak {value / 2**30:.2f} GB  {name}")
    print(f"load: {os.getloadavg()[0]:.1f}; generate {generated:.0f} s; commit {committed:.0f} s")
    by_stage = ", ".join(f"{k} {v / 2**30:.2f} GB" for k, v in stage_peaks)
    print(f"peak of the tree by stage: {by_stage}")
    if reruns:
        each_s = ", ".join(f"{r:.1f}" for r in reruns)
        print(f"unchanged re-run: median {statistics.median(reruns):.1f} s ({each_s})")
    print(
        f"| {label} | {args.model} | {wall:.0f} s | "
        + ", ".join(f"{k} {float(v):.0f}" for k, v in stages.items())
        + f" | {peak / 2**30:.2f} GB |"
    )


if __name__ == "__main__":
    main()
