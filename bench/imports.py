"""What a web worker pays at start-up to import the appd client, beside its bare dependencies.

Each figure is a fresh interpreter (``python -c``) importing one thing, measured as a whole
process over several interleaved runs: its CPU time (user + system, the kernel's accounting of
the finished child, which a busy shared machine disturbs far less than the wall clock) and its
wall time.  Medians are printed, with the difference to the bare dependencies (msgpack and
pycryptodome's AES, HMAC and KDF: what the client itself needs) taken run by run (each run of a
case is paired with the bare run next to it), and to an interpreter that imports nothing.

Run: ``nox -s bench`` (or ``python bench/imports.py [--runs N]``).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    "python (nothing)": "pass",
    "bare dependencies": (
        "import msgpack; from Crypto.Cipher import AES; from Crypto.Hash import HMAC, SHA256; "
        "from Crypto.Protocol.KDF import HKDF"
    ),
    "from appd import SecureSocketAppClient": "from appd import SecureSocketAppClient",
    "from appd import AsyncSecureSocketAppClient": "from appd import AsyncSecureSocketAppClient",
    "import appd.service (for contrast)": "import appd.service; import appd.hooks",
}


def _time(code: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh interpreter running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per case (default 30)")
    args = parser.parse_args(argv)
    cpu: dict[str, list[float]] = {name: [] for name in CASES}
    wall: dict[str, list[float]] = {name: [] for name in CASES}
    for code in CASES.values():  # warm the file cache and byte-code
        _time(code)
    for _ in range(args.runs):  # interleaved, so a noisy moment hits every case alike
        for name, code in CASES.items():
            c, w = _time(code)
            cpu[name].append(c * 1000)
            wall[name].append(w * 1000)
    bare = "bare dependencies"
    print(f"\n## import time, medians of {args.runs} fresh interpreters (ms)\n")
    print(f"| {'import':<44} | cpu | wall | cpu vs bare deps | wall vs bare deps |")
    print(f"|{'-' * 46}|-----|------|------------------|-------------------|")
    for name in CASES:
        dcpu = statistics.median(a - b for a, b in zip(cpu[name], cpu[bare], strict=True))
        dwall = statistics.median(a - b for a, b in zip(wall[name], wall[bare], strict=True))
        print(
            f"| {name:<44} | {statistics.median(cpu[name]):3.0f} "
            f"| {statistics.median(wall[name]):4.0f} | {dcpu:+16.1f} | {dwall:+17.1f} |"
        )
    client = "from appd import SecureSocketAppClient"
    extra = statistics.median(a - b for a, b in zip(cpu[client], cpu[bare], strict=True))
    verdict = "within" if extra <= 10.0 else "OVER"
    print(
        f"\nclient import: {extra:+.1f} ms of CPU beside its bare dependencies "
        f"({verdict} the 10 ms budget)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
