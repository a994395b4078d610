"""The ``simcse-hub`` command line: ``train | evaluate | encode | info | push | push-space | demo``.

Each sub-command is one ``_add_<name>`` function that declares its arguments and sets ``func`` to the function that
runs it; the work itself lives in the library modules. This is the only place that sets up logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from simcse_hub import __version__

logger = logging.getLogger("simcse_hub")


class CLIError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""


# ---------------------------------------------------------------------------------------------------- info


def _add_info(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("info", help="print the configuration of a saved SimCSE model")
    parser.add_argument("model", help="a folder written by simcse_hub, or a Hub id")
    parser.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    import simcse_hub  # noqa: F401  (registers the simcse model type)

    try:
        config = AutoConfig.from_pretrained(args.model)
    except (OSError, ValueError) as error:
        raise CLIError(f"cannot read the configuration of {args.model!r}: {error}") from error
    if getattr(config, "model_type", None) != "simcse":
        raise CLIError(
            f"{args.model!r} is a {config.model_type!r} model, not a SimCSE model; wrap it with "
            "SimCSEModel.from_encoder(...) or evaluate it with --pooler."
        )
    summary = {
        "model_type": config.model_type,
        "encoder": config.encoder_config.model_type,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": getattr(config.encoder_config, "num_hidden_layers", None),
        "pooler_type": config.pooler_type,
        "mlp_only_train": config.mlp_only_train,
        "mlp_at_inference": config.uses_mlp_at_inference,
        "temperature": config.temperature,
        "hard_negative_weight": config.hard_negative_weight,
        "do_mlm": config.do_mlm,
        "mlm_weight": config.mlm_weight,
    }
    print(json.dumps(summary, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------------- main

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_info]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simcse-hub", description="Train, evaluate, publish and demo SimCSE sentence embeddings."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except CLIError as error:
        print(f"simcse-hub {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
