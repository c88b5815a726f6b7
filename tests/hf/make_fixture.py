#!/usr/bin/env python3
"""Generates the test fixture `tests/fixtures/qwen2-odd` (Qwen2 model references from PyTorch + transformers).

How to run (by hand, from the repository root; needs torch and transformers, which `cargo test` never does):

    /work/pyref/bin/python tests/hf/make_fixture.py                 # writes tests/fixtures/qwen2-odd
    /work/pyref/bin/python tests/hf/make_fixture.py --out /tmp/odd  # somewhere else

Versions used for the committed files: python 3.11.7, torch 2.15.0, transformers 5.24.0 (CPU only). The output
is deterministic (fixed seed, CPU float64); re-running it rewrites identical files. It takes ~1 minute.

What it is for. The two vendored fixtures (`qwen2-tiny`, `qwen2-tiny-mqa`) share many traits (hidden 64, 4 heads,
rope theta 1e4, eps 1e-6, 2 layers, transformers-5 config layout, one safetensors file, vocab = tokenizer size).
This fixture differs on every axis a real checkpoint can, so that a loader or a forward that silently assumes one
of those traits fails a test:

  - a transformers-4 style config.json written by hand in the layout of Qwen2.5's (top-level `rope_theta`,
    `torch_dtype`, `sliding_window` 4096 with `use_sliding_window: false` and `max_window_layers`,
    `rope_scaling: null`), rope_theta 1e6, rms_norm_eps 1e-5, max_position_embeddings 512;
  - 3 layers, 6 query heads over 2 kv heads (GQA 3:1), an explicit head_dim = 24 != hidden / heads = 16
    (so q_proj is [144, 96] and o_proj [96, 144]), hidden 96 and MLP width 200 (not powers of two);
  - untied embeddings (`lm_head.weight` stored), bf16 weights, sharded into two files with
    model.safetensors.index.json (embed + layers 0-1 | layer 2 + norm + lm_head);
  - vocab_size 400 > the 384 tokens of the tokenizer (qwen2-tiny's, copied in), as Qwen2.5 pads 151665 tokens to
    151936; the reference inputs use some ids in 384..399;
  - generation_config.json in the Qwen2.5-instruct style (two eos ids, sampling defaults);
  - longer sequences (rows of 37 and 61 tokens, a ~100-token chat prompt, 32 greedy tokens).

References are float64, computed by transformers' Qwen2ForCausalLM from the bf16 weights upcast exactly, with the
three spots where stock transformers computes in float32 even for a float64 model (RMSNorm, the eager softmax,
the rotary cos/sin and inv_freq) patched to stay float64 with the same formulas. They are cross-checked here
against (1) an independent plain-torch float64 implementation written from the formulas (logits, hidden states,
gradients; ~1e-13) and (2) stock transformers (float32 internals; ~1e-5), and the gradients against central
differences. The script stops with an error when a check is outside its bound.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoTokenizer, GenerationConfig

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exact_hf import PATCH_CALLS, exact_f64, load_hf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
TOKENIZER_SOURCE = os.path.join(FIXTURES, "qwen2-tiny")  # tokenizer.json / tokenizer_config.json copied from here
NAME = "qwen2-odd"
SEED = 20261201
PAD = 381  # <|endoftext|>
ROW_LENGTHS = [37, 61]
MAX_NEW_TOKENS = 32

# Hand-written in transformers 4's layout (as Qwen2.5-0.5B-Instruct's config.json, keys sorted as v4 writes them).
CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 381,
    "eos_token_id": 383,
    "head_dim": 24,
    "hidden_act": "silu",
    "hidden_size": 96,
    "initializer_range": 0.02,
    "intermediate_size": 200,
    "max_position_embeddings": 512,
    "max_window_layers": 2,
    "model_type": "qwen2",
    "num_attention_heads": 6,
    "num_hidden_layers": 3,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 400,
}
# Qwen2.5-instruct style: two eos ids (<|im_end|>, <|endoftext|>) and sampling defaults.
GENERATION_CONFIG = {
    "bos_token_id": 381,
    "do_sample": True,
    "eos_token_id": [383, 381],
    "pad_token_id": 381,
    "repetition_penalty": 1.05,
    "temperature": 0.7,
    "top_k": 20,
    "top_p": 0.8,
    "transformers_version": "4.43.1",
}
# Shard 1 holds these prefixes, shard 2 the rest (so lm_head and embed_tokens live in different files).
SHARD1_PREFIXES = ("model.embed_tokens.", "model.layers.0.", "model.layers.1.")
SHARD_FILES = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")

# Greedy prompt candidates (chat template, one user turn); the first whose 32 greedy tokens have every top1-top2
# margin >= 0.05 and >= 12 distinct ids is taken.
QUESTIONS = [
    "A farmer has 23 cows and 17 sheep. He sells 9 cows and buys 14 more sheep. How many animals does the farmer "
    "have now, and how many more sheep than cows are there?",
    "Maria reads 12 pages on Monday, twice as many on Tuesday and 5 fewer than Tuesday on Wednesday. "
    "How many pages does she read in the three days?",
    "What is 17 + 25? Then take the result, subtract 8 and multiply by 3. Let's think step by step and give "
    "the final answer in a box.",
    "Tom has 12 apples and buys 7 more. Then he gives 5 apples to each of his 2 friends. How many apples does "
    "he have left at the end of the day?",
]

F64 = torch.float64
EXACT_TOL = 1e-12  # patched HF vs the plain implementation (max abs diff / max abs logit); seen ~1e-15
STOCK_TOL = 1e-4  # stock HF (float32 internals) vs the exact references, relative; seen ~1e-6


def fail(msg):
    sys.exit(f"make_fixture: CHECK FAILED: {msg}")


# ----------------------------------------------------------------------------------------------------------------
# an independent float64 implementation, written from the formulas (no transformers code)


def plain_forward(P, ids, cfg, hidden=None):
    """P: name -> float64 tensor (HF names, [out, in]); ids: list of ints, one sequence at positions 0..T-1.
    Returns logits [T, V]; fills `hidden` (if given) with embed / layer{l} / final_norm, each [T, C]."""
    T, nh, nkv, hd = len(ids), cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps, half = cfg["rms_norm_eps"], hd // 2

    def rms(x, w):
        return w * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    pos = torch.arange(T, dtype=F64)
    inv_freq = torch.tensor([cfg["rope_theta"] ** (-2.0 * i / hd) for i in range(half)], dtype=F64)
    ang = pos[:, None] * inv_freq[None, :]
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]

    def rope(z):  # [T, heads, hd]; pairs (i, i + hd/2)
        a, b = z[..., :half], z[..., half:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    x = P["model.embed_tokens.weight"][torch.tensor(ids)]
    if hidden is not None:
        hidden["embed"] = x
    for l in range(cfg["num_hidden_layers"]):
        p = lambda n: P[f"model.layers.{l}.{n}"]  # noqa: E731
        h = rms(x, p("input_layernorm.weight"))
        q = (h @ p("self_attn.q_proj.weight").T + p("self_attn.q_proj.bias")).reshape(T, nh, hd)
        k = (h @ p("self_attn.k_proj.weight").T + p("self_attn.k_proj.bias")).reshape(T, nkv, hd)
        v = (h @ p("self_attn.v_proj.weight").T + p("self_attn.v_proj.bias")).reshape(T, nkv, hd)
        q, k = rope(q), rope(k)
        heads = []
        for j in range(nh):
            g = j // (nh // nkv)  # kv heads repeated contiguously
            s = (q[:, j, :] @ k[:, g, :].T) / math.sqrt(hd)
            s = s.masked_fill(future, -math.inf)
            e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
            heads.append((e / e.sum(dim=-1, keepdim=True)) @ v[:, g, :])
        x = x + torch.cat(heads, dim=-1) @ p("self_attn.o_proj.weight").T
        h = rms(x, p("post_attention_layernorm.weight"))
        gate, up = h @ p("mlp.gate_proj.weight").T, h @ p("mlp.up_proj.weight").T
        x = x + (gate * torch.sigmoid(gate) * up) @ p("mlp.down_proj.weight").T
        if hidden is not None:
            hidden[f"layer{l}"] = x
    hf = rms(x, P["model.norm.weight"])
    if hidden is not None:
        hidden["final_norm"] = hf
    return hf @ P["lm_head.weight"].T


# ----------------------------------------------------------------------------------------------------------------


def param_shapes(cfg):
    c, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    shapes = {"model.embed_tokens.weight": [v, c]}
    for l in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        shapes.update({
            pre + "input_layernorm.weight": [c],
            pre + "self_attn.q_proj.weight": [q, c],
            pre + "self_attn.q_proj.bias": [q],
            pre + "self_attn.k_proj.weight": [kv, c],
            pre + "self_attn.k_proj.bias": [kv],
            pre + "self_attn.v_proj.weight": [kv, c],
            pre + "self_attn.v_proj.bias": [kv],
            pre + "self_attn.o_proj.weight": [c, q],
            pre + "post_attention_layernorm.weight": [c],
            pre + "mlp.gate_proj.weight": [ff, c],
            pre + "mlp.up_proj.weight": [ff, c],
            pre + "mlp.down_proj.weight": [c, ff],
        })
    shapes["model.norm.weight"] = [c]
    shapes["lm_head.weight"] = [v, c]
    return shapes


def draw_params(cfg, gen):
    """Matrices ~ N(0, 0.08^2), embedding and lm_head ~ N(0, 0.5^2), q/k/v biases ~ N(0, 0.1^2),
    RMSNorm weights ~ 1 + N(0, 0.1^2); drawn in float64, rounded to bfloat16."""
    out = {}
    for name, shape in param_shapes(cfg).items():
        z = torch.randn(shape, generator=gen, dtype=F64)
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            w = 0.5 * z
        elif name.endswith("norm.weight"):
            w = 1.0 + 0.1 * z
        elif name.endswith(".bias"):
            w = 0.1 * z
        else:
            w = 0.08 * z
        out[name] = w.to(torch.bfloat16)
    return out


def write_json(path, value, indent=2, sort_keys=False):
    with open(path, "w") as f:
        json.dump(value, f, indent=indent, sort_keys=sort_keys, ensure_ascii=False)
        f.write("\n")


def save_sharded(out, params_bf16):
    shards = ({}, {})
    for name, t in params_bf16.items():
        shards[0 if name.startswith(SHARD1_PREFIXES) else 1][name] = t.contiguous()
    weight_map = {}
    for file, tensors in zip(SHARD_FILES, shards):
        save_file(tensors, os.path.join(out, file), metadata={"format": "pt"})
        weight_map.update({n: file for n in tensors})
    total = sum(t.numel() * t.element_size() for t in params_bf16.values())
    write_json(os.path.join(out, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def max_abs(a, b):
    return float((a - b).abs().max())


def max_rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def run_rows_hf(model, rows, with_hidden=False):
    """Each row alone through the HF model; returns per-row logits [T_b, V] (and hidden-state dicts)."""
    logits, hiddens = [], []
    for ids in rows:
        hid, hooks = {}, []
        if with_hidden:
            def keep(key):
                def hook(_m, _i, o):
                    hid[key] = (o[0] if isinstance(o, tuple) else o)[0]
                return hook
            hooks.append(model.model.embed_tokens.register_forward_hook(keep("embed")))
            for l, layer in enumerate(model.model.layers):
                hooks.append(layer.register_forward_hook(keep(f"layer{l}")))
            hooks.append(model.model.norm.register_forward_hook(keep("final_norm")))
        out = model(input_ids=torch.tensor([ids]), use_cache=False)
        for h in hooks:
            h.remove()
        logits.append(out.logits[0])
        hiddens.append(hid)
    return logits, hiddens


def logprobs_of(logits, ids):
    lsm = torch.log_softmax(logits[:-1], dim=-1)
    return lsm[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


def greedy_no_cache(model, prompt, n):
    seq, steps = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            last = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
            steps.append(last.clone())
            seq.append(int(torch.argmax(last)))
    return seq[len(prompt):], steps


def top5(logits):
    v, i = torch.topk(logits, 5)
    return [int(x) for x in i], [float(x) for x in v]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(FIXTURES, NAME))
    args = ap.parse_args()
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # summation order independent of the machine
    out = args.out
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    checks = {}
    cfg = dict(CONFIG)

    # --- the checkpoint: config, tokenizer, generation config, sharded bf16 weights
    write_json(os.path.join(out, "config.json"), CONFIG, sort_keys=True)
    write_json(os.path.join(out, "generation_config.json"), GENERATION_CONFIG, sort_keys=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(TOKENIZER_SOURCE, f), os.path.join(out, f))
    gen = torch.Generator().manual_seed(SEED)
    params_bf16 = draw_params(cfg, gen)
    save_sharded(out, params_bf16)
    P = {n: t.to(F64) for n, t in params_bf16.items()}  # exact upcast

    # --- transformers reads it as intended
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f) == CONFIG
    model = load_hf(out)
    hc = model.config
    if not (hc.head_dim == 24 and hc.rope_parameters["rope_theta"] == 1e6 and hc.sliding_window is None
            and hc.layer_types == ["full_attention"] * 3 and not hc.tie_word_embeddings and hc.rms_norm_eps == 1e-5):
        fail(f"transformers read the config differently: {hc}")
    sd = model.state_dict()
    if set(sd) != set(P):
        fail(f"parameter names differ: {sorted(set(sd) ^ set(P))}")
    checks["loaded_weights_equal_bf16_values"] = all(torch.equal(sd[n], P[n]) for n in P)
    if not checks["loaded_weights_equal_bf16_values"] or model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr():
        fail("weights after from_pretrained differ from the bf16 values (or lm_head is tied)")
    tok = AutoTokenizer.from_pretrained(out)
    tok_vocab = len(tok)
    if tok_vocab != 384:
        fail(f"tokenizer size {tok_vocab}")

    # --- reference inputs: rows of 37 and 61 tokens, ids uniform over the whole model vocab (incl. 384..399)
    rng = np.random.default_rng(SEED)
    rows = [[int(x) for x in rng.integers(0, cfg["vocab_size"], size=n)] for n in ROW_LENGTHS]
    rows[0][5], rows[1][20], rows[1][60] = 390, 399, 384  # padded-vocab ids for sure, one as the last target
    T = max(ROW_LENGTHS)
    input_ids = torch.full((len(rows), T), PAD, dtype=torch.int64)
    for b, r in enumerate(rows):
        input_ids[b, : len(r)] = torch.tensor(r)
    lengths = torch.tensor(ROW_LENGTHS, dtype=torch.int64)
    weights_rng = torch.Generator().manual_seed(SEED + 1)
    loss_w = torch.randn(len(rows), T - 1, generator=weights_rng, dtype=F64)
    for b, n in enumerate(ROW_LENGTHS):
        loss_w[b, n - 1:] = 0.0

    # --- exact float64 references from transformers (patched), with gradients
    with exact_f64():
        model.zero_grad(set_to_none=True)
        logits_rows, hidden_rows = run_rows_hf(model, rows, with_hidden=True)
        lp_rows = [logprobs_of(lg, r) for lg, r in zip(logits_rows, rows)]
        loss = sum((loss_w[b, : len(r) - 1] * lp_rows[b]).sum() for b, r in enumerate(rows))
        loss.backward()
    if min(PATCH_CALLS.values()) == 0:
        fail(f"a float64 patch was never called: {PATCH_CALLS}")
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    V, C = cfg["vocab_size"], cfg["hidden_size"]
    ref = {
        "input_ids": input_ids,
        "lengths": lengths,
        "logits": torch.zeros(len(rows), T, V, dtype=F64),
        "logprobs": torch.zeros(len(rows), T - 1, dtype=F64),
        "loss_weights": loss_w,
        "weighted_logprob_sum": loss.detach().reshape(1),
    }
    hidden_keys = ["embed"] + [f"layer{l}" for l in range(cfg["num_hidden_layers"])] + ["final_norm"]
    for k in hidden_keys:
        ref[f"hidden.{k}"] = torch.zeros(len(rows), T, C, dtype=F64)
    for b, r in enumerate(rows):
        n = len(r)
        ref["logits"][b, :n] = logits_rows[b].detach()
        ref["logprobs"][b, : n - 1] = lp_rows[b].detach()
        for k in hidden_keys:
            ref[f"hidden.{k}"][b, :n] = hidden_rows[b][k].detach()
    for n, g in grads.items():
        ref[f"grad.{n}"] = g

    # --- check 1: the independent plain-torch implementation (logits, hidden states, gradients)
    Pg = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    plain_loss, plain_logit_err, plain_hidden_err = 0.0, 0.0, 0.0
    for b, r in enumerate(rows):
        hid = {}
        lg = plain_forward(Pg, r, cfg, hid)
        plain_logit_err = max(plain_logit_err, max_abs(lg.detach(), logits_rows[b].detach()))
        for k in hidden_keys:
            plain_hidden_err = max(plain_hidden_err, max_abs(hid[k].detach(), hidden_rows[b][k].detach()))
        plain_loss = plain_loss + (loss_w[b, : len(r) - 1] * logprobs_of(lg, r)).sum()
    plain_loss.backward()
    grad_rel = max(max_rel(Pg[n].grad, grads[n]) for n in P)
    logit_scale = float(ref["logits"].abs().max())
    checks["independent_plain_torch_impl_max_abs_logit_diff"] = plain_logit_err
    checks["independent_plain_torch_impl_max_rel_logit_diff"] = plain_logit_err / logit_scale
    checks["independent_plain_torch_impl_max_abs_hidden_diff"] = plain_hidden_err
    checks["independent_plain_torch_impl_max_rel_grad_diff_(per_tensor)"] = grad_rel
    checks["independent_plain_torch_impl_loss_diff"] = abs(float(plain_loss.detach()) - float(loss.detach()))
    if plain_logit_err / logit_scale > EXACT_TOL or plain_hidden_err > EXACT_TOL * 100 or grad_rel > 1e-10:
        fail(f"plain implementation disagrees: logits {plain_logit_err:.3e}, hidden {plain_hidden_err:.3e}, grads {grad_rel:.3e}")

    # --- check 2: stock transformers (float32 RMSNorm / softmax / rope inside a float64 model)
    stock = load_hf(out)
    with torch.no_grad():
        stock_logits, _ = run_rows_hf(stock, rows)
    stock_err = max(max_abs(s, e.detach()) for s, e in zip(stock_logits, logits_rows))
    checks["stock_hf_vs_exact_max_abs_logit_diff"] = stock_err
    checks["stock_hf_vs_exact_max_rel_logit_diff"] = stock_err / logit_scale
    if stock_err / logit_scale > STOCK_TOL:
        fail(f"stock transformers differs by {stock_err:.3e}")

    # --- check 3: a batched run with right padding and an attention mask gives the same valid logits
    with exact_f64(), torch.no_grad():
        mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
        batched = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
    checks["batched_padded_with_attention_mask_max_abs_logit_diff"] = max(
        max_abs(batched[b, : len(r)], logits_rows[b].detach()) for b, r in enumerate(rows))
    if checks["batched_padded_with_attention_mask_max_abs_logit_diff"] > 1e-12:
        fail("batched run differs")

    # --- check 4: parameter gradients against 5-point central differences of the plain implementation
    def plain_total(Pd):
        with torch.no_grad():
            return sum(float((loss_w[b, : len(r) - 1] * logprobs_of(plain_forward(Pd, r, cfg), r)).sum())
                       for b, r in enumerate(rows))

    fd_rng = np.random.default_rng(SEED + 2)
    fd_worst, fd_count = 0.0, 0
    Pd = {n: t.clone() for n, t in P.items()}
    for n in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.bias",
              "model.layers.2.self_attn.v_proj.weight", "model.layers.2.mlp.down_proj.weight",
              "model.layers.0.input_layernorm.weight", "model.norm.weight", "lm_head.weight"]:
        flat, gflat = Pd[n].view(-1), grads[n].view(-1)
        if n == "model.embed_tokens.weight":  # rows that appear in the inputs
            cand = [int(rows[1][20]) * C + j for j in range(C)]
        else:
            cand = list(range(flat.numel()))
        for i in fd_rng.choice(cand, size=3, replace=False):
            x0 = float(flat[i])
            h = 1e-4 * max(1.0, abs(x0))
            vals = []
            for d in (-2, -1, 1, 2):
                flat[i] = x0 + d * h
                vals.append(plain_total(Pd))
            flat[i] = x0
            num = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * h)
            gmax = float(grads[n].abs().max())
            fd_worst = max(fd_worst, abs(num - float(gflat[i])) / max(abs(float(gflat[i])), 1e-3 * gmax, 1e-12))
            fd_count += 1
    checks["param_grad_finite_difference_max_rel_err"] = fd_worst
    checks["param_grad_finite_difference_points"] = fd_count
    if fd_worst > 1e-6:
        fail(f"finite differences: {fd_worst:.3e}")

    # --- greedy decoding: the first candidate prompt with safe margins and varied tokens
    gcfg = GenerationConfig(do_sample=False, max_new_tokens=MAX_NEW_TOKENS, eos_token_id=None, pad_token_id=PAD,
                            bos_token_id=381, num_beams=1, repetition_penalty=1.0)
    chosen = None
    tried = []
    with exact_f64():
        for q in QUESTIONS:
            text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            prompt = tok(text, add_special_tokens=False)["input_ids"]
            gen_ids, steps = greedy_no_cache(model, prompt, MAX_NEW_TOKENS)
            margins = [float(torch.topk(s, 2).values[0] - torch.topk(s, 2).values[1]) for s in steps]
            distinct = len(set(gen_ids))
            tried.append({"question": q, "prompt_length": len(prompt), "min_margin": min(margins), "distinct": distinct})
            if min(margins) >= 0.05 and distinct >= 12:
                chosen = (q, text, prompt, gen_ids, steps, margins)
                break
    if chosen is None:
        fail(f"no prompt candidate has safe margins: {tried}")
    q, text, prompt, gen_ids, steps, margins = chosen
    with exact_f64(), torch.no_grad():
        model.generation_config.eos_token_id = None
        gcfg_out = GenerationConfig(**gcfg.to_dict())
        gcfg_out.output_logits, gcfg_out.return_dict_in_generate = True, True
        g = model.generate(torch.tensor([prompt]), generation_config=gcfg_out, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    hf_ids = [int(x) for x in g.sequences[0, len(prompt):]]
    checks["greedy_hf_generate_equals_no_cache_argmax_loop"] = hf_ids == gen_ids
    if hf_ids != gen_ids:
        fail(f"HF generate {hf_ids} != argmax loop {gen_ids}")
    # generate hands out its logits cast to float32, so its KV-cache path is checked at float32 precision and
    # again in float64 by a hand-driven cached loop (prompt, then one token per call)
    gen_f32_err = max(max_abs(a[0].to(F64), b) for a, b in zip(g.logits, steps))
    checks["greedy_hf_generate_float32_logits_vs_full_recompute_max_abs_diff"] = gen_f32_err
    if gen_f32_err > 1e-5 * logit_scale:
        fail(f"HF generate's logits differ by {gen_f32_err:.3e}")
    with exact_f64(), torch.no_grad():
        o = model(input_ids=torch.tensor([prompt]), use_cache=True)
        cached = [o.logits[0, -1]]
        for t in gen_ids[:-1]:
            o = model(input_ids=torch.tensor([[t]]), cache=o.cache, use_cache=True)
            cached.append(o.logits[0, -1])
    kv_err = max(max_abs(a, b) for a, b in zip(cached, steps))
    checks["greedy_kv_cache_vs_full_recompute_max_abs_logit_diff_(all_steps_all_logits)"] = kv_err
    if kv_err > 1e-12 * logit_scale:
        fail(f"KV cache logits differ by {kv_err:.3e}")
    with torch.no_grad():  # stock transformers' greedy tokens (float32 internals)
        stock.generation_config.eos_token_id = None
        gs = stock.generate(torch.tensor([prompt]), generation_config=gcfg, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    checks["greedy_stock_hf_same_tokens"] = [int(x) for x in gs[0, len(prompt):]] == gen_ids
    # reproduced by a fresh load of the written folder
    with exact_f64():
        again, _ = greedy_no_cache(load_hf(out), prompt, MAX_NEW_TOKENS)
    checks["greedy_reproduced_from_reloaded_checkpoint"] = again == gen_ids

    greedy = {
        "description": (
            f"Greedy decoding (do_sample=False) of {MAX_NEW_TOKENS} new tokens after `prompt_ids`, no EOS stopping. "
            "`generated_ids` were produced by Hugging Face `generate` (KV cache) and equal an argmax loop that "
            "recomputes the full sequence each step. `last_step` = float64 logits at the last step (the ones that "
            f"chose generated_ids[{MAX_NEW_TOKENS - 1}], i.e. the model output at position "
            f"len(prompt_ids)+{MAX_NEW_TOKENS - 2}), top-5 ids in descending order. `steps[k]` = top-5 ids and float64 "
            f"logits at step k (k = 0..{MAX_NEW_TOKENS - 1}; step k chose generated_ids[k]); checking them tests "
            "KV-cache decoding at every step. `step_margins[k]` = top1 - top2 logit at step k (how safe the argmax "
            "is). The prompt is the first of the generator's candidate questions whose steps all have a margin "
            ">= 0.05 with >= 12 distinct generated ids. Generated ids may be >= 384 (model rows beyond the "
            "tokenizer); `generated_text` decodes only the ids the tokenizer has."),
        "prompt_kind": "chat",
        "question": q,
        "prompt_text": text,
        "prompt_ids": prompt,
        "prompt_length": len(prompt),
        "max_new_tokens": MAX_NEW_TOKENS,
        "do_sample": False,
        "eos_token_id": None,
        "generated_ids": gen_ids,
        "generated_text": tok.decode([i for i in gen_ids if i < tok_vocab]),
        "full_sequence": prompt + gen_ids,
        "last_step": {"position": len(prompt) + MAX_NEW_TOKENS - 2,
                      **dict(zip(("top5_ids", "top5_logits"), top5(steps[-1])))},
        "steps": [dict(zip(("top5_ids", "top5_logits"), top5(s))) for s in steps],
        "step_margins": margins,
        "min_margin": min(margins),
        "distinct_generated_ids": len(set(gen_ids)),
        "ids_beyond_tokenizer_in_output": [i for i in gen_ids if i >= tok_vocab],
        "candidates_tried": tried,
    }
    write_json(os.path.join(out, "greedy.json"), greedy)

    # --- reference.safetensors
    ref_path = os.path.join(out, "reference.safetensors")
    save_file({k: v.contiguous() for k, v in ref.items()}, ref_path, metadata={"format": "pt"})

    # --- reference.json: metadata, tokenizer cases (HF tokenizer on qwen2-tiny's texts), checks, versions
    with open(os.path.join(TOKENIZER_SOURCE, "reference.json")) as f:
        tiny = json.load(f)
    cases = []
    for c in tiny["tokenizer_cases"]:
        ids = tok(c["text"], add_special_tokens=False)["input_ids"]
        decoded = tok.decode(ids)
        cases.append({"name": c["name"], "text": c["text"], "ids": ids, "tokens": tok.convert_ids_to_tokens(ids),
                      "decoded": decoded, "roundtrip_exact": decoded == c["text"],
                      "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
    ex = tiny["chat_template_example"]
    rendered = tok.apply_chat_template(ex["messages"], tokenize=False, add_generation_prompt=ex["add_generation_prompt"])
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__, "numpy": np.__version__}
    reference = {
        "fixture_set": NAME,
        "config": {k: CONFIG[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                          "num_attention_heads", "num_key_value_heads", "head_dim", "rope_theta",
                                          "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings",
                                          "bos_token_id", "eos_token_id")},
        "tokenizer_vocab_size": tok_vocab,
        "weight_dtype": "bfloat16",
        "seed": SEED,
        "special_tokens": {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")},
        "pad_token_id": tok.pad_token_id,
        "eos_token": tok.eos_token,
        "tokenizer_cases": cases,
        "chat_template_example": {**ex, "rendered": rendered, "ids": tok(rendered, add_special_tokens=False)["input_ids"]},
        "model_tensor_names": sorted(P),
        "model_shards": {f: sorted(n for n in P if (n.startswith(SHARD1_PREFIXES)) == (i == 0)) for i, f in enumerate(SHARD_FILES)},
        "reference_tensors": {k: {"dtype": "I64" if v.dtype == torch.int64 else "F64", "shape": list(v.shape)}
                              for k, v in sorted(ref.items())},
        "input_ids": input_ids.tolist(),
        "lengths": lengths.tolist(),
        "checks": checks,
        "versions": versions,
    }
    write_json(os.path.join(out, "reference.json"), reference, indent=2)

    write_readme(out, cfg, P, ref, greedy, checks, versions, tok_vocab)
    for k, v in checks.items():
        print(f"{k}: {v}")
    print(f"greedy: prompt {len(prompt)} tokens, min margin {min(margins):.4g}, {len(set(gen_ids))} distinct ids; tried {tried}")
    for f in sorted(os.listdir(out)):
        print(f"{f:40s} {os.path.getsize(os.path.join(out, f)):9d}  {sha256(os.path.join(out, f))[:16]}")


def write_readme(out, cfg, P, ref, greedy, checks, versions, tok_vocab):
    files = {
        "README.md": "this file",
        "config.json": "HF Qwen2Config in the transformers-4 layout, hand-written (see below)",
        "generation_config.json": "HF generation config, Qwen2.5-instruct style (two eos ids, sampling defaults)",
        "greedy.json": f"greedy decoding reference ({MAX_NEW_TOKENS} new tokens)",
        SHARD_FILES[0]: "weights shard 1 of 2, bfloat16: embed_tokens, layers 0 and 1",
        SHARD_FILES[1]: "weights shard 2 of 2, bfloat16: layer 2, final norm, lm_head",
        "model.safetensors.index.json": "HF shard index (`metadata.total_size`, `weight_map` name -> file)",
        "reference.json": "tokenizer references (strings -> ids), chat-template example, shards, summary of checks",
        "reference.safetensors": "model references: inputs, logits, log-probs, hidden states, gradients",
        "tokenizer.json": "byte-level BPE tokenizer, byte-identical copy of qwen2-tiny's (384 tokens)",
        "tokenizer_config.json": "HF tokenizer config, byte-identical copy of qwen2-tiny's",
    }
    L = cfg["num_hidden_layers"]
    rows_desc = ", ".join(str(n) for n in ROW_LENGTHS)
    lines = [
        f"# Fixture set `{NAME}`",
        "",
        "Reference data for a from-scratch Qwen2 transformer, produced with PyTorch + Hugging Face transformers (the "
        "oracle) by `tests/hf/make_fixture.py` (run it by hand: `/work/pyref/bin/python tests/hf/make_fixture.py`; "
        "the generator is deterministic and rewrites identical files). Random weights built from a config (nothing "
        "was downloaded). All paths below are relative to this folder.",
        "",
        "It differs from `qwen2-tiny` and `qwen2-tiny-mqa` on every axis a real checkpoint can: transformers-4 "
        "config layout, 3 layers, GQA 3:1, explicit head_dim != hidden / heads, hidden and MLP width not powers of "
        "two, rope theta 1e6, eps 1e-5, untied, bf16, sharded, vocab_size larger than the tokenizer, longer "
        "sequences.",
        "",
        "## Model config (`config.json`)",
        "",
        "| field | value |",
        "| --- | --- |",
    ]
    for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "max_position_embeddings",
              "tie_word_embeddings"):
        lines.append(f"| {k} | {cfg[k]} |")
    lines += [
        f"| q_proj / o_proj width | {cfg['num_attention_heads'] * cfg['head_dim']} (= 6 x 24, not hidden_size 96) |",
        "| hidden_act | silu |",
        "| attention bias | q_proj, k_proj, v_proj have bias; o_proj and the MLP have none |",
        "| sliding window | off: `use_sliding_window: false`, `sliding_window: 4096`, `max_window_layers: 2` (as in Qwen2.5 configs) |",
        "| rope_scaling | null |",
        "| weights dtype in the shards | bfloat16 (`torch_dtype: \"bfloat16\"`) |",
        "| bos_token_id / eos_token_id | 381 (`<|endoftext|>`) / 383 (`<|im_end|>`) |",
        "| pad_token_id | absent (as in Qwen2.5's config.json) |",
        "",
        "`config.json` is written by hand in transformers 4's layout, keys sorted, like Qwen2.5-0.5B-Instruct's "
        "(its `transformers_version` says 4.43.1 for that reason; transformers 5 would rewrite it as "
        "`rope_parameters` + `dtype` + `layer_types` on save): top-level `rope_theta` and `torch_dtype`, a "
        "`sliding_window` size with the switch off, `max_window_layers`, `rope_scaling: null`. transformers 5.24 "
        "reads it as intended (checked: head_dim 24, rope_theta 1e6, every layer `full_attention`, untied). "
        "Qwen2.5's configs have no `head_dim` (it is then hidden / heads); this one sets it, and to a different "
        "value, so that a loader which derives it instead of reading it fails (transformers 5.24's Qwen2 reads it).",
        "",
        f"Vocabulary: the model has {cfg['vocab_size']} rows, the tokenizer {tok_vocab} tokens (ids 0..383, qwen2-tiny's), "
        f"as real Qwen2.5 checkpoints pad 151665 tokens to 151936. Ids 384..399 are valid model inputs/outputs that no "
        "text encodes to; the reference rows use some of them (input_ids[0][5] = 390, input_ids[1][20] = 399, and "
        "input_ids[1][60] = 384 as the last target).",
        "",
        "## Files",
        "",
        "| file | bytes | content |",
        "| --- | --- | --- |",
    ]
    for f in sorted(files):
        size = os.path.getsize(os.path.join(out, f)) if f != "README.md" else "-"
        lines.append(f"| {f} | {size} | {files[f]} |")
    lines += [
        "",
        f"## Weight tensors ({len(P)}, in two shards)",
        "",
        "Untied: `lm_head.weight` [vocab, hidden] is a separate tensor (in shard 2; `model.embed_tokens.weight` is in "
        "shard 1). All tensors are BF16. Every reference in this folder was computed from these BF16 values upcast "
        "exactly to float64. Linear weights are stored `[out_features, in_features]` (y = x W^T + b).",
        "",
        "| name | dtype | shape | file |",
        "| --- | --- | --- | --- |",
    ]
    for n in sorted(P):
        f = SHARD_FILES[0] if n.startswith(SHARD1_PREFIXES) else SHARD_FILES[1]
        lines.append(f"| `{n}` | BF16 | {list(P[n].shape)} | {f} |")
    T = max(ROW_LENGTHS)
    meanings = {
        "hidden.embed": "embedding output (residual stream input), 0.0 at invalid positions",
        "hidden.final_norm": "output of the final RMSNorm `model.norm` (input to the lm head), 0.0 at invalid positions",
        "input_ids": f"two token sequences; row 0 is right-padded with the pad id 381 (`<|endoftext|>`) after its {ROW_LENGTHS[0]} real tokens; ids drawn uniformly from 0..399",
        "lengths": f"[{rows_desc}]: number of real tokens per row",
        "logits": f"logits[b, t, :] = model output at position t (next-token logits); row 0: positions >= {ROW_LENGTHS[0]} are 0.0 (invalid)",
        "logprobs": f"logprobs[b, t] = log softmax(logits[b, t])[input_ids[b, t+1]], valid for t < lengths[b]-1 (row 0: t < {ROW_LENGTHS[0] - 1}); invalid entries are 0.0",
        "loss_weights": "random w[b, t] (standard normal, may be negative), 0.0 where logprobs is invalid",
        "weighted_logprob_sum": "L = sum_{b,t} w[b,t] * logprobs[b,t] (shape [1])",
    }
    for l in range(L):
        meanings[f"hidden.layer{l}"] = f"residual stream after decoder layer {l}" + (" (before the final norm)" if l == L - 1 else "") + ", 0.0 at invalid positions"
    lines += [
        "",
        "## `reference.safetensors`",
        "",
        "Computed in float64 by the HF model (`Qwen2ForCausalLM`, eager attention, eval mode, loaded with "
        "`dtype=torch.float64`).",
        "",
        "| name | dtype | shape | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for k in sorted(ref):
        if k.startswith("grad."):
            continue
        v = ref[k]
        lines.append(f"| `{k}` | {'I64' if v.dtype == torch.int64 else 'F64'} | {list(v.shape)} | {meanings[k]} |")
    lines += [
        f"| `grad.<param name>` ({len(P)} tensors) | F64 | same as the parameter | dL/d(parameter), one per HF parameter name |",
        "",
        "Conventions:",
        "",
        f"- Each row is run through the model ALONE on its real tokens (row 0 on its {ROW_LENGTHS[0]} tokens, positions "
        f"0..{ROW_LENGTHS[0] - 1}; row 1 on all {T}), with position ids 0..n-1 and a causal mask. Padding therefore never "
        "influences any reference (a batched run with right padding and an attention mask gives the same valid logits, checked).",
        "- The gradient is of the scalar L above w.r.t. every parameter, summing both rows. `grad.lm_head.weight` and "
        "`grad.model.embed_tokens.weight` are separate.",
        "- The forward: x = embed[ids]; per layer: h = RMSNorm(x); q,k,v = h W^T + b (q: 6 heads x 24, k/v: 2 heads x 24); "
        "RoPE on q and k; causal softmax attention with scale 1/sqrt(head_dim) = 1/sqrt(24); x += attn W_o^T "
        "(W_o: [96, 144]); h = RMSNorm(x); x += down(silu(gate(h)) * up(h)); finally logits = RMSNorm(x) W_lm^T. "
        "RMSNorm(x) = w * x / sqrt(mean(x^2) + eps), eps = 1e-5.",
        "- GQA: query head j uses key/value head j // 3 (HF `repeat_kv`: kv heads repeated contiguously).",
        "- RoPE (HF `rotate_half` convention, NOT interleaved pairs): inv_freq[i] = 1 / theta^(2i/24) for i < 12, "
        "theta = 1e6; angle = pos * inv_freq[i] is applied to the pair (x[i], x[i + 12]): x'[i] = x[i] cos - x[i+12] sin, "
        "x'[i+12] = x[i+12] cos + x[i] sin.",
        "- Precision: stock HF casts to float32 inside RMSNorm, the eager softmax and the RoPE cos/sin (and computes "
        "inv_freq in float32) even for a float64 model. The generator patches exactly those three spots to stay in "
        "float64 (same formulas), so these references are float64-accurate. The logits of stock HF (float32 "
        f"internals) differ from them by at most {checks['stock_hf_vs_exact_max_abs_logit_diff']:.3g} "
        f"({checks['stock_hf_vs_exact_max_rel_logit_diff']:.2g} of the largest |logit|).",
        "- Agreement seen: a separate plain-torch float64 implementation written from the formulas above (in the "
        f"generator) matches the logits to {checks['independent_plain_torch_impl_max_abs_logit_diff']:.2g} "
        f"(abs), the hidden states to {checks['independent_plain_torch_impl_max_abs_hidden_diff']:.2g} and every gradient "
        f"tensor to {checks['independent_plain_torch_impl_max_rel_grad_diff_(per_tensor)']:.2g} relative, so a float64 "
        "implementation can be held to ~1e-10 on logits; a float32 one to ~1e-4.",
        "",
        "## `greedy.json`",
        "",
        f"Prompt (`prompt_ids`): the chat template applied to one user message (`{greedy['question']}`) with the "
        f"generation prompt, {greedy['prompt_length']} tokens. `generated_ids`: the {MAX_NEW_TOKENS} ids of HF "
        f"`generate(do_sample=False, max_new_tokens={MAX_NEW_TOKENS})` with EOS stopping disabled (eos_token_id = null) "
        "and the generation config's sampling defaults and repetition penalty overridden (pure argmax); identical "
        "to a no-cache argmax loop. `last_step.top5_ids/top5_logits`: float64 logits of the step that produced the "
        f"last token; `steps[k]`: the same for every step k (tests incremental / KV-cache decoding at each position). "
        f"`step_margins`: top1 - top2 logit gap per step; smallest here {greedy['min_margin']:.4g}; "
        f"{greedy['distinct_generated_ids']} distinct generated ids; generated ids beyond the tokenizer: "
        f"{greedy['ids_beyond_tokenizer_in_output'] or 'none'}. `candidates_tried` lists the prompts considered.",
        "",
        "## generation_config.json",
        "",
        "Qwen2.5-instruct style: `bos_token_id` = `<|endoftext|>`, `eos_token_id` = [`<|im_end|>`, `<|endoftext|>`], "
        "`pad_token_id` = `<|endoftext|>`, `do_sample: true`, temperature 0.7, top_p 0.8, top_k 20, "
        "repetition_penalty 1.05. The greedy reference overrides all of them (eos null, no sampling, no penalty).",
        "",
        "## Tokenizer",
        "",
        "`tokenizer.json` and `tokenizer_config.json` are byte-identical copies of qwen2-tiny's (see its README): "
        "384 tokens, `<|endoftext|>` = 381, `<|im_start|>` = 382, `<|im_end|>` = 383, ChatML template with the "
        "default system prompt, `model_max_length` 256 (smaller than max_position_embeddings 512, as tokenizer "
        "configs and model configs disagree in real checkpoints too). `reference.json` re-encodes qwen2-tiny's "
        "tokenizer cases and chat example with `AutoTokenizer` on this folder.",
        "",
        "## Notes",
        "",
        "- No `pad_token_id` in config.json on purpose: in HF a non-null pad id becomes `nn.Embedding(padding_idx)`, "
        "which zeroes the gradient of that embedding row. Pad ids only appear at invalid positions here.",
        "- Random init (float64, then rounded to bfloat16): matrices ~ N(0, 0.08^2), embedding and lm_head ~ N(0, 0.5^2), "
        "q/k/v biases ~ N(0, 0.1^2), RMSNorm weights ~ 1 + N(0, 0.1^2). Seed " + str(SEED) + ".",
        "- No `objectives.json` (the objectives do not depend on the model; qwen2-tiny's covers them).",
        "",
        "## Checks done by the generator",
        "",
    ]
    for k, v in checks.items():
        lines.append(f"- {k}: {v}")
    lines += [
        "",
        "## How this was made",
        "",
        "`tests/hf/make_fixture.py` (CPU, float64, one thread, fixed seed). Versions: " +
        ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "",
    ]
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
