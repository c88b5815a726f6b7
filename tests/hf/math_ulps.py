#!/usr/bin/env python3
"""Errors of drpo's own transcendentals (src/cpu/math.rs) against the exact values, in ulps.

How to run (by hand, from the repository root; needs mpmath, which `cargo test` never does):

    cargo test --release --test math -- --ignored dump     # writes target/math_samples.txt
    python3 tests/hf/math_ulps.py [target/math_samples.txt]

Each line of the file is `name[:args] x y` (hex bits of the input and of drpo's output); this recomputes
f(x) with mpmath at 300 bits and prints, per function, the largest |y − f(x)| / ulp(f(x)) (ulp of
the exact value's binade, subnormal spacing below 2^-1022) and how many outputs are not the
correctly rounded double. The figures go into NOTES.md's numerics log.
"""

import struct
import sys
from collections import defaultdict

import mpmath as mp

mp.mp.prec = 300


def f64(bits):
    return struct.unpack("<d", struct.pack("<Q", int(bits, 16)))[0]


def exact(name, x):
    x = mp.mpf(x)
    if name == "ln":
        return mp.log(x)
    if name == "ln_1p":
        return mp.log1p(x)
    if name == "exp":
        return mp.exp(x)
    if name == "exp_m1":
        return mp.expm1(x)
    if name == "sin":
        return mp.sin(x)
    if name == "cos":
        return mp.cos(x)
    key, *args = name.split(":")
    if key == "pow_ratio":  # pow_ratio:<num>:<den>: x^(num/den)
        return mp.power(x, mp.mpf(int(args[0])) / int(args[1]))
    if key in ("powi", "powi_tiny"):  # powi:<n>: x^n
        return mp.power(x, int(args[0]))
    raise ValueError(name)


def ulp(v):
    v = abs(v)
    if v < mp.mpf(2) ** -1022:
        return mp.mpf(2) ** -1074
    return mp.mpf(2) ** (mp.floor(mp.log(v, 2)) - 52)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/math_samples.txt"
    worst = defaultdict(lambda: (mp.mpf(0), None))
    count, not_cr = defaultdict(int), defaultdict(int)
    for line in open(path):
        name, xb, yb = line.split()
        x, y = f64(xb), f64(yb)
        key = name.split(":")[0]
        want = exact(name, x)
        err = abs(mp.mpf(y) - want) / ulp(want)
        count[key] += 1
        if float(want) != y:  # float() of an mpf rounds to nearest
            not_cr[key] += 1
        if err > worst[key][0]:
            worst[key] = (err, x)
    for key in sorted(count):
        err, x = worst[key]
        print(f"{key:10s} {count[key]:7d} samples  worst {float(err):.3f} ulp (x = {x!r})  not correctly rounded: {not_cr[key]}")


if __name__ == "__main__":
    main()
