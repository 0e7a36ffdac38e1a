"""Seconds per PEZ step at SmolLM2-135M's and GPT-2 Large's shapes (batch 16 and 32, f32 and bf16), pez against
the PyTorch yardstick (scripts/torch_pez_step.py: logits only where the loss reads them, bf16 under autocast) on
the same device in the same run. The checkpoints are made here with seeded random weights (no weights travel), the
rows are 24 random words of the tiny fixture tokenizer (about an SST-2 sentence), 10 prompt tokens, fluency 0.003.
pez's figure is the wall time between its step-5 and step-15 records over 10 (one 2-row holdout pass between); on a
GPU pez runs twice: on candle's CUDA ops (`pez_s_per_step`) and with PEZ_CUDA=fused (`pez_fused_s_per_step`); at
batch 32 also torch.compile's step and pez's phase profile (PEZ_PROFILE=1, fused: project/forward/backward/update).

    python3 scripts/gpu_speed.py PEZ DEVICE OUT_JSON      (scripts/gpu_check.sh calls it; GPU_SPEED_SHAPES=small
                                                           makes 2-layer models: the script's own check on a CPU)
"""
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import transformers as tf

sys.path.insert(0, os.path.dirname(__file__))
from torch_pez_step import step_times  # noqa: E402

# torch.compile starts only this many seconds into the script (each compile can take a minute or more).
COMPILE_BUDGET_S = float(os.environ.get("GPU_SPEED_COMPILE_BUDGET_S", "300"))
FX = os.path.join(os.path.dirname(__file__), "..", "crates/pez-models/tests/fixtures/transfer")


def shapes(small):
    layers = (lambda n: 2) if small else (lambda n: n)
    return {
        "smollm2-135m": tf.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers(30),
                                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                                       rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
        "gpt2-large": tf.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=1280, n_layer=layers(36), n_head=20,
                                    tie_word_embeddings=True),
    }


def make(cfg, d):
    """A model of `cfg` with seeded random weights, saved to `d` with the fixture tokenizer (what pez loads)."""
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    model.save_pretrained(d, safe_serialization=True)
    shutil.copy(f"{FX}/gpt2/tokenizer.json", d)
    return model


def main():
    pez, device, out = sys.argv[1:4]
    t_start = time.time()
    small = os.environ.get("GPU_SPEED_SHAPES") == "small"
    tmp = tempfile.mkdtemp()
    rng = random.Random(0)
    words = [w for w in json.load(open(f"{FX}/gpt2/tokenizer.json"))["model"]["vocab"] if w != "[UNK]"]
    rows = [(" ".join(rng.choice(words) for _ in range(24)), str(rng.randint(0, 1))) for _ in range(512)]
    train = f"{tmp}/train.tsv"
    with open(train, "w") as f:
        f.write("sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows))
    tok = tf.PreTrainedTokenizerFast(tokenizer_file=f"{FX}/gpt2/tokenizer.json")
    results = []
    for name, cfg in shapes(small).items():
        d = f"{tmp}/{name}"
        model = make(cfg, d).to(device)
        for dtype in ("f32", "bf16"):
            for bs in (16, 32):
                r = {"shape": name, "layers": cfg.num_hidden_layers, "dtype": dtype, "batch": bs, "device": device}
                def tune(key, env):
                    """pez's 15 steps under `env`: its records, or None with `<key>_error` in the row."""
                    o = f"{tmp}/{name}-{dtype}-{bs}-{key}"
                    p = subprocess.run([pez, "tune", f"{FX}/task.toml", "--model", d, "--train", train, "--steps", "15", "--eval-every", "5",
                                        "--batch-size", str(bs), "--holdout", "2", "--prompt-len", "10", "--fluency", "0.003", "--seed", "0",
                                        "--dtype", dtype, "--device", device, "--out", o], capture_output=True, text=True, env=dict(os.environ, **env))
                    if p.returncode:
                        r[f"{key}_error"] = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
                        return None
                    return [json.loads(x) for x in open(f"{o}/metrics.jsonl")]
                # candle's CUDA ops; on a GPU also pez's own kernels and device set-up (PEZ_CUDA=fused)
                for key, env in [("pez", {})] + ([("pez_fused", {"PEZ_CUDA": "fused"})] if device != "cpu" else []):
                    if (recs := tune(key, env)) is not None:
                        m = {x["step"]: x["elapsed_s"] for x in recs}
                        r[f"{key}_s_per_step"] = round((m[15] - m[5]) / 10, 4)
                t = step_times(model, tok, rows, bs, 10, dtype, device)
                r["torch_s_per_step_median"] = round(statistics.median(t), 4)
                if device != "cpu" and bs == 32 and time.time() - t_start > COMPILE_BUDGET_S:
                    r["torch_compile_skipped"] = f"past {COMPILE_BUDGET_S} s of this script: compiling could overrun the device budget"
                elif device != "cpu" and bs == 32:
                    # The bar at batch 32: torch.compile (mode "default"; max-autotune's compile time does
                    # not fit the device budget), and where pez's time goes (PEZ_PROFILE=1: phases synchronised).
                    try:
                        t = step_times(model, tok, rows, bs, 10, dtype, device, compile_mode="default")
                        r["torch_compile_s_per_step_median"] = round(statistics.median(t), 4)
                    except Exception as e:  # a compile failure is a result, not the end of the table
                        r["torch_compile_error"] = str(e)[-300:]
                    if (recs := tune("pez_fused_profile", {"PEZ_CUDA": "fused", "PEZ_PROFILE": "1"})) is not None:
                        r["pez_fused_profile"] = recs[-1].get("profile")
                if "pez_s_per_step" in r:
                    r["torch_over_pez"] = round(r["torch_s_per_step_median"] / r["pez_s_per_step"], 3)
                print(json.dumps(r), flush=True)
                results.append(r)
                # rewritten after every row: a run stopped by the device's time limit keeps what it measured
                json.dump({"torch": torch.__version__, "results": results, "complete": False}, open(out, "w"), indent=1)
        del model
    json.dump({"torch": torch.__version__, "results": results, "complete": True}, open(out, "w"), indent=1)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
