"""Run by test_train in a subprocess: train from a YAML configuration and, with ``--kill-at-call N``, kill this process
with SIGKILL at the N-th training step (a crash mid-run: no cleanup, no flushing, nothing caught).

    python tests/train_subprocess.py CONFIG.yaml [--kill-at-call N] [--resume]
"""

from __future__ import annotations

import argparse
import os
import signal

import simcse_hub.train as train_module
from simcse_hub.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--kill-at-call", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    if args.kill_at_call:
        step, calls = train_module.training_step, []

        def killing_step(*step_args, **step_kwargs):
            calls.append(1)
            if len(calls) == args.kill_at_call:
                os.kill(os.getpid(), signal.SIGKILL)
            return step(*step_args, **step_kwargs)

        train_module.training_step = killing_step
    train_module.train(TrainConfig.from_yaml(args.config), resume="latest" if args.resume else None)


if __name__ == "__main__":
    main()
