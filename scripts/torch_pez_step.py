#!/usr/bin/env python3
"""The PyTorch yardstick for `cargo bench -p pez-tune --bench tune_step`: the same PEZ step (projection, label CE
over the verbalizers + 0.003 fluency, backward to the prompt, Adafactor) on SmolLM2 loaded from the same GGUF, on
the same fixed SST-2 batches, written as a careful user would: the LM head only where the loss reads it (each
row's last token and the prompt positions), and with `--dtype bf16` the forward under `torch.autocast`
(bf16 matmuls with f32 accumulation: oneDNN on the CPU, cuBLAS on a GPU). `step_times` is the same step for any
Hugging Face causal LM with a tied head on any device (scripts/gpu_speed.py uses it on the GPU).

    python scripts/torch_pez_step.py [batch] [steps] [--dtype f32|bf16]   (needs torch, transformers, gguf)
"""
import pathlib
import statistics
import sys
import time

import torch
from transformers.optimization import Adafactor

ROOT = pathlib.Path(__file__).resolve().parent.parent


def step_times(m, tok, rows, bs, steps, dtype, device="cpu", compile_mode=None):
    """Seconds of each of `steps` PEZ steps (after one untimed) with batches of `bs` (text, label) rows; with
    `compile_mode` (e.g. "default") the model body under `torch.compile` (dynamic shapes: batches differ in length)."""
    for p in m.parameters():
        p.requires_grad_(False)
    E = m.get_input_embeddings().weight
    En = E / E.norm(dim=-1, keepdim=True)
    head = m.get_output_embeddings()
    verb = [tok(" negative", add_special_tokens=False).input_ids[0], tok(" positive", add_special_tokens=False).input_ids[0]]
    tmpl = tok(" It was", add_special_tokens=False).input_ids
    prompt = torch.nn.Parameter(E[[verb[i % 2] for i in range(10)]].clone())
    opt = Adafactor([prompt], lr=0.3, relative_step=False, scale_parameter=False, warmup_init=False)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    # Each step's rows tokenized and padded ahead of time (as a data loader would), so a step times the model only.
    batches = []
    for s in range(steps + 1):
        batch = [rows[(s * bs + i) * 4099 % len(rows)] for i in range(bs)]
        seqs = [tok(x[0], add_special_tokens=False).input_ids + tmpl for x in batch]
        L = max(map(len, seqs))
        batches.append((torch.tensor([q + [q[-1]] * (L - len(q)) for q in seqs], device=E.device),
                        torch.tensor([10 + len(q) - 1 for q in seqs], device=E.device),
                        torch.tensor([int(x[1]) for x in batch], device=E.device)))
    rows_at = torch.arange(bs, device=E.device)
    body = torch.compile(m.base_model, mode=compile_mode, dynamic=True) if compile_mode else m.base_model
    times = []
    for s, (tokens, last_at, labels) in enumerate(batches):
        sync()
        t = time.time()
        ids = (prompt.detach() / prompt.detach().norm(dim=-1, keepdim=True) @ En.T).argmax(-1)
        hard = E[ids].clone().requires_grad_(True)
        x = torch.cat([hard.expand(bs, -1, -1), E[tokens]], dim=1)
        with autocast:
            h = body(inputs_embeds=x).last_hidden_state
            last = head(h[rows_at, last_at])
            flu_logits = head(h[0, :9])
        ce = torch.nn.functional.cross_entropy(last[:, verb].float(), labels)
        # pez's fluency term: each prompt token's logit read off its own vector (tied head), so the gradient reaches it
        flu = (flu_logits.float().logsumexp(-1) - (h[0, :9].float() * hard[1:]).sum(-1)).mean()
        loss = 0.997 * ce + 0.003 * flu
        prompt.grad, = torch.autograd.grad(loss, [hard])
        torch.nn.utils.clip_grad_norm_([prompt], 1.0)
        opt.step()
        sync()
        if s > 0:
            times.append(time.time() - t)
    return times


def main():
    import os
    import transformers as tf
    args = [a for a in sys.argv[1:] if not a.startswith("--") and a not in ("f32", "bf16")]
    dtype = sys.argv[sys.argv.index("--dtype") + 1] if "--dtype" in sys.argv else "f32"
    bs = int(args[0]) if args else 16
    steps = int(args[1]) if len(args) > 1 else 10
    models = pathlib.Path(os.environ.get("PEZ_MODELS", ROOT / "models"))
    gguf = models / "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = tf.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    m = tf.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    data = pathlib.Path(os.environ.get("PEZ_DATA", ROOT.parent / "shared/data"))
    rows = [l.split("\t") for l in (data / "sst2/train.tsv").read_text().splitlines()[1:]]
    times = step_times(m, tok, rows, bs, steps, dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {dtype}, batch {bs}: seconds per PEZ step "
          f"mean {statistics.mean(times):.3f}, median {statistics.median(times):.3f}, min {min(times):.3f}, max {max(times):.3f}")


if __name__ == "__main__":
    main()
