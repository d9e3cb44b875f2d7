"""``python -m service [--host H] [--port P] [--workers N]``: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from service.app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m service")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
