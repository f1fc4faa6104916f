"""The executor flags, apart from the executors: building `edgec`'s parser (every command, `edgec backends`
included) needs only these, and executor.py pulls in the cell and timing code and numpy (~0.2 s)."""
from __future__ import annotations

import argparse

EXECUTORS = ("local", "ray")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The executor flags, shared by every verb that runs a sweep (compare, auto)."""
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="where cells compile and validate: this process (local, default) or a Ray cluster "
                             "(ray; pip install 'edgec[ray]'). Ray needs the model, data and -o on a path every "
                             "node sees")
    parser.add_argument("--ray-address", metavar="auto|HOST:PORT",
                        help="an existing Ray cluster (auto: the one `ray start` runs on this machine, or "
                             "$RAY_ADDRESS); without it --executor ray starts a private one-node cluster on "
                             "127.0.0.1 (no dashboard, files under edgec's cache)")


def executor_kwargs(args) -> dict:
    return {"executor": getattr(args, "executor", "local"), "ray_address": getattr(args, "ray_address", None)}
