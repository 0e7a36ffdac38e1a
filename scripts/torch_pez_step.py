#!/usr/bin/env python3
"""The PyTorch yardstick for `cargo bench -p pez-tune --bench tune_step`: the same PEZ step (projection, label CE
over the verbalizers + 0.003 fluency, backward to the prompt, Adafactor) on SmolLM2 loaded from the same GGUF, on
the same fixed SST-2 batches.    python scripts/torch_pez_step.py [batch] [steps]   (needs torch, transformers, gguf)
"""
import sys, time, pathlib
import torch
import transformers as tf
from transformers.optimization import Adafactor

ROOT = pathlib.Path(__file__).resolve().parent.parent
gguf = ROOT / "models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
bs = int(sys.argv[1]) if len(sys.argv) > 1 else 16
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
tok = tf.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
m = tf.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
for p in m.parameters():
    p.requires_grad_(False)
E = m.get_input_embeddings().weight
En = E / E.norm(dim=-1, keepdim=True)
verb = [tok(" negative", add_special_tokens=False).input_ids[0], tok(" positive", add_special_tokens=False).input_ids[0]]
tmpl = tok(" It was", add_special_tokens=False).input_ids
rows = [l.split("\t") for l in (ROOT.parent / "shared/data/sst2/train.tsv").read_text().splitlines()[1:]]
prompt = torch.nn.Parameter(E[[verb[i % 2] for i in range(10)]].clone())
opt = Adafactor([prompt], lr=0.3, relative_step=False, scale_parameter=False, warmup_init=False)
times = []
for s in range(steps + 1):
    batch = [rows[(s * bs + i) * 4099 % len(rows)] for i in range(bs)]
    t = time.time()
    ids = (prompt.detach() / prompt.detach().norm(dim=-1, keepdim=True) @ En.T).argmax(-1)
    hard = E[ids].clone().requires_grad_(True)
    seqs = [tok(x[0], add_special_tokens=False).input_ids + tmpl for x in batch]
    L = max(map(len, seqs))
    x = torch.stack([torch.cat([hard, E[torch.tensor(q + [q[-1]] * (L - len(q)))]]) for q in seqs])
    out = m(inputs_embeds=x).logits
    last = torch.stack([out[i, 10 + len(q) - 1] for i, q in enumerate(seqs)])
    ce = torch.nn.functional.cross_entropy(last[:, verb], torch.tensor([int(x[1]) for x in batch]))
    flu = torch.nn.functional.cross_entropy(out[0, :9], ids[1:])
    loss = 0.997 * ce + 0.003 * flu
    prompt.grad, = torch.autograd.grad(loss, [hard])
    torch.nn.utils.clip_grad_norm_([prompt], 1.0)
    opt.step()
    if s > 0:
        times.append(time.time() - t)
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {bs}: seconds per PEZ step mean {sum(times)/len(times):.3f}, "
      f"min {min(times):.3f}, max {max(times):.3f}")
