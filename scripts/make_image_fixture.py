#!/usr/bin/env python3
"""Reference CLIP preprocessing of the shared images, as torchvision does it on PIL images (Resize(224, BICUBIC)
of the short side, CenterCrop(224), ToTensor, Normalize with OpenAI's mean/std), written without torchvision
(same rules: int() of the scaled long side, round-half-even crop offsets).

Writes crates/pez-invert/tests/fixtures/preprocess.json: per image, 400 sampled 8-bit pixels of the crop and the
per-channel means of the normalised tensor.    pip install pillow numpy; python scripts/make_image_fixture.py
"""
import json, pathlib, random
import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
IMG = ROOT.parent / "shared/data/clip_images"
OUT = ROOT / "crates/pez-invert/tests/fixtures/preprocess.json"
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
S = 224
res = {}
for p in sorted(IMG.iterdir()):
    if p.suffix not in (".png", ".jpg"):
        continue
    im = Image.open(p).convert("RGB")
    w, h = im.size
    nw, nh = (S, int(S * h / w)) if w <= h else (int(S * w / h), S)
    r = im.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - S) / 2.0)), int(round((nw - S) / 2.0))
    c = np.asarray(r.crop((left, top, left + S, top + S)))
    x = (c.astype(np.float32) / 255.0 - MEAN) / STD
    rng = random.Random(0)
    pos = [(rng.randrange(S), rng.randrange(S), rng.randrange(3)) for _ in range(400)]
    res[p.name] = dict(size=[w, h], resized=[nw, nh], samples=[[y, xx, ch, int(c[y, xx, ch])] for y, xx, ch in pos],
                       channel_means=x.reshape(-1, 3).mean(0).tolist())
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(res))
print("wrote", OUT)
