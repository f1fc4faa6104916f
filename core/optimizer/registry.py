"""The pass registry: a pass is a named function that rewrites an onnx-ir Model in place.

Modelled on OnnxSlim's `@register_fusion_pattern`: each pass module registers itself on import,
and third parties (or tests) can register more. A pass returns how many rewrites it made; the
pipeline snapshots the model before each pass, so a pass that raises, or breaks the checker or
numerical equivalence, is rolled back rather than kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import onnx_ir as ir


@dataclass
class PassContext:
    """What a pass may need besides the model; `fusions` collects fusion annotations."""

    opset_range: tuple[int, int] | None = None
    fusions: list[dict] = field(default_factory=list)


PassFn = Callable[[ir.Model, PassContext], int]


@dataclass(frozen=True)
class PassInfo:
    name: str
    fn: PassFn
    doc: str
    # False for passes that only add information (shape inference, annotations): no numeric check.
    changes_numerics: bool = True


_PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, *, changes_numerics: bool = True) -> Callable[[PassFn], PassFn]:
    """Decorator: register `fn(model, ctx) -> int` under `name` (replacing any earlier one)."""

    def deco(fn: PassFn) -> PassFn:
        _PASSES[name] = PassInfo(name, fn, (fn.__doc__ or "").strip().split("\n")[0],
                                 changes_numerics)
        return fn

    return deco


def unregister_pass(name: str) -> None:
    _PASSES.pop(name, None)


def get_pass(name: str) -> PassInfo:
    from edgec.core.errors import InputError

    try:
        return _PASSES[name]
    except KeyError:
        raise InputError(
            f"unknown optimizer pass {name!r}; known passes: {', '.join(sorted(_PASSES))}"
        ) from None


def list_passes() -> dict[str, str]:
    """Name -> one-line description of every registered pass."""
    return {n: p.doc for n, p in sorted(_PASSES.items())}
