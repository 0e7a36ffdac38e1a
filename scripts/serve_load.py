"""Load benchmark for pez-serve (loopback only, bounded): N concurrent clients send R requests in total.

    python scripts/serve_load.py --url http://127.0.0.1:8090 --mode classify --model sst2-pez
    python scripts/serve_load.py --url http://127.0.0.1:8090 --mode completion --model smollm2-135m --prefix "<prompt>" --suffix " It was"

`classify` posts one SST-2 dev sentence per /v1/classify request; `completion` posts the same work as a plain
`max_tokens: 1` completion on the base model (prompt + sentence + template), the yardstick. Prints throughput,
p50/p99 latency and the status counts. A tiny keep-alive HTTP/1.1 client on asyncio keeps the load generator's
own CPU use small (the server shares the machine).
"""
import argparse
import asyncio
import csv
import json
import os
import time
from urllib.parse import urlparse


async def worker(host, port, bodies, path, next_i, lat, status):
    reader, writer = await asyncio.open_connection(host, port)
    while True:
        i = next_i[0]
        if i >= len(bodies):
            break
        next_i[0] += 1
        body = bodies[i]
        t = time.perf_counter()
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        code = int(lines[0].split()[1])
        length = next(int(l.split(":")[1]) for l in lines if l.lower().startswith("content-length:"))
        await reader.readexactly(length)
        lat.append(time.perf_counter() - t)
        status[code] = status.get(code, 0) + 1
    writer.close()


async def run(a):
    u = urlparse(a.url)
    with open(a.data, newline="") as f:
        texts = [r["sentence"].strip() for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    texts = [texts[i % len(texts)] for i in range(a.requests)]
    if a.mode == "classify":
        path = "/v1/classify"
        bodies = [json.dumps({"model": a.model, "input": t}).encode() for t in texts]
    else:
        path = "/v1/completions"
        bodies = [json.dumps({"model": a.model, "prompt": a.prefix + t + a.suffix, "max_tokens": 1, "temperature": 0}).encode() for t in texts]
    lat, status, next_i = [], {}, [0]
    t0 = time.perf_counter()
    await asyncio.gather(*[worker(u.hostname, u.port, bodies, path, next_i, lat, status) for _ in range(a.clients)])
    wall = time.perf_counter() - t0
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    res = {"mode": a.mode, "model": a.model, "clients": a.clients, "requests": len(lat), "wall_s": round(wall, 2),
           "throughput_rps": round(len(lat) / wall, 2), "p50_ms": round(pct(0.50), 1), "p99_ms": round(pct(0.99), 1),
           "status": status, "5xx": sum(v for k, v in status.items() if k >= 500)}
    print(json.dumps(res))
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(res) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--mode", choices=["classify", "completion"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prefix", default="", help="completion mode: text put before each sentence (the learned prompt)")
    ap.add_argument("--suffix", default="", help="completion mode: text put after each sentence (the template)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--data", default=os.path.join(os.environ.get("PEZ_DATA", "../shared/data"), "sst2/dev.tsv"))
    ap.add_argument("--out", help="append the result as a JSON line")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
