"""`digitlab app`: the web app (Gradio, the `app` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

from digitlab import app_handlers
from digitlab.cli.commands import COMMANDS
from digitlab.cli.common import folder_arg
from digitlab.files import one_line


def port_arg(text: str) -> int:
    """argparse type for the app's --port: a whole number in 1..65535 (99999 passed and the app
    said where it ran, then socket.bind raised OverflowError)."""
    try:
        port = int(text)
    except ValueError:
        port = None
    if port is None or not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a whole number in 1..65535, got {text!r}")
    return port


def cmd_app(args: argparse.Namespace) -> int:
    """Start the web app (needs digitlab[app])."""
    # The app module imports Gradio (an optional extra, slow to import): only when asked for.
    from digitlab import app

    # A bad --host or a busy port is said before the models load (seconds), not by Gradio
    # after; `serve` checks again just before it starts.
    app.check_address(args.host, args.port)
    models = app_handlers.load_models(args.data_dir, args.model, args.cnn, args.run)
    for note in models.notes:
        print(f"note: {one_line(note)}")
    print(f"digitlab app on http://{args.host}:{args.port} (Ctrl-C to stop)")
    app.serve(models, args.host, args.port)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `app`."""
    a = sub.add_parser(
        "app",
        help=COMMANDS["app"].help,
        description="Start the web app (needs digitlab[app]). It binds to "
        "127.0.0.1 by default and makes no external calls.",
    )
    a.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    a.add_argument("--port", type=port_arg, default=7860, help="port, 1..65535 (default: 7860)")
    a.add_argument(
        "--data-dir", type=folder_arg, default=None, help="MNIST folder for kNN/browsing"
    )
    a.add_argument(
        "--model", type=Path, default=None, help="a saved generator (default: the shipped one)"
    )
    a.add_argument("--cnn", type=Path, default=None, help="a saved CNN (default: the shipped one)")
    a.add_argument("--run", type=Path, default=None, help="a run folder to show figures from")
    a.set_defaults(func=cmd_app)
