"""Throughput of the corruption suite: tai.principles.reliability.corruptions against
imagecorruptions, on CPU.

Both corrupt the same RGB images with every corruption at every severity (19 x 5). Ours
takes the batch at once; imagecorruptions takes one HWC uint8 image per call. Reported in
images per second (one image through one corruption at one severity), the median of
``--runs`` runs, per corruption and for the whole suite, with the ratio ours / reference.

imagecorruptions 1.1.2 cannot compute fog, glass_blur and gaussian_blur with numpy 2 and
scikit-image >= 0.19; they are timed through the minimal shim the reference test uses
(``np.float_`` restored, ``multichannel=True`` mapped to ``channel_axis=-1``), marked
"(shim)". Nothing else is changed: frost reads its photograph on every call, as shipped.

Run: .venv/bin/python benchmarks/corruption_throughput.py [--runs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
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


def _time(fn, runs: int) -> float:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reference, shimmed = _reference()

    rows: dict[str, list[str]] = {name: [] for name in NAMES}
    totals, without_glass = [], []
    for size, n in SETTINGS:
        images = _images(n, size)
        pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        corrupt(images, "contrast", 1)  # warm-up: first-call overheads
        ours_total = theirs_total = ours_glass = theirs_glass = 0.0
        for name in NAMES:

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

            t_ours, t_theirs = _time(ours, args.runs), _time(theirs, args.runs)
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
            print(f"  {size}px {name:18s} ours {t_ours:7.3f}s  reference {t_theirs:7.3f}s")
        calls = n * len(SEVERITIES) * len(NAMES)
        totals += [
            f"**{calls / ours_total:,.0f}**",
            f"**{calls / theirs_total:,.0f}**",
            f"**{theirs_total / ours_total:.1f}x**",
        ]
        # The reference's glass blur is a Python loop per pixel and dominates its total.
        calls -= n * len(SEVERITIES)
        ours_rest, theirs_rest = ours_total - ours_glass, theirs_total - theirs_glass
        without_glass += [
            f"{calls / ours_rest:,.0f}",
            f"{calls / theirs_rest:,.0f}",
            f"{theirs_rest / ours_rest:.1f}x",
        ]

    header = ["corruption"]
    for size, _ in SETTINGS:
        header += [f"ours {size}px img/s", f"reference {size}px img/s", "ratio"]
    print()
    print(
        f"CPU, torch threads = {args.threads}, median of {args.runs} runs; "
        + ", ".join(f"{n} images of {s}x{s}" for s, n in SETTINGS)
        + "; img/s = images through one corruption at one severity per second."
    )
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in NAMES:
        label = f"{name} (shim)" if name in shimmed else name
        print("| " + " | ".join([label, *rows[name]]) + " |")
    print("| " + " | ".join(["**whole suite (19 x 5)**", *totals]) + " |")
    print("| " + " | ".join(["suite without glass_blur (18 x 5)", *without_glass]) + " |")


if __name__ == "__main__":
    main()
