"""Throughput of the corruption suite: tai.principles.reliability.corruptions against
imagecorruptions, on CPU.

Both corrupt the same RGB images with every corruption at every severity (19 x 5). Ours
takes the batch at once; imagecorruptions takes one HWC uint8 image per call. Reported in
images per second (one image through one corruption at one severity), the median of
``--runs`` runs, per corruption and for the whole suite (with and without glass blur), with
the ratio reference time / our time (above 1: ours is faster). The runs of ours and of the
reference alternate, so that both see the same load on a shared machine; the load average
is printed before and after.

imagecorruptions 1.1.2 cannot compute fog, glass_blur and gaussian_blur with numpy 2 and
scikit-image >= 0.19; they are timed through the minimal shim the reference test uses
(``np.float_`` restored, ``multichannel=True`` mapped to ``channel_axis=-1``), marked
"(shim)". Nothing else is changed: frost reads its photograph on every call, as shipped.

Both sides run on ``--threads`` threads: torch's and OpenCV's (the reference calls OpenCV in
several corruptions; ours, where it is installed, in its Gaussian filters on images above
64 px, defocus blur from 96 x 96 px, and spatter's water drops).

Run: .venv/bin/python benchmarks/corruption_throughput.py [--runs 3] [--threads 1]
     [--sizes 32,224] [--names gaussian_noise,spatter]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch

from tai.principles.reliability.corruptions import (
    EXTRA_CORRUPTIONS,
    IMAGENET_C_CORRUPTIONS,
    SEVERITIES,
    corrupt,
)

NAMES = IMAGENET_C_CORRUPTIONS + EXTRA_CORRUPTIONS
SETTINGS = ((32, 64), (224, 8))  # (size, images)


def _images(n: int, size: int) -> torch.Tensor:
    """Smooth random colour fields with texture: blur and noise both have work to do."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    return (
        (smooth + 0.05 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1) * 255
    ).round() / 255


def _reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import imagecorruptions
        import imagecorruptions.corruptions as module
    from skimage.filters import gaussian

    shimmed = []
    probe = np.full((32, 32, 3), 128, dtype=np.uint8)
    for name in NAMES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imagecorruptions.corrupt(probe, severity=1, corruption_name=name)
        except Exception:
            shimmed.append(name)
    if shimmed:
        np.float_ = np.float64  # removed in numpy 2; fog's plasma fractal still uses it

        def gaussian_with_multichannel(image, sigma=1, multichannel=None, **kwargs):
            axis = -1 if multichannel else None
            return gaussian(image, sigma=sigma, channel_axis=axis, **kwargs)

        module.gaussian = gaussian_with_multichannel
    return imagecorruptions.corrupt, set(shimmed)


def _times(ours, theirs, runs: int) -> tuple[float, float]:
    """Median seconds of ``runs`` alternating runs of each."""
    mine, reference = [], []
    for _ in range(runs):
        for fn, seconds in ((ours, mine), (theirs, reference)):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
    return statistics.median(mine), statistics.median(reference)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV CPU threads")
    parser.add_argument("--sizes", default=",".join(str(s) for s, _ in SETTINGS))
    parser.add_argument("--names", default=",".join(NAMES), help="corruptions to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import cv2
    except ImportError:
        cv2 = None
    else:
        cv2.setNumThreads(args.threads)
    reference, shimmed = _reference()
    names = [name for name in NAMES if name in args.names.split(",")]
    settings = [(s, n) for s, n in SETTINGS if str(s) in args.sizes.split(",")]
    print(f"load average (1, 5, 15 min) before: {_load()}")

    rows: dict[str, list[str]] = {name: [] for name in names}
    totals, without_glass = [], []
    for size, n in settings:
        images = _images(n, size)
        pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for name in names:  # warm-up: first-call overheads (imports, caches) on both sides
            corrupt(images[:1], name, 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference(pixels[0], severity=1, corruption_name=name)
        ours_total = theirs_total = ours_glass = theirs_glass = 0.0
        for name in names:

            def ours(name=name, images=images):
                for severity in SEVERITIES:
                    corrupt(images, name, severity, seed=severity)

            def theirs(name=name, pixels=pixels):
                np.random.seed(0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for severity in SEVERITIES:
                        for image in pixels:
                            reference(image, severity=severity, corruption_name=name)

            t_ours, t_theirs = _times(ours, theirs, args.runs)
            ours_total += t_ours
            theirs_total += t_theirs
            if name == "glass_blur":
                ours_glass, theirs_glass = t_ours, t_theirs
            calls = n * len(SEVERITIES)
            rows[name] += [
                f"{calls / t_ours:,.0f}",
                f"{calls / t_theirs:,.0f}",
                f"{t_theirs / t_ours:.1f}x",
            ]
            print(
                f"  {size}px {name:18s} ours {t_ours:7.3f}s  reference {t_theirs:7.3f}s  "
                f"{t_theirs / t_ours:6.1f}x",
                flush=True,
            )
        calls = n * len(SEVERITIES) * len(names)
        totals += [
            f"**{calls / ours_total:,.0f}**",
            f"**{calls / theirs_total:,.0f}**",
            f"**{theirs_total / ours_total:.1f}x**",
        ]
        # The reference's glass blur is a Python loop per pixel and dominates its total.
        calls -= n * len(SEVERITIES) * ("glass_blur" in names)
        ours_rest, theirs_rest = ours_total - ours_glass, theirs_total - theirs_glass
        without_glass += [
            f"{calls / ours_rest:,.0f}",
            f"{calls / theirs_rest:,.0f}",
            f"{theirs_rest / ours_rest:.1f}x",
        ]

    print(f"load average (1, 5, 15 min) after: {_load()}")
    header = ["corruption"]
    for size, _ in settings:
        header += [f"ours {size}px img/s", f"reference {size}px img/s", "ratio"]
    print()
    print(
        f"CPU, torch and OpenCV threads = {args.threads}, median of {args.runs} runs; "
        + ", ".join(f"{n} images of {s}x{s}" for s, n in settings)
        + "; img/s = images through one corruption at one severity per second; "
        + "ratio = reference time / our time."
    )
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        label = f"{name} (shim)" if name in shimmed else name
        print("| " + " | ".join([label, *rows[name]]) + " |")
    print("| " + " | ".join([f"**whole suite ({len(names)} x 5)**", *totals]) + " |")
    if "glass_blur" in names:
        label = f"suite without glass_blur ({len(names) - 1} x 5)"
        print("| " + " | ".join([label, *without_glass]) + " |")


if __name__ == "__main__":
    main()
