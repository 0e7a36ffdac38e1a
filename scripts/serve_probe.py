"""Hostile requests and hang-ups against a running pez-serve (issue 16's probe).

    python scripts/serve_probe.py --url http://127.0.0.1:8091 --classifier sst2-pez --base smollm2-135m \
        --log serve.log [--disconnects 200]

Every request must be answered within 5 s (the server runs with 3 s header/body timeouts), no bad input may get
a 5xx, every 4xx must be an OpenAI-shaped error ({"error": {"message", "type", "param", "code"}}), /health must
stay 200 after each, and a fixed canary set keeps its labels. Then `--disconnects` requests whose clients hang up
at random moments (classifications, classifier streams, base-model chat and streams); afterwards the server log
must hold no panic and requests must succeed. /metrics is parsed with prometheus_client's OpenMetrics parser (strict: it refuses a malformed exposition).
Exits non-zero on any failure.
"""
import argparse
import concurrent.futures as cf
import json
import random
import socket
import sys
import time
from urllib.parse import urlparse

try:
    import httpx
except ImportError:  # openai >= 3 ships httpx2
    import httpx2 as httpx

DEADLINE = 5.0
CANARY = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate cliches from start to finish.",
    "it's a charming and often affecting journey.",
    "unflinchingly bleak and desperate",
    "a masterpiece four years in the making",
    "the acting is amateurish and the script is a mess.",
    "an utterly compelling `who wrote it' in which the reputation of the most famous author who ever lived comes into question.",
    "it's slow -- very, very slow.",
]


class Probe:
    def __init__(self, url, classifier, base):
        self.url, self.classifier, self.base = url.rstrip("/"), classifier, base
        u = urlparse(self.url)
        self.host, self.port = u.hostname, u.port
        # Pooled connections are dropped after 1 s idle, under the server's idle timeout (3 s in serve_check): a
        # connection the server has closed meanwhile would otherwise be reused and fail as "disconnected".
        self.client = httpx.Client(timeout=DEADLINE + 5, limits=httpx.Limits(keepalive_expiry=1.0))
        self.failures, self.count = [], 0

    def fail(self, what):
        print("FAIL " + what)
        self.failures.append(what)

    def health(self, after):
        r = self.client.get(self.url + "/health", timeout=DEADLINE)
        if r.status_code != 200:
            self.fail(f"/health {r.status_code} after {after}: {r.text[:200]}")

    def check(self, name, method, path, *, body=None, raw=None, headers=None, want=(400,), good=None, deadline=DEADLINE):
        """One request: answered within `deadline` with a status in `want`; errors OpenAI-shaped; `good(r)` holds."""
        self.count += 1
        t0 = time.time()
        try:
            h = {"content-type": "application/json", **(headers or {})}
            content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            r = self.client.request(method, self.url + path, content=content, headers=h, timeout=deadline)
        except Exception as e:  # a timeout is a hang
            self.fail(f"{name}: no answer within {deadline} s ({type(e).__name__})")
            self.health(name)
            return None
        dt = time.time() - t0
        ok = r.status_code in want
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                shaped = all(k in err for k in ("message", "type", "param", "code")) and isinstance(err["message"], str)
            except Exception:
                shaped = False
            if not shaped:
                self.fail(f"{name}: {r.status_code} not in OpenAI's error shape: {r.text[:200]!r}")
        if r.status_code >= 500:
            self.fail(f"{name}: {r.status_code} from bad input: {r.text[:200]}")
        elif not ok:
            self.fail(f"{name}: status {r.status_code}, wanted {want}: {r.text[:200]}")
        elif good is not None and not good(r):
            self.fail(f"{name}: answer not as expected: {r.text[:300]}")
        else:
            print(f"ok   {name}: {r.status_code} in {dt:.2f} s")
        self.health(name)
        return r

    def raw(self, name, data, *, expect, trickle=None, wait=DEADLINE):
        """Bytes on a socket; `expect(reply_bytes, closed)` judges what came back within `wait` s."""
        self.count += 1
        s = socket.create_connection((self.host, self.port), timeout=wait)
        t0 = time.time()
        try:
            s.sendall(data)
            if trickle:
                trickle(s)
            s.settimeout(wait)
            buf, closed = b"", False
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        closed = True
                        break
                    buf += chunk
                    if b"\r\n\r\n" in buf and _complete(buf):
                        break
            except socket.timeout:
                pass
        finally:
            s.close()
        dt = time.time() - t0
        verdict = expect(buf, closed)
        if verdict is True:
            first = buf.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
            print(f"ok   {name}: {first} in {dt:.2f} s")
        else:
            self.fail(f"{name}: {verdict} (got {buf[:300]!r}, closed={closed}, {dt:.2f} s)")
        self.health(name)


def _complete(buf):
    head, _, body = buf.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def error_json(buf):
    head, _, body = buf.partition(b"\r\n\r\n")
    try:
        e = json.loads(body)["error"]
        return all(k in e for k in ("message", "type", "param", "code"))
    except Exception:
        return False


def status_of(buf):
    try:
        return int(buf.split(b" ", 2)[1])
    except Exception:
        return None


def labels(p, texts):
    r = p.client.post(p.url + "/v1/classify", json={"model": p.classifier, "input": texts}, timeout=60)
    r.raise_for_status()
    return [d["label"] for d in r.json()["data"]]


def hostile(p):
    C, B = p.classifier, p.base
    user = [{"role": "user", "content": "a fine film"}]
    chat, comp, cls = "/v1/chat/completions", "/v1/completions", "/v1/classify"
    shaped = lambda r: "error" in r.json()
    # Classifiers: malformed or odd bodies.
    p.check("malformed JSON", "POST", cls, raw=b'{"model": ')
    p.check("JSON array body", "POST", cls, raw=b'["a"]')
    p.check("missing model", "POST", cls, body={"input": "x"})
    p.check("model not a string", "POST", cls, body={"model": 123, "input": "x"})
    p.check("unknown model", "POST", cls, body={"model": "nope", "input": "x"}, want=(404,))
    p.check("path-like model", "POST", cls, body={"model": "../../../../etc/passwd", "input": "x"}, want=(404,))
    p.check("huge model name", "POST", cls, body={"model": "m" * 100_000, "input": "x"}, want=(404,))
    p.check("missing input", "POST", cls, body={"model": C})
    p.check("empty input", "POST", cls, body={"model": C, "input": ""})
    p.check("input []", "POST", cls, body={"model": C, "input": []})
    p.check("input of numbers", "POST", cls, body={"model": C, "input": [1, 2]})
    p.check("input of nulls", "POST", cls, body={"model": C, "input": [None]})
    p.check("2,049 inputs", "POST", cls, body={"model": C, "input": ["x"] * 2049})
    p.check("1 MB text, cut and classified", "POST", cls, body={"model": C, "input": "a great film " * 80_000}, want=(200,),
            good=lambda r: r.json()["data"][0]["truncated"] is True)
    p.check("1 MB word without spaces", "POST", cls, body={"model": C, "input": "a" * 1_000_000}, want=(200,),
            good=lambda r: r.json()["data"][0]["truncated"] is True)
    p.check("5 MB body", "POST", cls, raw=json.dumps({"model": C, "input": "x" * 5_000_000}).encode(), want=(413,))
    p.check("nesting 100,000 deep", "POST", cls, raw=b'{"model": "' + C.encode() + b'", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    p.check("invalid UTF-8", "POST", cls, raw=b'{"model": "' + C.encode() + b'", "input": "\xff\xfe\xfd"}')
    p.check("ad-hoc without template", "POST", cls, body={"model": B, "input": "x"})
    p.check("ad-hoc verbalizers sharing a token", "POST", cls, body={"model": B, "input": "x", "template": " It was", "verbalizers": [" good", " good"]})
    p.check("GET on a POST route", "GET", cls, want=(405,))
    p.check("unknown route", "POST", "/v1/nothing", body={}, want=(404,))
    p.check("unknown model by id", "GET", "/v1/models/nope", want=(404,))
    # Classifiers through chat and completions.
    p.check("chat: 10,000 content parts", "POST", chat, body={"model": C, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 10_000}]})
    p.check("chat: image part naming a local file", "POST", chat, body={"model": C, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]})
    p.check("chat: null content", "POST", chat, body={"model": C, "messages": [{"role": "user", "content": None}]})
    p.check("chat: no messages", "POST", chat, body={"model": C, "messages": []})
    p.check("chat: no user message", "POST", chat, body={"model": C, "messages": [{"role": "system", "content": "x"}]})
    p.check("chat: stream not a boolean", "POST", chat, body={"model": C, "stream": "yes", "messages": user})
    p.check("chat: 1 MB message", "POST", chat, body={"model": C, "messages": [{"role": "user", "content": "so good " * 125_000}]}, want=(200,))
    p.check("completions: empty prompt", "POST", comp, body={"model": C, "prompt": ""})
    # Base-model generation: checked before mistral.rs.
    for name, extra in [
        ("max_tokens 0", {"max_tokens": 0}), ("max_tokens 1e9", {"max_tokens": 1_000_000_000}), ("n 1000", {"n": 1000}),
        ("n 64", {"n": 64}), ("repetition_penalty 0", {"repetition_penalty": 0}), ("temperature -1", {"temperature": -1}),
        ("top_p 2", {"top_p": 2}), ("top_logprobs 50", {"logprobs": True, "top_logprobs": 50}),
        ("invalid grammar", {"grammar": {"type": "regex", "value": "("}}), ("web search", {"web_search_options": {}}),
        ("stop of 10 strings", {"stop": ["a"] * 10}),
    ]:
        p.check(f"base chat: {name}", "POST", chat, body={"model": B, "messages": user, **extra})
    p.check("base chat: null content", "POST", chat, body={"model": B, "messages": [{"role": "user", "content": None}]})
    p.check("base chat: no messages", "POST", chat, body={"model": B, "messages": []})
    for kind, url in [("image_url", "http://127.0.0.1:9/x.png"), ("image_url", "file:///work/models/x.gguf"), ("audio_url", "http://127.0.0.1:9/a.wav")]:
        p.check(f"base chat: {kind} {url}", "POST", chat, body={"model": B, "messages": [{"role": "user", "content": [{"type": kind, kind: {"url": url}}]}]})
    # Not hostile: a real generation, given the time mistral.rs needs here (~5 s for a chat prompt, see NOTES).
    p.check("base chat: text parts, made plain", "POST", chat, body={"model": B, "max_tokens": 2, "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]}, want=(200,),
            good=lambda r: r.json()["model"] == B and r.json()["usage"]["completion_tokens"] <= 2, deadline=60)
    p.check("base completions: prompt array", "POST", comp, body={"model": B, "prompt": ["a", "b"]})
    p.check("base completions: prompt past the context", "POST", comp, body={"model": B, "prompt": "word " * 10_000, "max_tokens": 2})
    # Protocol: announced sizes, stalls, duplicates.
    hp = f"{p.host}:{p.port}"
    p.raw("Content-Length 10^12", f"POST /v1/classify HTTP/1.1\r\nHost: {hp}\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n".encode(),
          expect=lambda b, c: True if status_of(b) == 413 and error_json(b) else "wanted an OpenAI-shaped 413")
    p.raw("body shorter than Content-Length", f"POST /v1/classify HTTP/1.1\r\nHost: {hp}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\"".encode(),
          expect=lambda b, c: True if status_of(b) == 408 and error_json(b) else "wanted an OpenAI-shaped 408")
    p.raw("headers never finished", f"POST /v1/classify HTTP/1.1\r\nHost: {hp}\r\n".encode(),
          expect=lambda b, c: True if c else "connection not closed")
    # hyper refuses conflicting lengths while parsing, before our code runs: a 400 without a body.
    p.raw("two Content-Length headers", f"POST /v1/classify HTTP/1.1\r\nHost: {hp}\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\n{{}}".encode(),
          expect=lambda b, c: True if status_of(b) == 400 or (c and not b) else "wanted 400 or a closed connection")
    r = p.check("x-request-id echoed", "GET", "/v1/models", headers={"x-request-id": "probe-123"}, want=(200,))
    if r is not None and r.headers.get("x-request-id") != "probe-123":
        p.fail("x-request-id not echoed")


def disconnects(p, n, seed=0):
    """`n` requests whose clients hang up at random moments, 16 at a time."""
    rng = random.Random(seed)
    kinds = [
        ("/v1/classify", {"model": p.classifier, "input": CANARY * 16}),
        ("/v1/chat/completions", {"model": p.classifier, "stream": True, "messages": [{"role": "user", "content": "a fine film"}]}),
        # Short prompts and outputs: mistral.rs runs ~9 tokens/s on this CPU (NOTES), and hung-up generations
        # still run to their end.
        ("/v1/completions", {"model": p.base, "max_tokens": 2, "prompt": "Once upon"}),
        ("/v1/completions", {"model": p.base, "max_tokens": 2, "stream": True, "prompt": "Once upon"}),
    ]

    def one(i):
        path, body = kinds[i % len(kinds)]
        data = json.dumps(body).encode()
        s = socket.create_connection((p.host, p.port))
        try:
            req = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
            cut = rng.random()
            if cut < 0.2:  # mid-body
                s.sendall(req[: rng.randrange(1, len(req))])
            else:
                s.sendall(req)
                s.settimeout(rng.uniform(0.01, 2.0))  # mid-queue, mid-batch, mid-generation, mid-stream
                try:
                    s.recv(rng.choice([1, 200, 65536]))
                except socket.timeout:
                    pass
        finally:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            s.close()

    t0 = time.time()
    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(one, range(n)))
    print(f"ok   {n} hang-ups in {time.time() - t0:.1f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="the server, without /v1")
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--log", required=True, help="the server's log file (checked for panics)")
    ap.add_argument("--disconnects", type=int, default=200)
    a = ap.parse_args()
    p = Probe(a.url, a.classifier, a.base)
    before = labels(p, CANARY)
    hostile(p)
    disconnects(p, a.disconnects)
    # Afterwards: the server answers, the canary keeps its labels, nothing panicked.
    deadline = time.time() + 60
    while time.time() < deadline and p.client.get(p.url + "/health").status_code != 200:
        time.sleep(1)
    p.health("the hang-ups")
    after = labels(p, CANARY)
    if after != before:
        p.fail(f"canary labels changed: {before} -> {after}")
    else:
        print(f"ok   canary labels unchanged: {after}")
    r = p.client.post(p.url + "/v1/chat/completions", json={"model": a.base, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}, timeout=120)
    if r.status_code != 200:
        p.fail(f"base chat after the hang-ups: {r.status_code} {r.text[:200]}")
    log = open(a.log, errors="replace").read()
    if "panicked" in log:
        p.fail("a panic in the server log: " + log[log.index("panicked") - 200: log.index("panicked") + 300])
    else:
        print("ok   no panic in the server log")
    try:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    except ImportError:
        import subprocess
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "prometheus_client"], check=True)
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    fams = {f.name: f for f in text_string_to_metric_families(p.client.get(p.url + "/metrics").text)}
    need = ["pez_requests", "pez_request_duration_seconds", "pez_classifier_batch_texts", "process_resident_memory_bytes", "pez_cancelled_texts"]
    missing = [n for n in need if n not in fams]
    fivexx = sum(s.value for s in fams["pez_requests"].samples if s.labels.get("status", "").startswith("5")) if "pez_requests" in fams else -1
    if missing:
        p.fail(f"/metrics lacks {missing}: {sorted(fams)}")
    else:
        print(f"ok   /metrics parsed: {len(fams)} families, 5xx answered: {fivexx:g}, "
              f"cancelled texts: {fams['pez_cancelled_texts'].samples[0].value:g}")
    if fivexx != 0:
        p.fail(f"{fivexx:g} 5xx answers counted in /metrics")
    print(f"{p.count} probes, {len(p.failures)} failure(s)")
    sys.exit(1 if p.failures else 0)


if __name__ == "__main__":
    main()
