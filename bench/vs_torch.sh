#!/usr/bin/env bash
# drpo's CPU path against PyTorch eager (f32, CPU) on the same shapes and threads, in one run:
#   bash bench/vs_torch.sh [CASE-PREFIX]        e.g. `matmul`, `toy`, `qwen0.5b logprobs`
# Creates target/torch-venv (pip install torch numpy) on first use, runs bench/vs_torch.rs and
# bench/torch_eager.py with THREADS (default 2) threads each, medians of BENCH_REPS (default 5),
# and prints a markdown table in bench/RESULTS.md's format (device, date, commit, ratios); with
# WRITE=1 it also appends the table to bench/RESULTS.md. Needs a quiet machine: the numbers are walls.
set -euo pipefail
cd "$(dirname "$0")/.."
only="${1:-}"
threads="${THREADS:-2}"
venv=target/torch-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    python3 -m venv "$venv"
    # the CPU-only index is the smaller download; PyPI's default wheel (with CUDA libraries) also works
    "$venv/bin/pip" install --quiet torch numpy --index-url https://download.pytorch.org/whl/cpu \
        || "$venv/bin/pip" install --quiet torch numpy
fi
cargo build --release --bench vs_torch >&2
bin=$(cargo bench --bench vs_torch --no-run --message-format=json 2>/dev/null \
      | "$venv/bin/python" -c 'import json,sys; print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable") and j["target"]["name"]=="vs_torch"][-1])')
out=$(mktemp -d)
echo "drpo ($threads threads) ..." >&2
RAYON_NUM_THREADS="$threads" "$bin" "$only" > "$out/drpo.jsonl"
echo "torch eager ($threads threads) ..." >&2
OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" "$venv/bin/python" bench/torch_eager.py "$only" --threads "$threads" > "$out/torch.jsonl"
device=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
flags=$(grep -m1 -o -w -E 'avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src bench || echo "+dirty")
"$venv/bin/python" - "$out/drpo.jsonl" "$out/torch.jsonl" "$device" "$flags" "$commit" "$threads" <<'PY' | tee "$out/table.md"
import json, sys, datetime
drpo_path, torch_path, device, flags, commit, threads = sys.argv[1:]
def read(p):
    meta, cases = {}, {}
    for line in open(p):
        j = json.loads(line)
        if "case" in j: cases[j["case"]] = j["ms"]
        else: meta.update(j)
    return meta, cases
dm, d = read(drpo_path)
tm, t = read(torch_path)
flops = {"matmul 2048^3": 2 * 2048**3, "matmul fwd 896->4864 n=256": 2 * 256 * 896 * 4864,
         "matmul fwd 1536->8960 n=256": 2 * 256 * 1536 * 8960, "matmul bwd 896->4864 n=256": 4 * 256 * 896 * 4864,
         "matmul bwd 1536->8960 n=256": 4 * 256 * 1536 * 8960}
print(f"Device: {device} ({flags.strip()}), {threads} threads each side; drpo SIMD level {dm.get('level')}, "
      f"torch {tm.get('torch')}; date {datetime.date.today()}, commit {commit}; median of the runs.\n")
print("| case | drpo | torch eager | drpo speed vs torch |")
print("| --- | --- | --- | --- |")
for case in d:
    if case not in t: continue
    def fmt(ms):
        g = f" ({flops[case] / ms / 1e6:.0f} GFLOP/s)" if case in flops else ""
        return f"{ms:.1f} ms{g}" if ms < 1e4 else f"{ms / 1e3:.2f} s{g}"
    print(f"| {case} | {fmt(d[case])} | {fmt(t[case])} | {t[case] / d[case]:.2f}× |")
PY
if [ "${WRITE:-0}" = 1 ]; then
    { echo; echo "### drpo vs torch eager (\`bash bench/vs_torch.sh\`)"; echo; cat "$out/table.md"; } >> bench/RESULTS.md
    echo "appended to bench/RESULTS.md" >&2
fi
rm -rf "$out"
