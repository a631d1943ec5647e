#!/usr/bin/env python3
"""Container health: every target given must answer. `http(s)://…` → a 2xx reply; `redis://…`
→ PING. With no arguments, the API's /healthz on this container's PHENOLAB_API_PORT.
Standard library plus the redis client only, so it is cheap enough to run every few seconds."""

import os
import sys
import urllib.request


def check(target: str) -> None:
    if target.startswith(("redis://", "rediss://")):
        import redis

        redis.Redis.from_url(target, socket_timeout=5).ping()
    else:
        with urllib.request.urlopen(target, timeout=5) as reply:
            if not 200 <= reply.status < 300:
                raise RuntimeError(f"HTTP {reply.status}")


def main(targets: list[str]) -> int:
    targets = targets or [f"http://127.0.0.1:{os.environ.get('PHENOLAB_API_PORT', '8000')}/healthz"]
    for target in targets:
        try:
            check(target)
        except Exception as error:
            print(f"unhealthy: {target.split('@')[-1]}: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
