#!/usr/bin/env python3
"""Checks that a model folder written by drpo loads in Hugging Face transformers and gives the same numbers.

How to run (by hand, from the repository root; needs torch + transformers, which `cargo test` never does):

    cargo build --release
    target/release/drpo sft --out /tmp/sft --steps 5
    /work/pyref/bin/python tests/hf/check_checkpoint.py /tmp/sft
    /work/pyref/bin/python tests/hf/check_checkpoint.py RUN/checkpoint --sequences seqs.json   # {"sequences": [[id, ...], ...]}

Any folder `drpo` writes works (`drpo sft --out`, a `drpo train` run's `checkpoint/`, an F32 or BF16 save), and
so does any HF Qwen2 folder (e.g. tests/fixtures/*). Tested with torch 2.15.0 and transformers 5.24.0.

What it checks, failing (exit 1) on the first violated bound:
  1. `AutoModelForCausalLM.from_pretrained` loads the folder with no missing, unexpected or mis-shaped tensor,
     and the weights it holds equal the safetensors values upcast exactly (lm_head = embed_tokens when tied);
  2. `AutoTokenizer.from_pretrained` loads the tokenizer files, and drpo's tokenizer gives the same ids on a
     few texts, plain and through the chat template (`drpo generate --max-new-tokens 0 --json`). transformers 5
     builds its Qwen2Tokenizer (Qwen2's hard-coded byte-level BPE pipeline, only vocab + merges read from
     tokenizer.json) for every model_type "qwen2" folder; when that disagrees, tokenizer.json itself is checked
     with PreTrainedTokenizerFast and the difference is a WARNING (an error with --strict-tokenizer);
  3. `drpo logprobs --dtype f64` against transformers in float64 (RMSNorm, softmax and RoPE patched to stay
     float64, tests/hf/exact_hf.py): max |diff| / max |ref| over all log-probs <= 1e-10 (`--tol`);
  4. `drpo logprobs --dtype f32` against the same: <= 1e-4 (the issue's f32 bound).
Stock transformers (float32 internals) is printed for scale only.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from exact_hf import F64, PATCH_CALLS, exact_f64  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def drpo(binary, *args):
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"drpo {' '.join(args)} exited {r.returncode}:\n{r.stderr}")
    return r.stdout


def read_weights(folder):
    """name -> (tensor as float64, dtype string) from model.safetensors or the shards of the index."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for file in files:
        with safe_open(os.path.join(folder, file), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                out[name] = (t.to(F64), str(t.dtype).replace("torch.", ""))
    return out


def hf_logprobs(model, seqs):
    rows = []
    with torch.no_grad():
        for s in seqs:
            logits = model(input_ids=torch.tensor([s]), use_cache=False).logits[0]
            lsm = torch.log_softmax(logits[:-1], dim=-1)
            rows.append(lsm[torch.arange(len(s) - 1), torch.tensor(s[1:])])
    return torch.cat(rows)


def compare(what, got, want, tol):
    got = torch.tensor([x for row in got for x in row], dtype=F64)
    if got.shape != want.shape:
        fail(f"{what}: {got.numel()} log-probs, transformers gives {want.numel()}")
    diff = (got - want).abs()
    i = int(diff.argmax())
    rel = float(diff.max() / want.abs().max())
    verdict = "ok" if rel <= tol else "FAIL"
    print(f"{what}: max_rel = {rel:.3e} (max |diff| {float(diff.max()):.3e}; worst #{i}: got {float(got[i]):.15e}, "
          f"want {float(want[i]):.15e}) bound {tol:.0e} {verdict}")
    return rel <= tol, rel


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--sequences", help='JSON file {"sequences": [[id, ...], ...]}; default: random + tokenized text')
    ap.add_argument("--drpo", default=os.path.join(REPO, "target", "release", "drpo"))
    ap.add_argument("--tol", type=float, default=1e-10, help="bound on f64 max_rel (default 1e-10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strict-tokenizer", action="store_true",
                    help="fail (instead of warning) when AutoTokenizer encodes differently but PreTrainedTokenizerFast agrees")
    args = ap.parse_args()
    folder = os.path.abspath(args.folder)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    with open(os.path.join(folder, "config.json")) as f:
        raw_cfg = json.load(f)
    print(f"== {folder}")
    print("files: " + ", ".join(sorted(os.listdir(folder))))

    # 1. the model loads, every tensor used, values exact
    model, info = AutoModelForCausalLM.from_pretrained(folder, dtype=F64, attn_implementation="eager",
                                                       output_loading_info=True)
    model.eval()
    bad = {k: v for k, v in info.items() if v}
    if bad:
        fail(f"from_pretrained loading info: {bad}")
    c = model.config
    print(f"transformers reads: vocab {c.vocab_size}, hidden {c.hidden_size}, mlp {c.intermediate_size}, "
          f"layers {c.num_hidden_layers}, heads {c.num_attention_heads}/{c.num_key_value_heads}, "
          f"head_dim {getattr(c, 'head_dim', None)}, rope {c.rope_parameters}, eps {c.rms_norm_eps}, "
          f"tied {c.tie_word_embeddings}, layer types {sorted(set(c.layer_types))}")
    stored = read_weights(folder)
    dtypes = sorted({d for _, d in stored.values()})
    sd = model.state_dict()
    for name, (t, _) in stored.items():
        if name not in sd:
            fail(f"tensor {name} in the files is not a parameter of the HF model")
        if not torch.equal(sd[name], t):
            fail(f"{name}: the HF model holds other values than the file")
    for name in sd:
        if name not in stored and not (name == "lm_head.weight" and c.tie_word_embeddings):
            fail(f"parameter {name} is not in the files")
    if c.tie_word_embeddings and not torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"]):
        fail("tied, but lm_head differs from embed_tokens")
    print(f"weights: {len(stored)} tensors ({', '.join(dtypes)}), all equal to the HF model's (upcast exactly); "
          f"config declares {raw_cfg.get('torch_dtype') or raw_cfg.get('dtype')}")

    # 2. the tokenizer loads and agrees with drpo's
    auto = AutoTokenizer.from_pretrained(folder)
    print(f"tokenizer: AutoTokenizer loads it ({type(auto).__name__}, {len(auto)} tokens, eos {auto.eos_token!r}, "
          f"chat template {'yes' if auto.chat_template else 'no'})")
    exact = PreTrainedTokenizerFast.from_pretrained(folder)  # tokenizer.json exactly as written
    rng = np.random.default_rng(args.seed)
    special = set(exact.all_special_ids)
    regular = [i for i in range(len(exact)) if i not in special]
    texts = [exact.decode([int(x) for x in rng.choice(regular, size=n)]) for n in (6, 15)]
    texts = [t for t in texts if t] + ["1+2=3;\n"]

    def disagreement(tok):
        """None when drpo and `tok` give the same ids on every text (plain and chat), else the first case."""
        for text in texts:
            try:
                want = tok(text, add_special_tokens=False)["input_ids"]
            except Exception as e:  # a character outside a word-level vocabulary
                want = f"error: {e}"
            r = subprocess.run([args.drpo, "generate", "--model", folder, "--prompt", text, "--max-new-tokens", "0",
                                "--json", "--device", "cpu"], capture_output=True, text=True)
            got = json.loads(r.stdout)["prompt_ids"] if r.returncode == 0 else "error: " + r.stderr.strip()
            if (got != want) and not (isinstance(got, str) and isinstance(want, str)):
                return f"{text!r}: drpo {got}, transformers {want}"
            if tok.chat_template and r.returncode == 0:
                rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                   add_generation_prompt=True)
                want = tok(rendered, add_special_tokens=False)["input_ids"]
                got = json.loads(drpo(args.drpo, "generate", "--model", folder, "--prompt", text, "--chat",
                                      "--max-new-tokens", "0", "--json", "--device", "cpu"))["prompt_ids"]
                if got != want:
                    return f"chat prompt of {text!r}: drpo {got}, transformers {want} ({rendered!r})"
        return None

    what = f"{len(texts)} texts (plain{' and chat template' if auto.chat_template else ''})"
    bad = disagreement(auto)
    if bad is None:
        print(f"tokenizer: drpo and AutoTokenizer give the same ids on {what}")
    else:
        # transformers 5 builds Qwen2Tokenizer for every model_type "qwen2" folder whatever tokenizer_config says,
        # and Qwen2Tokenizer takes only vocab + merges from tokenizer.json: its normalizer, pre-tokenizer and
        # decoder are Qwen2's hard-coded byte-level ones. A tokenizer.json of another kind (the toy task's
        # word-level one) then encodes differently; the file itself is checked with PreTrainedTokenizerFast.
        bad_exact = disagreement(exact)
        if bad_exact is not None:
            fail(f"drpo's tokenizer disagrees with AutoTokenizer ({bad}) and with PreTrainedTokenizerFast ({bad_exact})")
        msg = (f"AutoTokenizer ({type(auto).__name__}) disagrees with drpo: {bad}. PreTrainedTokenizerFast on the same "
               f"tokenizer.json agrees on {what}: transformers {transformers.__version__} replaces the pipeline of "
               f"tokenizer.json with Qwen2's byte-level BPE for model_type qwen2")
        if args.strict_tokenizer:
            fail(msg)
        print(f"tokenizer: WARNING {msg}")

    # 3. + 4. log-probs
    if args.sequences:
        with open(args.sequences) as f:
            seqs = json.load(f)["sequences"]
    else:
        max_len = min(c.max_position_embeddings, 200)
        lengths = [2, 7, 33, max_len]
        seqs = [[int(x) for x in rng.integers(0, c.vocab_size, size=n)] for n in lengths]
        seqs.append(json.loads(drpo(args.drpo, "generate", "--model", folder, "--prompt", texts[-1], "--max-new-tokens",
                                    "0", "--json", "--device", "cpu"))["prompt_ids"][:max_len])
        seqs = [s for s in seqs if len(s) >= 2]
    print(f"sequences: {len(seqs)}, lengths {[len(s) for s in seqs]}")
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.json")
        with open(inp, "w") as f:
            json.dump({"sequences": seqs}, f)
        got = {}
        for dtype in ("f64", "f32"):
            out = os.path.join(tmp, f"out-{dtype}.json")
            drpo(args.drpo, "logprobs", "--model", folder, "--input", inp, "--out", out, "--dtype", dtype,
                 "--device", "cpu")
            with open(out) as f:
                got[dtype] = json.load(f)["logprobs"]
    with exact_f64():
        want = hf_logprobs(model, seqs)
    if min(PATCH_CALLS.values()) == 0:
        fail(f"a float64 patch was bypassed: {PATCH_CALLS}")
    stock = hf_logprobs(AutoModelForCausalLM.from_pretrained(folder, dtype=F64, attn_implementation="eager").eval(), seqs)
    print(f"(for scale: stock transformers, float32 internals, differs from the float64 one by max_rel "
          f"{float((stock - want).abs().max() / want.abs().max()):.3e})")
    ok64, rel64 = compare("drpo logprobs --dtype f64 vs transformers float64", got["f64"], want, args.tol)
    ok32, rel32 = compare("drpo logprobs --dtype f32 vs transformers float64", got["f32"], want, 1e-4)
    if not (ok64 and ok32):
        sys.exit(1)
    print(f"PASS {folder}: f64 {rel64:.3e}, f32 {rel32:.3e}")


if __name__ == "__main__":
    main()
