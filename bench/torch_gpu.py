"""PyTorch's side of bench/gpu.sh: the cases of bench/vs_torch_gpu.rs, timed with the peers this
machine has. Every peer is optional: one that is missing prints its reason in place of a time.

    python3 bench/torch_gpu.py CASES.jsonl [--dry]   # CASES: `vs_torch_gpu --list` output
    python3 bench/torch_gpu.py --ceilings            # the device's copy bandwidth and bf16 GEMM rate

Peers, bf16 throughout:
  matmul      cuBLAS through torch: F.linear (y = x·Wᵀ), dY·W, dYᵀ·X (the products autograd runs)
  attention   F.scaled_dot_product_attention, causal, GQA (enable_gqa; K/V expanded where a backend
              refuses it), forced onto the flash and the cuDNN backends in turn; the backward alone
              (autograd.grad of a kept graph, retain_graph)
  score       transformers' Qwen2ForCausalLM (random weights from a config; sdpa attention), bf16,
              logits → log_softmax in f32 → gather
  generate    its `generate`: sampling at the case's temperature, top_k 0, top_p 1, no EOS
  train_step  f32 weights under bf16 autocast, Σ w·logp backward, torch.optim.AdamW step
Timing as drpo's side: kernel-level cases the median of 5 batches of `iters` calls between two CUDA
events after 3 warm-ups; model-level cases the median of 3 synchronised calls after a warm-up.
`--dry` runs each case once on the CPU (the math backend for attention): a check of this script's
logic, not a result. One JSON line per (case, peer): {"case", "peer", "ms"} or {"case", "peer", "missing"}.
"""

import json
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # the script still answers, so the table shows why
    torch = None
    TORCH_MISSING = f"torch is not installed ({e})"


def emit(obj):
    print(json.dumps(obj), flush=True)


class Timer:
    def __init__(self, dev, dry):
        self.dev, self.dry = dev, dry

    def sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def kernel_ms(self, f, iters):
        """Median of 5 batches of `iters` calls (3 warm-ups each); dry: one call."""
        if self.dry:
            t = time.perf_counter()
            f()
            self.sync()
            return (time.perf_counter() - t) * 1e3
        batches = []
        for _ in range(5):
            for _ in range(3):
                f()
            if self.dev.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(iters):
                    f()
                end.record()
                end.synchronize()
                batches.append(start.elapsed_time(end) / iters)
            else:
                t = time.perf_counter()
                for _ in range(iters):
                    f()
                batches.append((time.perf_counter() - t) * 1e3 / iters)
        return statistics.median(batches)

    def wall_ms(self, f, reps=3):
        """Median of `reps` synchronised calls after a warm-up; dry: one call."""
        def once():
            t = time.perf_counter()
            f()
            self.sync()
            return (time.perf_counter() - t) * 1e3
        if self.dry:
            return once()
        once()
        return statistics.median(once() for _ in range(reps))


def matmul(case, dev, timer):
    n, d_in, d_out = case["n"], case["d_in"], case["d_out"]
    g = torch.Generator(device=dev).manual_seed(1)
    x = torch.randn(n, d_in, device=dev, dtype=torch.bfloat16, generator=g)
    w = torch.randn(d_out, d_in, device=dev, dtype=torch.bfloat16, generator=g) * 0.05
    dy = torch.randn(n, d_out, device=dev, dtype=torch.bfloat16, generator=g)
    f = {"fwd": lambda: F.linear(x, w), "dx": lambda: dy @ w, "dw": lambda: dy.t() @ x}[case["product"]]
    peer = "cuBLAS (torch)" if dev.type == "cuda" else "torch CPU (dry)"
    return [(peer, timer.kernel_ms(f, 20))]


def sdpa_backends(dev):
    from torch.nn.attention import SDPBackend
    if dev.type != "cuda":
        return [("SDPA math (CPU, dry)", SDPBackend.MATH)]
    return [("SDPA flash", SDPBackend.FLASH_ATTENTION), ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION)]


def attention(case, dev, timer):
    from torch.nn.attention import sdpa_kernel
    b, t, nh, nkv, hd = case["count"], case["len"], case["nh"], case["nkv"], case["hd"]
    g = torch.Generator(device=dev).manual_seed(1)

    def heads(h):  # [b, t, h, hd] as a projection writes it, viewed [b, h, t, hd] as SDPA reads it
        return torch.randn(b, t, h, hd, device=dev, dtype=torch.bfloat16, generator=g).transpose(1, 2)

    q, k, v, dout = heads(nh), heads(nkv), heads(nkv), heads(nh)
    rows = []
    for name, backend in sdpa_backends(dev):
        result = None
        for expand in (False, True):
            qq, kk, vv = (x.detach().requires_grad_(case["pass"] == "bwd") for x in (q, k, v))

            def fwd():
                if expand:  # what transformers' eager path does (repeat_kv); autograd sums dK, dV back
                    kx, vx = kk.repeat_interleave(nh // nkv, 1), vv.repeat_interleave(nh // nkv, 1)
                    return F.scaled_dot_product_attention(qq, kx, vx, is_causal=True)
                return F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True)

            try:
                with sdpa_kernel([backend]):
                    if case["pass"] == "fwd":
                        with torch.no_grad():
                            ms = timer.kernel_ms(fwd, 5)
                    else:
                        out = fwd()
                        ms = timer.kernel_ms(lambda: torch.autograd.grad(out, (qq, kk, vv), dout, retain_graph=True), 5)
                result = (name + (" (K/V expanded)" if expand else ""), ms)
                break
            except RuntimeError as e:
                result = (name, None, str(e).strip().splitlines()[0][:160])
        rows.append(result)
    return rows


class Models:
    """transformers' Qwen2 with random weights from a config: one built at a time, freed when the next
    is asked for (weights in bf16 for scoring and generation, f32 under autocast for training)."""

    def __init__(self, dev):
        self.dev, self.key, self.model, self.opt = dev, None, None, None
        try:
            import transformers
            from transformers import Qwen2Config, Qwen2ForCausalLM
            self.version, self.Config, self.Model, self.missing = transformers.__version__, Qwen2Config, Qwen2ForCausalLM, None
        except ImportError as e:
            self.version, self.missing = None, f"transformers is not installed ({e})"

    def get(self, spec, training):
        key = (json.dumps(spec, sort_keys=True), training)
        if key != self.key:
            self.model = self.opt = None
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()
            assert spec["hidden"] == spec["nh"] * spec["hd"], "Qwen2's head_dim is hidden / heads"
            cfg = self.Config(
                vocab_size=spec["vocab"], hidden_size=spec["hidden"], intermediate_size=spec["ff"],
                num_hidden_layers=spec["layers"], num_attention_heads=spec["nh"], num_key_value_heads=spec["nkv"],
                max_position_embeddings=spec["max_pos"], rms_norm_eps=spec["eps"], tie_word_embeddings=spec["tie"],
                rope_parameters={"rope_type": "default", "rope_theta": spec["theta"]}, use_sliding_window=False,
                bos_token_id=None, eos_token_id=None, pad_token_id=None, attn_implementation="sdpa")
            torch.manual_seed(1)
            with torch.device(self.dev):
                model = self.Model(cfg)
            if training:
                self.opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
            else:
                model = model.to(torch.bfloat16).eval()
            self.key, self.model = key, model
        return self.model


def tokens(count, length, v, dev):
    """Token t of sequence s: (s·7919 + t·104729 + 1) mod v, as bench/vs_torch_gpu.rs."""
    return torch.tensor([[(s * 7919 + t * 104729 + 1) % v for t in range(length)] for s in range(count)], device=dev)


def model_case(case, dev, timer, models):
    if models.missing:
        return [("transformers", None, models.missing)]
    spec, kind = case["model"], case["kind"]
    peer = f"transformers {models.version} eager" + (" (CPU, dry)" if dev.type != "cuda" else "")
    if kind == "score":
        m = models.get(spec, training=False)
        ids = tokens(case["count"], case["len"], spec["vocab"], dev)

        @torch.no_grad()
        def score():
            logits = m(input_ids=ids).logits[:, :-1]
            return torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])

        return [(peer, timer.wall_ms(score))]
    if kind == "generate":
        m = models.get(spec, training=False)
        ids = tokens(case["batch"], case["prompt"], spec["vocab"], dev)
        want = case["prompt"] + case["new_tokens"]

        def generate():
            out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             temperature=case["temperature"], top_k=0, top_p=1.0,
                             max_new_tokens=case["new_tokens"], pad_token_id=0)
            assert out.shape == (case["batch"], want), f"generate returned {tuple(out.shape)}"

        return [(peer, timer.wall_ms(generate))]
    if kind == "train_step":
        m = models.get(spec, training=True)
        ids = tokens(case["count"], case["len"], spec["vocab"], dev)
        w = torch.tensor([[((s + t) % 7) / 7.0 - 0.4 for t in range(case["len"] - 1)] for s in range(case["count"])], device=dev)

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                logits = m(input_ids=ids).logits[:, :-1]
            logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
            (logp * w).sum().backward()
            models.opt.step()
            models.opt.zero_grad(set_to_none=True)

        return [(peer + ", f32 weights, bf16 autocast, AdamW", timer.wall_ms(step))]
    raise ValueError(f"unknown case kind {kind}")


def ceilings():
    """The two ceilings of METHOD.md, measured: a device-to-device copy (bytes read + written) and an
    8192³ bf16 GEMM on random data; medians of 10 after 3 warm-ups."""
    timer = Timer(torch.device("cuda"), dry=False)
    a = torch.empty(1 << 31, dtype=torch.uint8, device="cuda").random_(0, 255)
    b = torch.empty_like(a)
    copy_ms = timer.kernel_ms(lambda: b.copy_(a), 10)
    del a, b
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_ms = timer.kernel_ms(lambda: x @ y, 10)
    emit({"hbm_gbs": round(2 * (1 << 31) / copy_ms / 1e6, 1), "bf16_tflops": round(2 * 8192**3 / mm_ms / 1e9, 1),
          "device": torch.cuda.get_device_name()})


def main():
    args = sys.argv[1:]
    if torch is None:
        if "--ceilings" in args:
            sys.exit(TORCH_MISSING)
        for line in open(args[0]):
            emit({"case": json.loads(line)["case"], "peer": "torch", "missing": TORCH_MISSING})
        return
    if "--ceilings" in args:
        return ceilings()
    dry = "--dry" in args
    cases = [json.loads(line) for line in open(args[0]) if line.strip()]
    if torch.cuda.is_available():
        dev = torch.device("cuda")
    elif dry:
        dev = torch.device("cpu")
        torch.set_num_threads(2)
    else:
        for c in cases:
            emit({"case": c["case"], "peer": "torch", "missing": "torch sees no CUDA device"})
        return
    timer, models = Timer(dev, dry), Models(dev)
    emit({"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
          "transformers": models.version, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"})
    for case in cases:
        kind = case["kind"]
        try:
            if kind == "matmul":
                rows = matmul(case, dev, timer)
            elif kind == "attention":
                rows = attention(case, dev, timer)
            else:
                rows = model_case(case, dev, timer, models)
        except (RuntimeError, AssertionError, ValueError) as e:  # e.g. out of memory: say so, go on
            rows = [("torch", None, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")]
        for row in rows:
            if row[1] is None:
                emit({"case": case["case"], "peer": row[0], "missing": row[2]})
            else:
                emit({"case": case["case"], "peer": row[0], "ms": round(row[1], 4)})


if __name__ == "__main__":
    main()
