"""Common random numbers for ``test_corruption_reference.py``: the draws our corruptions make,
recorded, and served to ``imagecorruptions`` in place of ``numpy.random``.

Recording. :class:`RecordingTorch` stands in for the ``torch`` module inside
``tai.principles.reliability.corruptions`` and keeps every ``rand``, ``randn``, ``randint``
and ``poisson`` call with its arguments and result. Nothing is re-derived from a seed, so the
test cannot drift out of step with the order in which the module draws:
:func:`reference_draws` checks the recorded calls against what it expects and fails, naming
the calls it saw, when a corruption changes how it draws.

Replay. :class:`Replay` is the reference's ``np.random``. Each queued draw is a *standard*
draw (``N(0, 1)`` or ``U(0, 1)``), and each call maps it to the distribution the reference
asks for, with the reference's own arguments: ``normal(loc, scale)`` gives ``loc + scale z``,
``uniform(low, high)`` gives ``low + (high - low) u``, ``randint(low, high)`` gives
``low + floor((high - low) u)`` and ``poisson(lam)`` gives ``F_lam^-1(u)``. A parameter the
two implementations disagree on (a scale, a range, a rate) therefore shows in the pixels
instead of being replayed away. The replay is strict: the kind, the order and the shape of
every call must match ours, and the reference must use up all the draws.

Integers and counts become standard uniforms through their CDF: an integer ``o`` drawn by
``torch.randint(low, high)`` is ``u = (o - low + 1/2) / (high - low)``, a Poisson count ``k``
drawn at rate ``r`` the middle of its CDF step, ``u = (F_r(k - 1) + F_r(k)) / 2``. Mapped back
with the reference's range or rate, that is ``o`` (``k``) again exactly when the reference's
range (rate) is ours.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats
import torch

Queue = list[tuple[str, Any]]  # (kind of numpy call, standard draw), in the reference's order


@dataclass
class Draw:
    kind: str  # "rand", "randn", "randint" or "poisson"
    value: torch.Tensor
    low: int = 0  # randint's range
    high: int = 0
    rates: torch.Tensor | None = None  # poisson's rates


class RecordingTorch:
    """``torch`` for the corruptions module: the same functions, with the draws recorded."""

    def __init__(self) -> None:
        self.draws: list[Draw] = []

    def rand(self, *args, **kwargs):
        out = torch.rand(*args, **kwargs)
        self.draws.append(Draw("rand", out.clone()))
        return out

    def randn(self, *args, **kwargs):
        out = torch.randn(*args, **kwargs)
        self.draws.append(Draw("randn", out.clone()))
        return out

    def randint(self, *args, **kwargs):
        out = torch.randint(*args, **kwargs)
        low, high = (0, args[0]) if len(args) == 2 else args[:2]  # (high, size), (low, high, size)
        self.draws.append(Draw("randint", out.clone(), low=int(low), high=int(high)))
        return out

    def poisson(self, rates, *args, **kwargs):
        out = torch.poisson(rates, *args, **kwargs)
        self.draws.append(Draw("poisson", out.clone(), rates=rates.clone()))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


# ------------------------------------------------------------------ ours -> the reference's


def _np(x: torch.Tensor) -> np.ndarray:
    return x.double().numpy()


def _hwc(x: torch.Tensor) -> np.ndarray:
    """One image's per-pixel draws ``(C, H, W)`` -> the reference's ``(H, W, 3)`` (a grayscale
    image is RGB to the reference: its one channel's draws serve all three)."""
    return _np(x.expand(3, -1, -1).permute(1, 2, 0))


def _uniform_of_integers(draw: Draw) -> np.ndarray:
    return _np((draw.value.double() - draw.low + 0.5) / (draw.high - draw.low))


def _uniform_of_counts(counts: np.ndarray, rates: np.ndarray) -> np.ndarray:
    below = scipy.stats.poisson.cdf(counts - 1, rates)
    return (below + scipy.stats.poisson.cdf(counts, rates)) / 2


def _check(name: str, draws: list[Draw], ok: bool, expected: str) -> None:
    if not ok:
        seen = [(d.kind, tuple(d.value.shape)) for d in draws]
        raise AssertionError(
            f"{name}: expected our draws to be {expected}, recorded {seen}: the corruption changed "
            "how it draws; update reference_draws in _reference_draws.py"
        )


def _kinds(draws: list[Draw]) -> list[str]:
    return [d.kind for d in draws]


def reference_draws(name: str, draws: list[Draw], images: torch.Tensor) -> list[Queue]:
    """Per image of ``images`` ``(N, C, H, W)``, the standard draws the reference asks for, in
    its order, made from the ``draws`` our ``name`` recorded (none for a deterministic one)."""
    n, _, h, w = images.shape
    queues: list[Queue] = [[] for _ in range(n)]
    kinds = _kinds(draws)
    if name in ("gaussian_noise", "speckle_noise"):  # np.random.normal(size=(H, W, 3))
        _check(name, draws, kinds == ["randn"], "one randn")
        for k in range(n):
            queues[k].append(("normal", _hwc(draws[0].value[k])))
    elif name == "shot_noise":  # np.random.poisson(x c)
        _check(name, draws, kinds == ["poisson"], "one poisson")
        for k in range(n):
            counts, rates = _hwc(draws[0].value[k]), _hwc(draws[0].rates[k])
            queues[k].append(("poisson", _uniform_of_counts(counts, rates)))
    elif name == "impulse_noise":  # scikit-image: rng.random(shape) for "hit", then for "salt"
        _check(name, draws, kinds == ["rand"], "one rand of (2, N, C, H, W)")
        for k in range(n):
            queues[k] += [("random", _hwc(draws[0].value[i, k])) for i in (0, 1)]
    elif name == "motion_blur":  # np.random.uniform(-45, 45)
        _check(name, draws, kinds == ["rand"], "one rand of (N,)")
        for k in range(n):
            queues[k].append(("uniform", _np(draws[0].value[k])))
    elif name == "snow":  # the flakes' normal(size=(H, W)), then the blur angle's uniform
        _check(name, draws, kinds == ["randn", "rand"], "randn (flakes), rand (angles)")
        for k in range(n):
            queues[k] += [
                ("normal", _np(draws[0].value[k, 0])),
                ("uniform", _np(draws[1].value[k])),
            ]
    elif name == "spatter":  # the liquid's normal(size=(H, W))
        _check(name, draws, kinds == ["randn"], "one randn")
        for k in range(n):
            queues[k].append(("normal", _np(draws[0].value[k, 0])))
    elif name == "elastic_transform":  # uniform(size=(H, W)) for dx, then for dy
        _check(name, draws, kinds == ["rand"], "one rand of (N, 2, H, W)")
        for k in range(n):
            queues[k] += [("uniform", _np(draws[0].value[k, i])) for i in (0, 1)]
    elif name == "fog":  # plasma: per step, uniforms for the squares, then two diamond sets
        ok = len(draws) > 0 and len(draws) % 3 == 0 and set(kinds) == {"rand"}
        _check(name, draws, ok, "rand, 3 per step of the plasma")
        for d in draws:
            for k in range(n):
                queues[k].append(("uniform", _np(d.value[k])))
    elif name == "glass_blur":  # randint(-d, d, size=2) = (dx, dy) per visited pixel, per pass
        _check(name, draws, len(draws) > 0 and set(kinds) == {"randint"}, "one randint per pass")
        for d in draws:
            delta = -d.low
            u = _uniform_of_integers(d)  # (N, 2, H, W): channel 0 is dx
            for k in range(n):
                for row in range(h - delta, delta, -1):  # the reference's loop, bottom-right first
                    for col in range(w - delta, delta, -1):
                        queues[k].append(("randint", u[k, :, row, col]))
    elif name == "frost":  # the photograph (ours: its palette), then the crop's corner
        ok = len(draws) > 0 and kinds[0] == "randint" and (draws[0].low, draws[0].high) == (0, 5)
        _check(name, draws, ok, "randint(0, 5) (the photograph) first")
        u = _uniform_of_integers(draws[0])
        for k in range(n):  # corner (0, 0): the test hands the reference our texture uncropped
            queues[k] += [("randint", u[k]), ("randint", 0.0), ("randint", 0.0)]
    else:
        _check(name, draws, not draws, "none (a deterministic corruption)")
    return queues


# ------------------------------------------------------------------------ the replay


class Replay:
    """``numpy.random`` for the reference, serving the queued standard draws in order."""

    def __init__(self) -> None:
        self.queue: deque[tuple[str, Any]] = deque()

    def _next(self, kind: str, size) -> np.ndarray:
        shape = () if size is None else tuple(np.atleast_1d(size))
        if not self.queue:
            raise AssertionError(f"the reference drew {kind}{shape} beyond our draws")
        queued_kind, value = self.queue.popleft()
        value = np.asarray(value, dtype=np.float64)
        if queued_kind != kind or value.shape != shape:
            raise AssertionError(
                f"the reference drew {kind}{shape} where ours drew {queued_kind}{value.shape}"
            )
        return value

    def normal(self, loc=0.0, scale=1.0, size=None):
        return loc + scale * self._next("normal", size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return low + (high - low) * self._next("uniform", size)

    def randint(self, low, high=None, size=None):
        low, high = (0, low) if high is None else (low, high)
        return (low + np.floor((high - low) * self._next("randint", size))).astype(np.int64)

    def poisson(self, lam=1.0, size=None):
        return scipy.stats.poisson.ppf(self._next("poisson", size or np.shape(lam)), lam)

    def random(self, size=None):  # numpy.random.Generator.random, which scikit-image calls
        return self._next("random", size)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the reference called numpy.random.{name}, which is not replayed")


class ReplayGenerator(np.random.Generator):
    """A numpy ``Generator`` (what scikit-image's ``random_noise`` takes) drawing from a replay."""

    def __init__(self, replay: Replay) -> None:
        super().__init__(np.random.PCG64(0))
        self._replay = replay

    def random(self, size=None, dtype=np.float64, out=None):
        return self._replay.random(size)


class NumpyWith:
    """The reference module's ``np`` with ``random`` replaced."""

    def __init__(self, random: Replay) -> None:
        self.random = random

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)
