"""Tracing the six GLipSDP networks (refdata/GLipSDP, written as plain PyTorch in
tests/glipsdp_nets.py): torch.fx symbolic tracing, torch.export, make_fx with real tensors, and
lipsdp's concrete-shape fx tracer (models/export/tracer.py) plus the whole export.

    python benchmarks/export_tracing.py      # writes nothing; prints a markdown table
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import glipsdp_nets  # noqa: E402

from lipsdp.models import from_torch  # noqa: E402
from lipsdp.models.export.tracer import TRACE_BATCH, trace  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:  # report, do not stop
        return f"fails ({type(exc).__name__})", None
    return f"{time.perf_counter() - t:.3f} s", out


def main():
    from torch.fx.experimental.proxy_tensor import make_fx

    print("| network | fx.symbolic_trace | torch.export | make_fx (real) | concrete fx trace | from_torch (total) | nodes export / make_fx / concrete |")
    print("|---|---|---|---|---|---|---|")
    for name in glipsdp_nets.NETWORKS:
        model, shape = glipsdp_nets.load(name)
        x = torch.randn((1,) + shape)
        fx_t, _ = timed(lambda: torch.fx.symbolic_trace(model))
        ex_t, ep = timed(lambda: torch.export.export(model, (x,)))
        mf_t, gm = timed(lambda: make_fx(model, tracing_mode="real")(x))
        ct_t, g = timed(lambda: trace(model, torch.randn((TRACE_BATCH,) + shape)))
        ft_t, _ = timed(lambda: from_torch(model, shape))
        nodes = [len(ep.graph.nodes) if ep else "-", len(gm.graph.nodes) if gm else "-", len(g.nodes) if g else "-"]
        print(f"| {name} | {fx_t} | {ex_t} | {mf_t} | {ct_t} | {ft_t} | {' / '.join(map(str, nodes))} |")


if __name__ == "__main__":
    main()
