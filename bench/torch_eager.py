"""PyTorch eager's side of bench/vs_torch.sh: the cases of bench/vs_torch.rs, same shapes, same fill,
f32 on the CPU, `--threads` intra-op threads, median of BENCH_REPS runs (default 5) after one warm-up.
One JSON line per case: {"case", "ms"}. The Qwen2 model is written out in plain torch (the layer
listing of src/model/cpu.rs; attention through F.scaled_dot_product_attention, as transformers' sdpa
path), with its own random weights of the same shapes."""

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

REPS = max(1, int(os.environ.get("BENCH_REPS", "5")))


def median_ms(f):
    f()
    times = []
    for _ in range(REPS):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def filled(n, seed):
    i = torch.arange(n, dtype=torch.int64)
    u = ((i * 2654435761 + seed) % (1 << 32)) >> 8
    return (u.to(torch.float64) / (1 << 23) - 1.0).to(torch.float32)


def report(case, ms):
    print(json.dumps({"case": case, "ms": round(ms, 3)}), flush=True)


def matmuls(only):
    if "matmul 2048^3".startswith(only):
        x, w = filled(2048 * 2048, 1).view(2048, 2048), filled(2048 * 2048, 2).view(2048, 2048)
        report("matmul 2048^3", median_ms(lambda: F.linear(x, w)))
    for d_in, d_out, n in [(896, 4864, 256), (1536, 8960, 256)]:
        x = filled(n * d_in, 1).view(n, d_in)
        w = filled(d_out * d_in, 2).view(d_out, d_in)
        dout = filled(n * d_out, 3).view(n, d_out)
        fwd = f"matmul fwd {d_in}->{d_out} n={n}"
        if fwd.startswith(only):
            report(fwd, median_ms(lambda: F.linear(x, w)))
        bwd = f"matmul bwd {d_in}->{d_out} n={n}"
        if bwd.startswith(only):
            # what autograd runs for F.linear's backward: dx = dout·W, dw = doutᵀ·x
            report(bwd, median_ms(lambda: (dout @ w, dout.t() @ x)))


TOY = dict(vocab=26, hidden=64, ff=176, layers=2, nh=4, nkv=2, hd=16, theta=1e4, eps=1e-6)
QWEN05 = dict(vocab=151936, hidden=896, ff=4864, layers=24, nh=14, nkv=2, hd=64, theta=1e6, eps=1e-6)


class Qwen2:
    """Qwen2 with tied embeddings (both benchmarked shapes are tied), f32."""

    def __init__(self, cfg, requires_grad=False):
        g = torch.Generator().manual_seed(1)
        c, ff, nh, nkv, hd = cfg["hidden"], cfg["ff"], cfg["nh"], cfg["nkv"], cfg["hd"]
        self.cfg = cfg

        def rnd(*shape):
            return (torch.randn(*shape, generator=g) * 0.02).requires_grad_(requires_grad)

        def const(v, *shape):
            return torch.full(shape, v).requires_grad_(requires_grad)

        self.embed = rnd(cfg["vocab"], c)
        self.layers = []
        for _ in range(cfg["layers"]):
            self.layers.append(dict(
                ln1=const(1.0, c), q_w=rnd(nh * hd, c), q_b=const(0.0, nh * hd), k_w=rnd(nkv * hd, c),
                k_b=const(0.0, nkv * hd), v_w=rnd(nkv * hd, c), v_b=const(0.0, nkv * hd), o_w=rnd(c, nh * hd),
                ln2=const(1.0, c), gate_w=rnd(ff, c), up_w=rnd(ff, c), down_w=rnd(c, ff)))
        self.norm = const(1.0, c)
        inv = 1.0 / cfg["theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        self.inv_freq = inv

    def rms(self, x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg["eps"]))

    def rope(self, x, pos):
        ang = pos[:, None].to(torch.float64) * self.inv_freq[None, :]
        cos, sin = ang.cos().to(torch.float32), ang.sin().to(torch.float32)
        cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin

    def hidden(self, ids, cache=None):
        """ids [b, t] → final normed hidden [b, t, c]; cache: list of (k, v) per layer, extended."""
        cfg = self.cfg
        b, t = ids.shape
        nh, nkv, hd = cfg["nh"], cfg["nkv"], cfg["hd"]
        past = 0 if cache is None or cache[0] is None else cache[0][0].shape[2]
        pos = torch.arange(past, past + t)
        x = self.embed[ids]
        for li, L in enumerate(self.layers):
            h = self.rms(x, L["ln1"])
            q = F.linear(h, L["q_w"], L["q_b"]).view(b, t, nh, hd).transpose(1, 2)
            k = F.linear(h, L["k_w"], L["k_b"]).view(b, t, nkv, hd).transpose(1, 2)
            v = F.linear(h, L["v_w"], L["v_b"]).view(b, t, nkv, hd).transpose(1, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
            if cache is not None:
                if cache[li] is not None:
                    k, v = torch.cat([cache[li][0], k], 2), torch.cat([cache[li][1], v], 2)
                cache[li] = (k, v)
            att = F.scaled_dot_product_attention(q, k, v, is_causal=past == 0 and t > 1, enable_gqa=True)
            x = x + F.linear(att.transpose(1, 2).reshape(b, t, nh * hd), L["o_w"])
            h = self.rms(x, L["ln2"])
            x = x + F.linear(F.silu(F.linear(h, L["gate_w"])) * F.linear(h, L["up_w"]), L["down_w"])
        return self.rms(x, self.norm)

    def logprobs(self, ids, temp):
        logits = F.linear(self.hidden(ids), self.embed)[:, :-1]
        return torch.log_softmax(logits / temp, -1).gather(-1, ids[:, 1:, None])[..., 0]


def tokens(n_seqs, length, v):
    return torch.tensor([[(s * 7919 + t * 104729) % v for t in range(length)] for s in range(n_seqs)])


def toy_step():
    m = Qwen2(TOY, requires_grad=True)
    ids = tokens(128, 70, TOY["vocab"])
    w = torch.tensor([[((s + t) % 7) / 7.0 - 0.4 for t in range(69)] for s in range(128)], dtype=torch.float32)
    fwd, bwd, total = [], [], []
    for rep in range(REPS + 1):
        t0 = time.perf_counter()
        loss = (m.logprobs(ids, 0.6) * w).sum()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if rep > 0:  # the first is the warm-up
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
            total.append((t2 - t0) * 1e3)
    report("toy train step fwd", statistics.median(fwd))
    report("toy train step bwd", statistics.median(bwd))
    report("toy train step total", statistics.median(total))


def qwen05(only):
    m = Qwen2(QWEN05)
    with torch.no_grad():
        if "qwen0.5b logprobs 4x256".startswith(only):
            ids = tokens(4, 256, QWEN05["vocab"])
            report("qwen0.5b logprobs 4x256", median_ms(lambda: m.logprobs(ids, 1.0)))
        if "qwen0.5b greedy decode 32+72".startswith(only):
            prompt = tokens(1, 32, QWEN05["vocab"])

            def decode():
                # as drpo's: prefill → logits of the last row; then 72 × (arg-max, one-token forward, logits)
                cache = [None] * QWEN05["layers"]
                logits = F.linear(m.hidden(prompt, cache)[:, -1:], m.embed)
                for _ in range(72):
                    logits = F.linear(m.hidden(logits.argmax(-1), cache), m.embed)
            report("qwen0.5b greedy decode 32+72", median_ms(decode))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("only", nargs="?", default="")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    matmuls(a.only)
    if "toy train step".startswith(a.only) or a.only.startswith("toy"):
        toy_step()
    if "qwen0.5b".startswith(a.only) or a.only.startswith("qwen"):
        qwen05(a.only)


if __name__ == "__main__":
    main()
