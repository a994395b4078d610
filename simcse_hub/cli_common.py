"""What every ``simcse-hub`` sub-command shares: the one-line error, the model options and loading through
``simcse_hub.SimCSE``, and the check of an output file before any work."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

POOLERS = "cls, cls_before_pooler, avg, avg_top2, avg_first_last"


class CLIError(Exception):
    """An error the user can fix; printed on one line without a traceback, exit status 2."""


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def model_options(parser: argparse.ArgumentParser, what: str = "model") -> None:
    """The options of every command that encodes with ``simcse_hub.SimCSE``."""
    parser.add_argument("--pooler", help=f"pooler of a plain encoder, or an override of the {what}'s: {POOLERS}")
    parser.add_argument("--max-length", type=int, help="truncate sentences to this many tokens (default: the "
                        "model's maximum)")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per forward pass (default: as many "
                        "as fit in 8,192 padded tokens, the same embeddings as fixed batches, faster)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def load_tool(name: str, args: argparse.Namespace) -> Any:
    """``SimCSE(name)`` with the command's options; `CLIError` naming the model when it cannot be loaded."""
    from simcse_hub.loading import ModelNotFoundError, resolve_model

    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: expected an integer >= 1.")
    try:
        resolve_model(name)  # a typo of a path is answered at once, before torch is imported
    except ModelNotFoundError as error:
        raise CLIError(one_line(error)) from None
    from simcse_hub.tool import SimCSE

    try:
        return SimCSE(name, device=args.device, pooler=args.pooler, max_length=args.max_length)
    except (OSError, ValueError, RuntimeError) as error:
        raise CLIError(f"cannot load {name!r}: {one_line(error)}") from None


def writable_file(path: str | None, option: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Check an output file before any work: its suffix, and a folder that exists to hold it."""
    if path is None:
        return
    if suffixes is not None and Path(path).suffix not in suffixes:
        raise CLIError(f"{option} {path!r}: expected a file name ending in {' or '.join(suffixes)}.")
    parent = Path(path).expanduser().parent
    if not parent.is_dir():
        raise CLIError(f"{option} {path!r}: the folder {str(parent)!r} does not exist; create it first.")
    if Path(path).is_dir():
        raise CLIError(f"{option} {path!r} is a folder; expected a file name.")
