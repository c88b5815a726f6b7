"""Joins the two sides of bench/gpu.sh into the markdown table meant for bench/RESULTS.md (plain
Python, no torch needed).

    python3 bench/gpu_table.py CASES DRPO TORCH [--device S] [--commit S] [--ceilings JSON] [--notes S]... [--dry]

CASES: `vs_torch_gpu --list` (the case order, nominal flops); DRPO: its timed JSON lines; TORCH:
bench/torch_gpu.py's. One row per (case, peer); "drpo speed vs peer" = peer time / drpo time (above
1: drpo is faster). A side that did not run a case, or could not, says why in its cell.
"""

import argparse
import datetime
import json


def read(path):
    meta, rows = {}, []
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return meta, rows
    for line in lines:
        try:
            j = json.loads(line)
        except ValueError:
            continue  # a line cut by a phase's time cap
        (rows.append(j) if "case" in j else meta.update(j))
    return meta, rows


def cell(ms, flops, dry):
    if ms is None:
        return None
    t = f"{ms * 1e3:.1f} us" if ms < 1 else f"{ms:.3f} ms" if ms < 100 else f"{ms / 1e3:.2f} s" if ms >= 1e4 else f"{ms:.1f} ms"
    if flops and not dry:
        tflops = flops / ms / 1e9
        t += f" ({tflops:.0f} TFLOP/s)" if tflops >= 10 else f" ({tflops:.2g} TFLOP/s)"
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cases")
    ap.add_argument("drpo")
    ap.add_argument("torch")
    ap.add_argument("--device", default="")
    ap.add_argument("--commit", default="")
    ap.add_argument("--ceilings", default="")
    ap.add_argument("--notes", action="append", default=[])
    ap.add_argument("--dry", action="store_true")
    a = ap.parse_args()
    _, cases = read(a.cases)
    dmeta, drows = read(a.drpo)
    tmeta, trows = read(a.torch)
    drpo = {r["case"]: r for r in drows}
    peers = {}
    for r in trows:
        peers.setdefault(r["case"], []).append(r)

    print("### drpo vs PyTorch on one GPU (`bash bench/gpu.sh`)\n")
    if a.dry:
        print("**DRY RUN**: drpo on the simulated device, torch on the CPU, tiny shapes, one call per case. "
              "It checks the script's logic; its numbers are not results.\n")
    device = a.device or dmeta.get("device", "?")
    torch_desc = ", ".join(f"{k} {tmeta[k]}" for k in ("torch", "cuda", "cudnn", "transformers") if tmeta.get(k))
    print(f"Device: {device}; {torch_desc or 'torch: did not run'}; date {datetime.date.today()}, commit {a.commit or '?'}.")
    if a.ceilings:
        try:
            c = json.loads(a.ceilings)
            print(f"Ceilings measured in this run: device copy {c['hbm_gbs'] / 1e3:.2f} TB/s (read + write), "
                  f"bf16 GEMM 8192³ {c['bf16_tflops']:.0f} TFLOP/s.")
        except (ValueError, KeyError, TypeError):
            print(f"Ceilings: not measured (the phase wrote {a.ceilings!r}).")
    print("Kernel-level rows (matmul, attention): median of 5 batches of launches between CUDA events; "
          "model-level rows: median of 3 synchronised calls after a warm-up. TFLOP/s are nominal flops "
          "over time. drpo's dX accumulates into bf16 and its dW into f32 (`+=`); torch's products "
          "write bf16.")
    if a.notes:
        print("Phases: " + "; ".join(a.notes) + ".")
    print("\n| case | drpo | peer | peer time | drpo speed vs peer |")
    print("| --- | --- | --- | --- | --- |")
    for c in cases:
        name, flops = c["case"], c.get("flops")
        d = drpo.get(name)
        dcell = "not run" if d is None else cell(d.get("ms"), flops, a.dry) or f"– ({d['missing']})"
        for p in peers.get(name, [{"peer": "–", "missing": "not run"}]):
            pcell = cell(p.get("ms"), flops, a.dry) or f"– ({p['missing']})"
            ratio = "–"
            if d and d.get("ms") and p.get("ms"):
                ratio = f"{p['ms'] / d['ms']:.2f}×" + (" (dry)" if a.dry else "")
            print(f"| {name} | {dcell} | {p['peer']} | {pcell} | {ratio} |")


if __name__ == "__main__":
    main()
