#!/usr/bin/env python3
"""Tiny random checkpoints and their reference outputs, made with PyTorch + transformers.

Writes crates/pez-models/tests/fixtures/<arch>/{config.json, model.safetensors, expected.safetensors}.
The Rust golden tests load the checkpoint with our code and compare against `expected.safetensors`.
With --smollm2 GGUF it also writes reference log-probs and tokenizer ids for the real SmolLM2 weights.

    pip install torch transformers gguf safetensors open-clip-torch
    python scripts/make_fixtures.py [--smollm2 models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse, json, os, pathlib
import torch
import transformers as tf
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "crates/pez-models/tests/fixtures"
SHARED = ROOT.parent / "shared/data"


def save_model(name, model, extra_files=None):
    # Random init leaves norms at 1 (or Gemma's at 0) and biases at 0: perturb every parameter so the golden
    # tests see every weight.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    d = FIX / name
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    for junk in ["generation_config.json"]:
        if (d / junk).exists():
            (d / junk).unlink()
    return d


def ids_and_mask(vocab, lengths, s, g, high=None):
    ids = torch.randint(0, high or vocab, (len(lengths), s), generator=g)
    mask = torch.zeros(len(lengths), s, dtype=torch.long)
    for i, l in enumerate(lengths):
        mask[i, :l] = 1
    return ids, mask


def expected(d, **tensors):
    save_file({k: v.detach().contiguous().float() if v.is_floating_point() else v.contiguous() for k, v in tensors.items()},
              d / "expected.safetensors")


LENGTHS = [7, 5]
S = 7


@torch.no_grad()
def causal(name, cfg, cls):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = cls(cfg).eval()
    d = save_model(name, m)
    ids, mask = ids_and_mask(cfg.vocab_size, LENGTHS, S, g)
    logits = m(input_ids=ids, attention_mask=mask).logits
    expected(d, input_ids=ids.to(torch.int64), lengths=torch.tensor(LENGTHS), logits=logits)


@torch.no_grad()
def t5():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cfg = tf.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0)
    m = tf.T5ForConditionalGeneration(cfg).eval()
    d = save_model("t5", m)
    ids, mask = ids_and_mask(64, LENGTHS, S, g)
    dec = torch.zeros(2, 1, dtype=torch.long)
    out = m(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
    expected(d, input_ids=ids, lengths=torch.tensor(LENGTHS), logits=out.logits[:, 0],
             encoder_hidden=out.encoder_last_hidden_state)


@torch.no_grad()
def bert():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32)
    m = tf.BertModel(cfg, add_pooling_layer=False).eval()
    d = save_model("bert", m)
    ids, mask = ids_and_mask(64, LENGTHS, S, g)
    h = m(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    expected(d, input_ids=ids, lengths=torch.tensor(LENGTHS), hidden=h, mean_pooled=pooled)


@torch.no_grad()
def clip(name, act):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    vocab = 64
    cfg = tf.CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, hidden_act=act,
                         eos_token_id=vocab - 1, bos_token_id=vocab - 2, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act=act),
        projection_dim=24)
    m = tf.CLIPModel(cfg).eval()
    d = save_model(name, m)
    ids = torch.randint(1, vocab - 2, (2, S), generator=g)
    eot = torch.tensor([6, 4])
    for i, p in enumerate(eot):
        ids[i, p] = vocab - 1  # EOT is the largest id, so argmax pooling and eos-id pooling agree
        ids[i, p + 1:] = 0
    tm = m.text_model(input_ids=ids)
    text_features = m.text_projection(tm.pooler_output)
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    vm = m.vision_model(pixel_values=pixels)
    image_features = m.visual_projection(vm.pooler_output)
    expected(d, input_ids=ids, eot=eot, text_hidden=tm.last_hidden_state, text_features=text_features,
             pixel_values=pixels, image_features=image_features)


@torch.no_grad()
def openclip_native():
    """A tiny random OpenCLIP model made by open_clip itself, saved in open_clip's own layout (open_clip_config.json
    with model_cfg/preprocess_cfg, state-dict names such as transformer.resblocks.0.attn.in_proj_weight), once as
    safetensors and once as a PyTorch pickle; expected = open_clip's encode_text / encode_image."""
    import open_clip
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    vocab = 64
    model_cfg = dict(embed_dim=24, quick_gelu=False,
                     vision_cfg=dict(image_size=32, layers=2, width=32, head_width=8, patch_size=8, mlp_ratio=1.5),
                     text_cfg=dict(context_length=16, vocab_size=vocab, width=32, heads=4, layers=2, mlp_ratio=1.5))
    m = open_clip.CLIP(**model_cfg).eval()
    gp = torch.Generator().manual_seed(1)
    for p in m.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=gp))
    config = dict(model_cfg=model_cfg, preprocess_cfg=dict(mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]))
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    ids = torch.randint(1, vocab - 2, (2, 16), generator=g)  # CLIP.encode_text takes the whole context
    eot = torch.tensor([6, 4])
    for i, p in enumerate(eot):
        ids[i, p] = vocab - 1  # open_clip pools at the argmax id: the end-of-text token is the largest
        ids[i, p + 1:] = 0
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    for name, write in [("openclip_native", lambda d: save_file(sd, d / "open_clip_model.safetensors")),
                        ("openclip_native_bin", lambda d: torch.save(sd, d / "open_clip_pytorch_model.bin"))]:
        d = FIX / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "open_clip_config.json").write_text(json.dumps(config, indent=1))
        write(d)
        expected(d, input_ids=ids, eot=eot, text_features=m.encode_text(ids), pixel_values=pixels,
                 image_features=m.encode_image(pixels))


def gemma3_cfg():
    return tf.Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                               sliding_window=4, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                               max_position_embeddings=64, hidden_activation="gelu_pytorch_tanh",
                               tie_word_embeddings=True, rope_theta=1e6, rope_local_base_freq=1e4)


@torch.no_grad()
def smollm2(gguf):
    gguf = pathlib.Path(gguf)
    tok = tf.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    m = tf.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    texts = ["The movie was", "Hard prompts made easy: gradient-based discrete optimization",
             "a gripping, funny and 100% heartfelt film . It was", "Paris is the capital of"]
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        lp = torch.log_softmax(m(input_ids=torch.tensor([ids])).logits[0], -1)
        top = lp.topk(20, -1)
        out.append(dict(text=t, ids=ids, top_ids=top.indices.tolist(), top_logprobs=top.values.tolist()))
    d = FIX / "smollm2"
    d.mkdir(parents=True, exist_ok=True)
    (d / "next_token.json").write_text(json.dumps(out))
    rows = [l.split("\t")[0] for l in (SHARED / "sst2/dev.tsv").read_text().splitlines()[1:]]
    ids = [tok(r, add_special_tokens=False)["input_ids"] for r in rows]
    (d / "sst2_dev_ids.json").write_text(json.dumps(dict(source="shared/data/sst2/dev.tsv", ids=ids)))


@torch.no_grad()
def gemma3_real(gguf):
    """Reference log-probs and tokenizer ids for the real Gemma 3 270M GGUF (dequantized by transformers)."""
    gguf = pathlib.Path(gguf)
    tok = tf.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    m = tf.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    texts = ["The movie was", "Paris is the capital of", "a gripping, funny and 100% heartfelt film . It was"]
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=True)["input_ids"]
        lp = torch.log_softmax(m(input_ids=torch.tensor([ids])).logits[0], -1)
        top = lp.topk(20, -1)
        out.append(dict(text=t, ids=ids, top_ids=top.indices.tolist(), top_logprobs=top.values.tolist()))
    d = FIX / "gemma3_real"
    d.mkdir(parents=True, exist_ok=True)
    (d / "next_token.json").write_text(json.dumps(out))
    rows = [l.split("\t")[0] for l in (SHARED / "sst2/dev.tsv").read_text().splitlines()[1:]]
    ids = [tok(r, add_special_tokens=False)["input_ids"] for r in rows]
    (d / "sst2_dev_ids.json").write_text(json.dumps(dict(source="shared/data/sst2/dev.tsv", ids=ids)))


TRANSFER_WORDS = ("[UNK] It was negative positive the a film movie great bad good awful fun dull plot actors story "
                  "is not very really best worst boring lovely").split()
TRANSFER_ROWS = [("the film is great", 1), ("a bad movie", 0), ("really good story", 1), ("awful actors", 0),
                 ("very fun plot", 1), ("the worst film", 0), ("lovely movie", 1), ("boring story", 0),
                 ("not good", 0), ("the best actors", 1), ("a dull plot", 0), ("great fun", 1)]
TRANSFER_PROMPTS = ["", "film great bad movie", "positive negative the story"]


@torch.no_grad()
def transfer():
    """Tiny word-level tokenizer + tiny GPT-2 / OPT / T5 with tokenizers, a 12-row task, and the accuracy of three
    prompts computed independently with transformers: the reference for the transfer pipeline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(TRANSFER_WORDS)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    d = FIX / "transfer"
    d.mkdir(parents=True, exist_ok=True)
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in TRANSFER_ROWS))
    (d / "task.toml").write_text('name = "tiny-sst2"\ntemplate = " It was"\nverbalizers = [" negative", " positive"]\n'
                                 'label_names = ["negative", "positive"]\ndev = "dev.tsv"\n[format]\ndelimiter = "\\t"\n'
                                 'header = true\nquoting = false\ntext_columns = ["sentence"]\nlabel_column = "label"\n')
    V = 64
    cfgs = {
        "gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=32)),
        "opt": (tf.OPTForCausalLM, tf.OPTConfig(vocab_size=V, hidden_size=32, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
                                                max_position_embeddings=32, word_embed_proj_dim=32, pad_token_id=1)),
        "t5": (tf.T5ForConditionalGeneration, tf.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                                           relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                                           tie_word_embeddings=False, decoder_start_token_id=0)),
    }
    enc = lambda s: t.encode(s).ids
    verb = [enc(" negative")[0], enc(" positive")[0]]
    expected, margins = {}, {}
    for name, (cls, cfg) in cfgs.items():
        torch.manual_seed(5)
        m = cls(cfg).eval()
        md = save_model(f"transfer/{name}", m)
        t.save(str(md / "tokenizer.json"))
        expected[name] = {}
        margins[name] = {}
        for prompt in TRANSFER_PROMPTS:
            correct, margin = [], []
            for text, label in TRANSFER_ROWS:
                ids = (enc(prompt) if prompt else []) + enc(text) + enc(" It was")
                x = torch.tensor([ids])
                if name == "t5":
                    logits = m(input_ids=x, decoder_input_ids=torch.zeros(1, 1, dtype=torch.long)).logits[0, -1]
                else:
                    logits = m(input_ids=x).logits[0, -1]
                correct.append(int(int(logits[verb].argmax()) == label))
                margin.append(float(logits[verb[1]] - logits[verb[0]]))
            expected[name][prompt] = correct
            margins[name][prompt] = margin
    (d / "expected.json").write_text(json.dumps(dict(prompts=TRANSFER_PROMPTS, correct=expected, margin=margins), indent=1))


@torch.no_grad()
def minilm_real(d):
    """Mean-pooled last hidden states of all-MiniLM-L6-v2 (the real safetensors) for a few sentences."""
    d = pathlib.Path(d)
    tok = tf.AutoTokenizer.from_pretrained(d)
    m = tf.AutoModel.from_pretrained(d, dtype=torch.float32).eval()
    texts = ["a photo of a cat", "Hard prompts made easy: gradient-based discrete optimization for prompt tuning and discovery",
             "an astronaut riding a horse on mars, 8k, octane render"]
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt")
        h = m(**enc).last_hidden_state[0]
        out.append(dict(text=t, ids=enc["input_ids"][0].tolist(), mean_pooled=h.mean(0).tolist()))
    o = FIX / "minilm_real"
    o.mkdir(parents=True, exist_ok=True)
    (o / "features.json").write_text(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", help="path to SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--gemma3", help="path to gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--minilm", help="path to the all-MiniLM-L6-v2 directory")
    ap.add_argument("--only", nargs="*")
    a = ap.parse_args()
    jobs = {
        "gpt2": lambda: causal("gpt2", tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32), tf.GPT2LMHeadModel),
        "opt": lambda: causal("opt", tf.OPTConfig(vocab_size=64, hidden_size=32, ffn_dim=48, num_hidden_layers=2,
                                                    num_attention_heads=4, max_position_embeddings=32,
                                                    word_embed_proj_dim=32, pad_token_id=1), tf.OPTForCausalLM),
        "opt350": lambda: causal("opt350", tf.OPTConfig(vocab_size=64, hidden_size=32, ffn_dim=48, num_hidden_layers=2,
                                                          num_attention_heads=4, max_position_embeddings=32,
                                                          word_embed_proj_dim=16, do_layer_norm_before=False,
                                                          pad_token_id=1), tf.OPTForCausalLM),
        "llama": lambda: causal("llama", tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                        max_position_embeddings=32, rope_theta=10000.0,
                                                        tie_word_embeddings=True), tf.LlamaForCausalLM),
        "gemma3": lambda: causal("gemma3", gemma3_cfg(), tf.Gemma3ForCausalLM),
        "t5": t5,
        "bert": bert,
        "clip": lambda: clip("clip", "quick_gelu"),
        "openclip": lambda: clip("openclip", "gelu"),
        "openclip_native": openclip_native,
        "transfer": transfer,
    }
    for name, job in jobs.items():
        if a.only and name not in a.only:
            continue
        job()
        print("wrote", FIX / name)
    if a.minilm:
        minilm_real(a.minilm)
        print("wrote", FIX / "minilm_real")
    if a.gemma3:
        gemma3_real(a.gemma3)
        print("wrote", FIX / "gemma3_real")
    if a.smollm2:
        smollm2(a.smollm2)
        print("wrote", FIX / "smollm2")


if __name__ == "__main__":
    main()
