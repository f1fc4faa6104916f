"""The CLI flags of the structured steps (--prune-channels, --low-rank, --finetune), shared by
`edgec compress` and `edgec compile` through command.add_step_flags."""
from __future__ import annotations

import argparse

from edgec.core.errors import InputError


def add_structured_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("structured compression (fewer MACs: faster, not only smaller)")
    g.add_argument("--prune-channels", type=float, metavar="R",
                   help="remove this fraction of the channels of every prunable channel group (expansion "
                        "channels of inverted residuals, fire modules, ...), re-fitting each consumer by least "
                        "squares on --calib; the graph really shrinks (MACs and parameters drop)")
    g.add_argument("--prune-channels-method", choices=["reconstruction", "activation", "l1"],
                   help="channel ranking: reconstruction (greedy least-squares error, default with --calib), "
                        "activation, or l1 (producer weight norms, no data)")
    g.add_argument("--prune-channels-allocate", choices=["uniform", "sensitivity"], default="uniform",
                   help="uniform: R of every group's channels; sensitivity: R is the fraction of the model's MACs "
                        "to remove, each group pruned alone at a few ratios on --calib and the budget spent where "
                        "the output KL grows least (slower: one prune per group and ratio)")
    g.add_argument("--prune-channels-tied", action="store_true",
                   help="also prune channels tied across residual Adds (the residual stream; off by default)")
    g.add_argument("--low-rank", type=float, metavar="E",
                   help="factorise Gemm/MatMul/Conv layers by (data-aware) SVD keeping this fraction of the "
                        "output energy, e.g. 0.95; only where the two thin layers are faster")
    g.add_argument("--finetune", choices=["distill"],
                   help="distill: fine-tune the compressed model against the FP32 model (KL on logits) on the "
                        "unlabelled --calib images, in torch (pip install 'edgec[torch]')")
    g.add_argument("--finetune-minutes", type=float, default=10.0, metavar="M",
                   help="fine-tuning time budget in minutes (default 10)")
    g.add_argument("--finetune-epochs", type=int, default=3, metavar="N", help="at most N epochs (default 3)")
    g.add_argument("--finetune-codes", choices=["frozen", "ste"],
                   help="after --ecq/--cluster: frozen (default) keeps every integer code, so the entropy-coded size "
                        "is unchanged, and trains scales, biases and uncompressed layers; ste also trains the codes "
                        "on each layer's levels (straight-through rounding; the size is re-measured)")


def structured_steps(args, layers: tuple) -> list:
    from .pipeline import Step

    steps = []
    r = getattr(args, "prune_channels", None)
    if r is not None:
        if not 0 < r < 1:
            raise InputError(f"--prune-channels {r}: the fraction of channels to remove is strictly between 0 and "
                             "1, e.g. 0.3")
        steps.append(Step("prune_channels", r, args.prune_channels_method, layers,
                          options={"tied": bool(args.prune_channels_tied),
                                   "allocate": getattr(args, "prune_channels_allocate", "uniform")}))
    elif (getattr(args, "prune_channels_method", None) or getattr(args, "prune_channels_tied", False)
          or getattr(args, "prune_channels_allocate", "uniform") != "uniform"):
        raise InputError("--prune-channels-method / --prune-channels-tied / --prune-channels-allocate need "
                         "--prune-channels R")
    e = getattr(args, "low_rank", None)
    if e is not None:
        if not 0 < e < 1:
            raise InputError(f"--low-rank {e}: the retained energy is a fraction strictly between 0 and 1, e.g. 0.95")
        steps.append(Step("low_rank", e, None, layers))
    if getattr(args, "finetune", None) == "distill":
        if args.finetune_minutes <= 0 or args.finetune_epochs < 1:
            raise InputError("--finetune-minutes must be > 0 and --finetune-epochs >= 1")
        opts = {"epochs": args.finetune_epochs}
        if getattr(args, "finetune_codes", None):
            opts["mode"] = args.finetune_codes
        steps.append(Step("distill", args.finetune_minutes, None, (), options=opts))
    elif getattr(args, "finetune_codes", None):
        raise InputError("--finetune-codes needs --finetune distill")
    return steps
