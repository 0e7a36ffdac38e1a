"""Talks to a running pez-serve with the official `openai` package and checks what it answers.

    python scripts/serve_client_check.py --url http://127.0.0.1:8090/v1 --classifier NAME --base smollm2-135m \
        --predictions eval_predictions.jsonl --data ../shared/data/sst2/dev.tsv

Checks: the model list, a classifier through chat completions (with label logprobs) and completions, plain chat
on the base model (mistral.rs), OpenAI-shaped errors (400, 404), and that /v1/classify gives the same label as
`pez eval --predictions` for every example of --data. Exits non-zero on any difference.
"""
import argparse
import csv
import json
import math
import sys

try:
    import httpx
except ImportError:  # openai >= 3 ships httpx2
    import httpx2 as httpx
import openai


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--predictions", required=True, help="pez eval --predictions output for the same prompt and model")
    ap.add_argument("--data", required=True, help="SST-2 dev TSV (sentence, label)")
    a = ap.parse_args()
    client = openai.OpenAI(base_url=a.url, api_key="not-needed", max_retries=0, timeout=600)
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    ids = [m.id for m in client.models.list().data]
    check(a.classifier in ids and a.base in ids, f"models.list has {a.classifier} and {a.base}: {ids}")
    m = client.models.retrieve(a.classifier)
    check(m.id == a.classifier and m.object == "model", f"models.retrieve({a.classifier!r}) -> {m.id!r}")

    text = "a gorgeous, witty, seductive movie."
    r = client.chat.completions.create(model=a.classifier, messages=[{"role": "user", "content": text}], logprobs=True, top_logprobs=2)
    label = r.choices[0].message.content
    lp = r.choices[0].logprobs.content[0]
    probs = sum(math.exp(t.logprob) for t in lp.top_logprobs)
    check(label in ("negative", "positive") and lp.token == label and abs(probs - 1) < 1e-4,
          f"chat.completions on the classifier: {label!r}, label logprobs {[(t.token, round(t.logprob, 4)) for t in lp.top_logprobs]}")

    chunks = list(client.chat.completions.create(model=a.classifier, messages=[{"role": "user", "content": text}], stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(streamed == label and chunks[-1].choices[0].finish_reason == "stop", f"chat.completions stream=True on the classifier: {streamed!r} in {len(chunks)} chunk(s)")

    r = client.completions.create(model=a.classifier, prompt=[text, "the plot is nothing but boilerplate cliches"], max_tokens=1, logprobs=2)
    check([c.text for c in r.choices][0] == label and len(r.choices) == 2, f"completions on the classifier: {[c.text for c in r.choices]}")

    r = client.chat.completions.create(model=a.base, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=2)
    check(isinstance(r.choices[0].message.content, str) and r.usage.completion_tokens >= 1 and r.model == a.base,
          f"plain chat on the base model through mistral.rs: {r.choices[0].message.content!r}")
    top = r.choices[0].logprobs.content[0].top_logprobs
    check(all(isinstance(t.token, str) and bytes(t.bytes).decode(errors="replace") == t.token for t in top),
          f"base-model top_logprobs in OpenAI's shape: {[(t.token, round(t.logprob, 3)) for t in top]}")

    r = client.completions.create(model=a.base, prompt="The movie was", max_tokens=3, logprobs=2)
    lp = r.choices[0].logprobs
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == r.usage.completion_tokens
          and all(isinstance(t, str) for t in lp.tokens) and all(isinstance(d, dict) and 1 <= len(d) <= 2 for d in lp.top_logprobs)
          and lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))],
          f"base-model completions logprobs in OpenAI's legacy layout: {list(zip(lp.tokens, lp.text_offset))}")
    chunks = [c for c in client.completions.create(model=a.base, prompt="The movie was", max_tokens=3, logprobs=2, stream=True) if c.choices]
    offsets = [o for c in chunks if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset or []]
    tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens or []]
    check(len(tokens) == 3 and offsets == [sum(len(t) for t in tokens[:i]) for i in range(3)],
          f"the same, streamed: {list(zip(tokens, offsets))}")

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        check(False, "unknown model -> 404")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and "does not exist" in str(e), "unknown model -> openai.NotFoundError (404)")
    try:
        client.chat.completions.create(model=a.classifier, messages=[{"role": "user", "content": ""}])
        check(False, "empty input -> 400")
    except openai.BadRequestError as e:
        check(e.status_code == 400, "empty input -> openai.BadRequestError (400)")
    raw = httpx.post(a.url + "/classify", content=b'{"model": ', headers={"content-type": "application/json"})
    check(raw.status_code == 400 and "error" in raw.json(), f"malformed JSON -> {raw.status_code} {raw.json()['error']['type']}")

    with open(a.data, newline="") as f:
        # pez's data loader trims each text; send exactly the texts `pez eval` classified.
        texts = [row["sentence"].strip() for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    want = [json.loads(line)["label"] for line in open(a.predictions)]
    assert len(want) == len(texts), (len(want), len(texts))
    got = []
    for i in range(0, len(texts), 64):
        r = client.post("/classify", body={"model": a.classifier, "input": texts[i:i + 64]}, cast_to=httpx.Response)
        got += [d["label"] for d in r.json()["data"]]
    diff = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    check(not diff, f"/v1/classify equals pez eval on all {len(texts)} examples ({len(diff)} differ: {diff[:10]})")

    print(f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
