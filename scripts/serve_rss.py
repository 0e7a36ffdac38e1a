"""Resident memory of a running pez-serve under mixed load, sampled every second (issue 16).

    python scripts/serve_rss.py --url http://127.0.0.1:8091 --pid PID --classifier sst2-pez --base smollm2-135m \
        --out evals/serve/rss [--warmup 32x60] [--classify 32x60] [--chat 8x4] [--logprob 50]

The issue's full load: --classify 32x2000 --chat 8x200 --logprob 200.

Phases, back to back: a warm-up of W1 x W2 classifications (W1 clients, one SST-2-like sentence each), H1 x H2
plain chat completions (max_tokens 16), L sequential logprob completions (max_tokens 1, top 5), then C1 x C2
classifications. Growth is the RSS at the end over the RSS after the warm-up. Writes OUT.csv (seconds, phase,
RSS MiB; appended every second, so a stopped run keeps its samples), OUT.json (status counts per phase, written
after each phase; RSS after warm-up and at the end, growth) and OUT.svg (RSS over time).
"""
import argparse
import concurrent.futures as cf
import json
import threading
import time

try:
    import httpx
except ImportError:
    import httpx2 as httpx

SENTENCES = [
    "a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate cliches.", "it's a charming journey.",
    "unflinchingly bleak and desperate", "a masterpiece four years in the making", "the acting is amateurish.",
]


def status_mib(pid, key):
    """A size line of /proc/PID/status (VmRSS: resident now, VmHWM: peak resident) in MiB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024


def rss_mib(pid):
    return status_mib(pid, "VmRSS")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--warmup", default="32x60")
    ap.add_argument("--classify", default="32x60")
    ap.add_argument("--chat", default="8x4")
    ap.add_argument("--logprob", type=int, default=50)
    a = ap.parse_args()
    samples, phase, stop = [], ["start"], threading.Event()
    t0 = time.time()

    csv = open(a.out + ".csv", "w")
    csv.write("seconds,phase,rss_mib\n")

    def sampler():
        while not stop.is_set():
            samples.append((round(time.time() - t0, 1), phase[0], round(rss_mib(a.pid), 1)))
            csv.write("%s,%s,%s\n" % samples[-1])
            csv.flush()
            time.sleep(1)

    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    client = httpx.Client(timeout=600)
    statuses = {}

    def run(name, clients, per_client, make):
        phase[0] = name
        counts = {}
        lock = threading.Lock()

        def one(c):
            for i in range(per_client):
                path, body = make(c * per_client + i)
                code = client.post(a.url + path, json=body).status_code
                with lock:
                    counts[code] = counts.get(code, 0) + 1

        t = time.time()
        with cf.ThreadPoolExecutor(clients) as ex:
            list(ex.map(one, range(clients)))
        statuses[name] = {"requests": clients * per_client, "seconds": round(time.time() - t, 1), "status": counts, "rss_end_mib": round(rss_mib(a.pid), 1)}
        print(name, statuses[name], flush=True)
        json.dump({"phases": statuses}, open(a.out + ".json", "w"), indent=1)

    wn, wk = map(int, a.warmup.split("x"))
    cn, ck = map(int, a.classify.split("x"))
    hn, hk = map(int, a.chat.split("x"))
    classify = lambda i: ("/v1/classify", {"model": a.classifier, "input": SENTENCES[i % len(SENTENCES)] + f" ({i})"})
    run("classify (warm-up)", wn, wk, classify)
    warm = rss_mib(a.pid)
    run("chat", hn, hk, lambda i: ("/v1/chat/completions", {"model": a.base, "max_tokens": 16, "messages": [{"role": "user", "content": f"Name a colour. ({i})"}]}))
    run("logprob completions", 1, a.logprob, lambda i: ("/v1/completions", {"model": a.base, "max_tokens": 1, "logprobs": 5, "prompt": f"Review {i}: the movie was"}))
    run("classify", cn, ck, classify)
    time.sleep(2)
    stop.set()
    sampling.join()
    end = rss_mib(a.pid)
    peak = max(s[2] for s in samples)
    summary = {"phases": statuses, "rss_after_warmup_mib": round(warm, 1), "rss_end_mib": round(end, 1), "rss_peak_mib": peak,
               "growth_after_warmup": round(end / warm - 1, 4), "fivexx": sum(v for p in statuses.values() for k, v in p["status"].items() if k >= 500)}
    print(json.dumps(summary, indent=1))
    csv.close()
    json.dump(summary, open(a.out + ".json", "w"), indent=1)
    # A plain SVG line plot (no plotting package needed).
    W, H, L, B = 720, 300, 60, 40
    tmax, rmax = max(s[0] for s in samples) or 1, peak * 1.1
    pts = " ".join(f"{L + (W - L - 10) * t / tmax:.1f},{H - B - (H - B - 10) * r / rmax:.1f}" for t, _, r in samples)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>', f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{pts}"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - 10}" y2="{H - B}" stroke="black"/><line x1="{L}" y1="10" x2="{L}" y2="{H - B}" stroke="black"/>',
           f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">seconds</text>',
           f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">pez-serve RSS (MiB)</text>']
    for k in range(5):
        r = rmax * k / 4
        y = H - B - (H - B - 10) * r / rmax
        svg.append(f'<text x="{L - 4}" y="{y + 4:.1f}" text-anchor="end">{r:.0f}</text>')
    start = {}
    for t, p, _ in samples:
        start.setdefault(p, t)
    for p, t in start.items():
        x = L + (W - L - 10) * t / tmax
        svg.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{H - B}" stroke="#bbb" stroke-dasharray="3,3"/><text x="{x + 3:.1f}" y="22">{p}</text>')
    svg.append("</svg>")
    open(a.out + ".svg", "w").write("\n".join(svg))


if __name__ == "__main__":
    main()
