#!/usr/bin/env python3
"""Writes the seed corpora, fuzz/corpus/<target>/seed-<hash>, from the string
literals of the project's tests (src/http1, tests/framing.rs, errors.rs,
hardening.rs): request and response heads, chunked bodies,
backend SPECs and JSON config files. Run from anywhere; it replaces the old
seed-<hash> files and leaves the corpus the fuzzer grew, and the
seed-reported-* reproducers of past findings, alone.

    python3 fuzz/seed.py
"""

import hashlib
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
MAX_PER_TARGET = 48

# b"...", "...", r#"..."#, br#"..."# (raw strings of one or two hashes).
LITERAL = re.compile(
    r'(?P<raw>b?r(?P<h>#{0,2})"(?P<rbody>.*?)"(?P=h))'
    r'|(?P<cooked>b?"(?P<cbody>(?:[^"\\]|\\.)*)")',
    re.S,
)
ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|\n\s*|.)', re.S)


def unescape(body):
    def one(m):
        e = m.group(1)
        if e[0] == "x":
            return chr(int(e[1:], 16))
        if e[0] == "u":
            return chr(int(e[2:-1], 16))
        if e[0] == "\n":  # line continuation: the newline and indent vanish
            return ""
        return {"r": "\r", "n": "\n", "t": "\t", "0": "\0"}.get(e, e)

    return ESCAPE.sub(one, body)


def literals(path):
    text = path.read_text()
    for m in LITERAL.finditer(text):
        if m.group("raw"):
            s = m.group("rbody")
        else:
            s = unescape(m.group("cbody"))
        yield s.encode("latin-1", "replace") if all(ord(c) < 256 for c in s) else s.encode()


METHOD = re.compile(rb"^(\r?\n)*[A-Z]+ \S+ HTTP/")
CHUNKED_BODY = re.compile(rb"^[0-9a-fA-F]+[ \t;\r\n]")


def heads_and_bodies(files):
    requests, responses, bodies = [], [], []
    for path in files:
        for lit in literals(path):
            if METHOD.match(lit):
                requests.append(lit)
                head, sep, rest = lit.partition(b"\r\n\r\n")
                if sep and b"chunked" in head.lower() and rest:
                    bodies.append(rest)
            elif lit.startswith(b"HTTP/1."):
                responses.append(lit)
                head, sep, rest = lit.partition(b"\r\n\r\n")
                if sep and b"chunked" in head.lower() and rest:
                    bodies.append(rest)
            elif CHUNKED_BODY.match(lit) and b"\r\n" in lit:
                bodies.append(lit)
    return requests, responses, bodies


def framer_seeds(bodies):
    seeds = []
    for i, body in enumerate(bodies):
        seed = (i * 37) & 0xFF
        seeds.append(bytes([0, 0, 0, seed]) + body)  # chunked, framed
        seeds.append(bytes([4, 0, 0, seed | 0x80]) + body)  # chunked, de-chunked
    seeds.append(bytes([2, 5, 0, 3]) + b"helloNEXT")  # Content-Length: 5
    seeds.append(bytes([3, 0, 0, 9]) + b"until the close")
    return seeds


def specs(path):
    out = []
    for lit in literals(path):
        s = lit.decode("utf-8", "replace")
        if len(s) < 80 and ("://" in s or re.match(r"^[\w.\-\[\]:]+:\d*(,.*)?$", s)):
            out.append(lit)
    return out


def configs(path):
    return [lit for lit in literals(path) if lit.lstrip().startswith(b"{") and b"backends" in lit]


def write(target, seeds):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        if not old.name.startswith("seed-reported-"):  # reproducers stay
            old.unlink()
    unique = list(dict.fromkeys(seeds))
    # Spread over the sizes: short cases run fast, long ones reach further.
    unique.sort(key=len)
    if len(unique) > MAX_PER_TARGET:
        step = (len(unique) - 1) / (MAX_PER_TARGET - 1)
        unique = [unique[round(i * step)] for i in range(MAX_PER_TARGET)]
    for s in unique:
        name = "seed-" + hashlib.sha1(s).hexdigest()[:16]
        (d / name).write_bytes(s)
    print(f"{target}: {len(unique)} seeds")


def main():
    http_files = sorted((ROOT / "src" / "http1").rglob("*.rs")) + [
        path
        for name in ("framing.rs", "errors.rs", "hardening.rs")
        if (path := ROOT / "tests" / name).exists()
    ]
    requests, responses, bodies = heads_and_bodies(http_files)
    write("request_head", requests)
    write("response_head", responses)
    write("body_framer", framer_seeds(bodies))
    write("backend_spec", specs(ROOT / "src" / "upstream.rs") + specs(ROOT / "tests" / "cli.rs"))
    write("config_file", configs(ROOT / "src" / "config" / "file.rs"))


if __name__ == "__main__":
    main()
