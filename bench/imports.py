"""What a web worker pays at start-up to import the appd client, beside its bare dependencies.

Each figure is a fresh interpreter (``python -c``) importing one thing, timed as a whole process
over several interleaved runs; the median is printed, with the difference to the bare
dependencies (msgpack and pycryptodome's AES, HMAC and KDF: what the client itself needs) and to
an interpreter that imports nothing.

Run: ``nox -s bench`` (or ``python bench/imports.py [--runs N]``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python (nothing)": "pass",
    "bare dependencies": (
        "import msgpack; from Crypto.Cipher import AES; from Crypto.Hash import SHA256; "
        "from Crypto.Protocol.KDF import HKDF"
    ),
    "from appd import SecureSocketAppClient": "from appd import SecureSocketAppClient",
    "from appd import AsyncSecureSocketAppClient": "from appd import AsyncSecureSocketAppClient",
    "import appd.service (for contrast)": "import appd.service; import appd.hooks",
}


def _time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per case (default 30)")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for code in CASES.values():  # warm the file cache and byte-code
        _time(code)
    for _ in range(args.runs):  # interleaved, so a noisy moment hits every case alike
        for name, code in CASES.items():
            times[name].append(_time(code))
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    bare = medians["bare dependencies"]
    nothing = medians["python (nothing)"]
    print(f"\n## import time, median of {args.runs} fresh interpreters\n")
    print(f"| {'import':<44} | ms (median) | vs bare deps | vs python |")
    print(f"|{'-' * 46}|-------------|--------------|-----------|")
    for name, ms in medians.items():
        print(f"| {name:<44} | {ms:11.1f} | {ms - bare:+12.1f} | {ms - nothing:+9.1f} |")
    client = medians["from appd import SecureSocketAppClient"]
    verdict = "within" if client - bare <= 10.0 else "OVER"
    print(f"\nclient import: {client - bare:+.1f} ms beside its bare dependencies "
          f"({verdict} the 10 ms budget)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
