#!/usr/bin/env python3
"""Reference trajectories of transformers' Adafactor (as PEZ configures it) and PyTorch's AdamW.

Writes crates/pez-core/tests/fixtures/optim.json: an initial [4, 6] parameter, 5 gradients, and the parameter
after every step for each optimizer.    python scripts/make_optim_fixture.py
"""
import json, pathlib
import torch
from transformers.optimization import Adafactor

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/pez-core/tests/fixtures/optim.json"
g = torch.Generator().manual_seed(0)
p0 = torch.randn(4, 6, generator=g)
grads = [torch.randn(4, 6, generator=g) * s for s in (1.0, 0.1, 3.0, 0.5, 1.0)]


def trajectory(make):
    p = torch.nn.Parameter(p0.clone())
    opt = make([p])
    out = []
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
        out.append(p.detach().flatten().tolist())
    return out


res = dict(
    p0=p0.flatten().tolist(), grads=[x.flatten().tolist() for x in grads], rows=4, cols=6,
    adafactor=dict(lr=0.3, steps=trajectory(lambda ps: Adafactor(ps, lr=0.3, relative_step=False, scale_parameter=False,
                                                               warmup_init=False))),
    adamw=dict(lr=0.1, weight_decay=0.1, steps=trajectory(lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.1))),
)
OUT.write_text(json.dumps(res))
print("wrote", OUT)
