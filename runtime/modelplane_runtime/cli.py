"""Entry points: `modelplane-runtime` (the server) and `modelplane package`."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, Settings


def runtime_main(argv: list[str] | None = None) -> int:
    """Serve the model in MODELPLANE_MODEL_DIR over HTTP until SIGTERM, then drain; exit 1
    when the model cannot be loaded (unless MODELPLANE_EXIT_ON_ERROR=false)."""
    parser = argparse.ArgumentParser(
        prog="modelplane-runtime",
        description="Serve a torch.export model over the Open Inference Protocol v2. "
        "Configured by MODELPLANE_* environment variables (see docs/runtime.md).",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"modelplane-runtime: error: {exc}", file=sys.stderr)
        return 2
    from .server import serve

    return serve(settings, args.log_level)


def main(argv: list[str] | None = None) -> int:
    """`modelplane package ...`: the user-side tool."""
    from .package import add_package_parser

    parser = argparse.ArgumentParser(prog="modelplane", description="modelplane tools")
    commands = parser.add_subparsers(dest="command", required=True)
    add_package_parser(commands)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result
