#!/usr/bin/env python3
"""Container healthcheck: exit 0 when gguf-serve's /health answers 200 (ready), 1 otherwise.

Standard library only, so the image needs no curl. The server listens on every address inside
the container, so loopback reaches it on its own port setting (GGUF_SERVE_PORT, default 11434).
"""

import os
import sys
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('GGUF_SERVE_PORT', '11434')}/health"
    # No proxy: a user's HTTP_PROXY in the container must not take loopback traffic elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (OSError, ValueError) as exc:  # refused, timed out, or 503 while the model loads
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
