#!/usr/bin/env python3
"""Function lengths of the Rust sources, after formatting: `fn_lengths.py [--max N] [--max-under DIR=N ...] PATH...`
lists every function longer than its limit (from its `fn` line to its closing brace) and exits 1 if any is.
Comments, strings and char literals are skipped when matching braces."""
import re
import sys
from pathlib import Path


def strip(src: str) -> str:
    """The source with comments, strings and char literals blanked (newlines kept, so line numbers hold)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", src[i:]).group(1)
            end = '"' + hashes
            j = src.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append("\n" * src.count("\n", i, j + 1))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", src[i:i + 4]) or c == "'" and re.match(r"'\\[xu]", src[i:]):
            j = src.find("'", i + 2)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(path: Path):
    text = strip(path.read_text())
    lines = text.split("\n")
    for m in re.finditer(r"\bfn\s+(\w+)", text):
        start = text.count("\n", 0, m.start())
        # The body's opening brace: the first `{` after the signature (a `;` first means no body).
        j = m.end()
        depth = 0
        while j < len(text) and not (text[j] == "{" and depth == 0):
            if text[j] in "(<[":
                depth += 1
            elif text[j] in ")>]":
                depth = max(0, depth - 1)
            elif text[j] == ";" and depth == 0:
                break
            j += 1
        if j >= len(text) or text[j] != "{":
            continue
        level, k = 0, j
        while k < len(text):
            if text[k] == "{":
                level += 1
            elif text[k] == "}":
                level -= 1
                if level == 0:
                    break
            k += 1
        end = text.count("\n", 0, k)
        yield m.group(1), start + 1, end - start + 1


def main(argv):
    limit, under, paths = 100, {}, []
    it = iter(argv)
    for a in it:
        if a == "--max":
            limit = int(next(it))
        elif a == "--max-under":
            d, v = next(it).split("=")
            under[d] = int(v)
        else:
            paths.append(Path(a))
    over = []
    for p in paths:
        for f in sorted(p.rglob("*.rs")) if p.is_dir() else [p]:
            cap = min([v for d, v in under.items() if str(f).startswith(d)] + [limit])
            for name, line, n in functions(f):
                if n > cap:
                    over.append((n, f"{f}:{line} {name}: {n} lines (at most {cap})"))
    for _, msg in sorted(over, reverse=True):
        print(msg)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
