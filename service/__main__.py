"""``python -m service [--host H] [--port P]``: serve the API with uvicorn; ``--hash-key KEY`` prints a key's digest."""

from __future__ import annotations

import argparse
import sys

import uvicorn
from pydantic import ValidationError

from pipeline.runtime.memory import tame_allocator
from service.app import create_app
from service.logging_config import configure_logging
from service.settings import Settings, hash_key


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default=None, help="default: $SEARCH_LOG_LEVEL or INFO")
    parser.add_argument("--hash-key", metavar="KEY", help="print the SHA-256 digest to put in SEARCH_API_KEY_HASHES and exit")
    args = parser.parse_args()
    if args.hash_key is not None:
        print(hash_key(args.hash_key))
        return
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    tame_allocator()  # flat memory with rerankers on a CPU (see pipeline/runtime/memory.py)
    level = args.log_level or settings.log_level
    configure_logging(level, json_lines=settings.log_json)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None, log_level=level.lower(),
                access_log=False, timeout_keep_alive=settings.keep_alive_s)


if __name__ == "__main__":
    main()
