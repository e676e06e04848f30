#!/usr/bin/env python3
"""Writes N 100-byte records in gensort's ASCII format (TeraSort's input):
a 10-byte key of printable characters, two spaces, the record's number in
32 hex digits, two spaces, 52 filler characters, CR LF. Seeded: the same
N and seed give the same file. Keys leave out the backslash, so a
record's text form (`redmap run --format text`) is the record itself.

    python3 benches/gensort.py N FILE [--seed 42]
"""

import argparse
import random

ALPHABET = bytes(c for c in range(32, 127) if c != ord("\\"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int)
    parser.add_argument("file")
    parser.add_argument("--seed", type=int, default=42)
    opts = parser.parse_args()
    rng = random.Random(opts.seed)
    table = bytes(ALPHABET[b % len(ALPHABET)] for b in range(256))
    chunk = 100_000
    with open(opts.file, "wb") as out:
        for start in range(0, opts.n, chunk):
            n = min(chunk, opts.n - start)
            keys = rng.randbytes(10 * n).translate(table)
            lines = []
            for i in range(n):
                num = start + i
                filler = bytes([65 + (num + j) % 26 for j in range(4)]) * 13
                lines.append(keys[10 * i:10 * i + 10] + b"  " + b"%032X" % num + b"  "
                             + filler + b"\r\n")
            out.write(b"".join(lines))


if __name__ == "__main__":
    main()
