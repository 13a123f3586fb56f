#!/usr/bin/env python3
"""Container health probe for the web process, standard library only (no curl in slim images).

    python /app/docker/healthcheck.py [PATH] [PORT]      default: /healthz 8000

Exit 0 when http://127.0.0.1:PORT/PATH answers 200, 1 otherwise; the answer (or the
error) is printed so `docker inspect` shows why. The probe paths are answered before
Django's host check (apps.core.middleware.ProbeMiddleware), so any Host header will do.
"""

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/healthz"
    port = int(argv[2]) if len(argv) > 2 else 8000
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=4) as response:
            print(response.status, response.read(300).decode(errors="replace"))
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 4xx/5xx, e.g. 503 from /readyz when a backend is down
        print(exc.code, exc.read(300).decode(errors="replace"))
    except OSError as exc:
        print(f"unreachable: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
