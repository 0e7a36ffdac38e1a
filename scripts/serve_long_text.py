"""Latency and memory of one long text to a pez-serve classifier, read whole (issue 16's 8,192-token goal).

    python scripts/serve_long_text.py --url http://127.0.0.1:8091 --pid PID --classifier sst2-pez \
        [--tokens 256,1024,2048,4096,8192] [--out evals/serve/long_text.json]

Start the server with `max_text_tokens` at least the longest length (e.g. `[limits]\nmax_text_tokens = 8192` in
its --config), so the text is not cut. Lengths run shortest first; each is one request on an idle server. The
extra memory of a length is the server's peak resident size (VmHWM) after it minus the resident size before
the first request, so it includes everything the server kept from shorter texts.
"""
import argparse
import json
import time

from serve_rss import httpx, status_mib  # the same client and /proc reader as the memory-under-load script

WORDS = ("the film is a quiet , patient study of grief and it earns every one of its small , hard won moments "
         "although the second half drags and the score never lets a scene speak for itself").split()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--tokens", default="256,1024,2048,4096,8192")
    ap.add_argument("--out")
    a = ap.parse_args()
    client = httpx.Client(timeout=1800)
    base = status_mib(a.pid, "VmRSS")
    rows = []
    for target in map(int, a.tokens.split(",")):
        # Words are ~1 token each for SmolLM2's tokenizer; the answer's usage says how many it read.
        text = " ".join(WORDS[i % len(WORDS)] for i in range(target - 8))
        t = time.time()
        r = client.post(a.url + "/v1/classify", json={"model": a.classifier, "input": text})
        secs = time.time() - t
        r.raise_for_status()
        j = r.json()
        row = {"target_tokens": target, "prompt_tokens": j["usage"]["prompt_tokens"], "truncated": j["data"][0]["truncated"],
               "seconds": round(secs, 2), "label": j["data"][0]["label"],
               "peak_rss_mib": round(status_mib(a.pid, "VmHWM")), "extra_peak_mib": round(status_mib(a.pid, "VmHWM") - base)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        json.dump({"rss_before_mib": round(base), "runs": rows}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
