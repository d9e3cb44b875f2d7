"""python -m service [--host H] [--port P]: serve the search API (and its page at /) with uvicorn.

The port is checked before anything is loaded. The pipelines loaded by default are those
with serve_by_default (the FIRST ones are off), the same as ./scripts/serve.sh.
--hash-key KEY prints the digest of an API key and exits (weak keys refused); --new-key prints a strong
random key and its digest. X-Forwarded-For is believed only from SEARCH_TRUSTED_PROXIES (uvicorn's
default trusts 127.0.0.1, so any local client could claim any address and escape the per-address limit).
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys


def settings_help() -> str:
    """One line per ``SEARCH_*`` environment variable, from the Settings model (default and description)."""
    from service.settings import Settings

    lines = ["settings (environment variables; lists as JSON, e.g. SEARCH_PIPELINES='[\"bm25\", \"bm25>>ce\"]'):"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default
        doc = (field.description or _attribute_doc(name)).replace("``", "").rstrip(".")
        lines.append(f"  SEARCH_{name.upper():<24} default {default!s}" + (f": {doc}" if doc else ""))
    lines += [f"  {name:<31} {doc}" for name, doc in OTHER_SETTINGS.items()]
    return "\n".join(lines)


OTHER_SETTINGS = {
    "SEARCH_JVM_HEAP": "default 4g: maximum heap of the JVM that runs Lucene (BM25)",
    "SEARCH_LLM_CACHE": "default ~/.cache/neural-search/llm: cache folder of the FIRST reranker's LLM files",
}
"""Environment variables read outside :class:`~service.settings.Settings` (by pipeline/)."""


def _attribute_doc(name: str) -> str:
    """The docstring under a Settings attribute (``x: int = 1`` then ``\"\"\"...\"\"\"``), flattened."""
    import ast
    import inspect

    from service.settings import Settings

    body = ast.parse(inspect.getsource(Settings)).body[0].body
    for node, after in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name:
            if isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant):
                return " ".join(str(after.value.value).split())
    return ""


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served (in use, not allowed), or None when a server could bind it now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another server?); choose another with --port"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def server_options(settings) -> dict:
    """uvicorn options that depend on the settings: forwarded headers only from configured proxies."""
    return {"proxy_headers": bool(settings.trusted_proxies),
            "forwarded_allow_ips": ",".join(settings.trusted_proxies) if settings.trusted_proxies else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__, epilog=settings_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default=None, help="default: $SEARCH_LOG_LEVEL or INFO")
    parser.add_argument("--hash-key", metavar="KEY", help="print the SHA-256 digest to put in SEARCH_API_KEY_HASHES and exit")
    parser.add_argument("--new-key", action="store_true", help="print a new strong key and its digest, and exit")
    args = parser.parse_args(argv)
    from pydantic import ValidationError

    from service.keys import key_weakness, new_key
    from service.settings import Settings, hash_key

    if args.new_key:
        key = new_key()
        print(key, hash_key(key))
        return 0
    if args.hash_key is not None:
        weakness = key_weakness(args.hash_key)
        if weakness:
            print(f"this key is too weak for production: it {weakness} (python -m service --new-key makes one)",
                  file=sys.stderr)
            return 2
        print(hash_key(args.hash_key))
        return 0
    problem = port_problem(args.host, args.port)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        settings = Settings()
    except ValidationError as exc:  # inputs are hidden (hide_input_in_errors): a misplaced clear key is not echoed
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from pipeline.runtime.memory import tame_allocator
    from service.app import create_app
    from service.logging_config import configure_logging

    tame_allocator()  # flat memory with rerankers on a CPU (see pipeline/runtime/memory.py)
    level = args.log_level or settings.log_level
    configure_logging(level, json_lines=settings.log_json)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_config=None, log_level=level.lower(),
                access_log=False, timeout_keep_alive=settings.keep_alive_s, **server_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
