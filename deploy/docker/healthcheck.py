"""The image's HEALTHCHECK: exit 0 when GET /readyz answers 200, else 1.

Docker runs it inside the container (which has Python, not curl). The port is the server's own
setting (EARSHOT_PORT), read through earshot's settings object like every other reader.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from earshot.settings import Settings

READY_PATH = "/readyz"
TIMEOUT_S = 3.0


def main() -> int:
    url = f"http://127.0.0.1:{Settings().port}{READY_PATH}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP(S)_PROXY
    try:
        with direct.open(url, timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
