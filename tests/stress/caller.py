"""A client process of the stress suites: ``python caller.py PORT CLIENT_ID CALLS SECONDS OUT``.

It makes up to CALLS calls of ``record`` (stopping after SECONDS when that is not 0), each with a
payload unique to the call, one fresh request after another on one client, and writes one line
per call to OUT: ``ok SEQ``, ``wrong SEQ`` (a reply that does not match its request),
``not-run SEQ ERROR`` (the client says the request never ran) or ``unknown SEQ ERROR`` (the
client says it may or may not have run).
"""

from __future__ import annotations

import sys
import time

from appd import SecureSocketAppClient
from appd.errors import ConnectFailed, ConnectionLost, RequestTimeout, ServiceBusy, TransportError

KEY = "stress-suite-key-Hk3v9QmZ2xW7pL4t"


def main() -> None:
    port, client_id, calls, seconds, out = (
        int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    )
    client = SecureSocketAppClient(
        "127.0.0.1", port, "stress", "stress-pw", KEY, timeout=10, connect_timeout=5
    )
    end = time.monotonic() + seconds if seconds else float("inf")
    lines: list[str] = []
    for seq in range(calls):
        if time.monotonic() >= end:
            break
        payload = f"{client_id}:{seq}:{'x' * (seq % 50)}"
        try:
            reply = client.call("record", client_id, seq, payload)
        except (ConnectFailed, ServiceBusy) as exc:
            lines.append(f"not-run {seq} {type(exc).__name__}")
            time.sleep(0.01)  # as a web worker would, rather than spin on a refused connect
        except ConnectionLost as exc:
            kind = "not-run" if "not sent" in str(exc) else "unknown"
            lines.append(f"{kind} {seq} {type(exc).__name__}")
        except RequestTimeout as exc:
            lines.append(f"unknown {seq} {type(exc).__name__}")
        except TransportError as exc:
            lines.append(f"unknown {seq} {type(exc).__name__}")
        else:
            ok = reply == [client_id, seq, payload]
            lines.append(f"{'ok' if ok else 'wrong'} {seq}")
    client.close()
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
