"""``python -m service [--host H] [--port P]``: serve the API with uvicorn; ``--hash-key KEY`` prints a key's digest,
``--new-key`` a strong random key and its digest.

``X-Forwarded-For`` is believed only from ``SEARCH_TRUSTED_PROXIES`` (uvicorn's default trusts 127.0.0.1,
so any local client could claim any address and escape the per-address limit).
"""

from __future__ import annotations

import argparse
import sys

import uvicorn
from pydantic import ValidationError

from pipeline.runtime.memory import tame_allocator
from service.app import create_app
from service.keys import key_weakness, new_key
from service.logging_config import configure_logging
from service.settings import Settings, hash_key


def server_options(settings: Settings) -> dict:
    """uvicorn options that depend on the settings: forwarded headers only from configured proxies."""
    return {"proxy_headers": bool(settings.trusted_proxies),
            "forwarded_allow_ips": ",".join(settings.trusted_proxies) if settings.trusted_proxies else ""}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default=None, help="default: $SEARCH_LOG_LEVEL or INFO")
    parser.add_argument("--hash-key", metavar="KEY", help="print the SHA-256 digest to put in SEARCH_API_KEY_HASHES and exit")
    parser.add_argument("--new-key", action="store_true", help="print a new strong key and its digest, and exit")
    args = parser.parse_args()
    if args.new_key:
        key = new_key()
        print(key, hash_key(key))
        return
    if args.hash_key is not None:
        weakness = key_weakness(args.hash_key)
        if weakness:
            print(f"this key is too weak for production: it {weakness} (python -m service --new-key makes one)",
                  file=sys.stderr)
            raise SystemExit(2)
        print(hash_key(args.hash_key))
        return
    try:
        settings = Settings()
    except ValidationError as exc:  # inputs are hidden (hide_input_in_errors): a misplaced clear key is not echoed
        print(f"invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    tame_allocator()  # flat memory with rerankers on a CPU (see pipeline/runtime/memory.py)
    level = args.log_level or settings.log_level
    configure_logging(level, json_lines=settings.log_json)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None, log_level=level.lower(),
                access_log=False, timeout_keep_alive=settings.keep_alive_s, **server_options(settings))


if __name__ == "__main__":
    main()
