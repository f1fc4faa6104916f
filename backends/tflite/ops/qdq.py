"""The Q/DQ nodes `quant.fold` could not absorb: a float graph input's Q, a graph output's DQ, a re-quantization."""
from __future__ import annotations

from ..lower import BOP, handler


def _same_layout(g, node, code):
    n = g.name(node.input[0])
    lay = g.layout_of(n)
    x = g.inp(node, 0, lay)
    y = g.out(node, 0, lay)
    g.emit(code, [x], [y])


@handler("QuantizeLinear", int8="any")
def quantize(g, node):
    _same_layout(g, node, BOP.QUANTIZE)


@handler("DequantizeLinear", int8="any")
def dequantize(g, node):
    _same_layout(g, node, BOP.DEQUANTIZE)
