#!/usr/bin/env bash
# drpo against PyTorch on one GPU, in one call of ≤ 10 minutes (the GPU machine has no Rust: the
# bench binaries are built here and carried).
#
#   bash bench/gpu.sh pack     here: build and strip bench/vs_torch_gpu.rs and bench/kernels.rs into
#                              .gpu-bench/ (git-ignored), with the commit they were built from
#   bash bench/gpu.sh          on the GPU machine (the device tool: carry [".gpu-bench"], timeout_s 600,
#                              command "set -o pipefail; bash bench/gpu.sh 2>&1 | tee $OUT/log")
#   bash bench/gpu.sh dry      here: the same phases at tiny shapes, drpo on the simulated device and
#                              torch on the CPU (target/torch-venv if it exists): checks the logic
#
# Phases, each under its own time cap (seconds; CAP_<PHASE>=N overrides), the lines of a phase cut
# by its cap kept: ceilings (torch: device copy and an 8192³ bf16 GEMM, passed to the kernel bench
# as DRPO_ROOFLINE) 45, drpo 150 (vs_torch_gpu: matmul, attention, score, generate, train step at
# Qwen2.5-0.5B/1.5B shapes), torch 150 (the same cases with cuBLAS, SDPA flash/cuDNN, transformers),
# kernels 120 (cargo bench --bench kernels: every kernel against the roofline). 465 s of caps in all;
# expected ≈ 4–5 minutes. Writes to $OUT (else target/gpu-bench/): gpu-bench.md (the tables for
# bench/RESULTS.md, printed last), cases.jsonl, drpo.jsonl, torch.jsonl, kernels.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

# The executables of the two bench targets, built in release.
build() {
    cargo bench --bench vs_torch_gpu --bench kernels --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
exe = {}
for line in sys.stdin:
    j = json.loads(line)
    if j.get("reason") == "compiler-artifact" and j.get("executable"):
        exe[j["target"]["name"]] = j["executable"]
print(exe["vs_torch_gpu"], exe["kernels"])'
}

commit_here() {
    echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src cuda bench Cargo.toml || echo "+dirty")"
}

case "$mode" in
pack)
    set -e
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF '/.gpu-bench/' "$exclude" 2>/dev/null || echo '/.gpu-bench/' >> "$exclude"
    cargo build --release --bench vs_torch_gpu --bench kernels >&2
    read -r peers kernels < <(build)
    rm -rf .gpu-bench && mkdir -p .gpu-bench
    strip -o .gpu-bench/vs_torch_gpu "$peers"
    strip -o .gpu-bench/kernels "$kernels"
    commit_here > .gpu-bench/commit
    du -sh .gpu-bench
    echo "device run: carry [\".gpu-bench\"], timeout_s 600, command \"set -o pipefail; bash bench/gpu.sh 2>&1 | tee \$OUT/log\""
    exit 0
    ;;
dry)
    cargo build --release --bench vs_torch_gpu --bench kernels >&2 || exit 1
    read -r peers kernels < <(build)
    dev=(--dry --device sim)
    py=python3
    [ -x target/torch-venv/bin/python ] && py=target/torch-venv/bin/python
    commit=$(commit_here)
    device="simulated device"
    out=target/gpu-bench-dry
    ;;
run)
    peers=.gpu-bench/vs_torch_gpu kernels=.gpu-bench/kernels
    [ -x "$peers" ] && [ -x "$kernels" ] || { echo "no .gpu-bench/: run 'bash bench/gpu.sh pack' here and carry .gpu-bench" >&2; exit 1; }
    dev=()
    py=python3
    commit=$(cat .gpu-bench/commit)
    device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
    out=${OUT:-target/gpu-bench}
    # libcuda from the driver, libnvrtc.so.13 from the toolkit or from torch's NVIDIA wheels
    wheels=$("$py" -c 'import nvidia, os; print(":".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null)
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64:/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu:$wheels"
    # the second binary reuses the first one's compiled kernels
    export DRPO_CACHE_DIR=/tmp/drpo-kernel-cache
    ;;
*)
    echo "usage: bash bench/gpu.sh [pack | dry]" >&2
    exit 2
    ;;
esac
[ "$mode" = dry ] && dry=(--dry) || dry=()
mkdir -p "$out"
notes=()

# phase NAME CAP FILE COMMAND...: COMMAND's stdout into FILE, stopped at CAP seconds.
phase() {
    local name=$1 cap=$2 file=$3
    shift 3
    local t0=$SECONDS
    echo "== phase $name (cap ${cap} s)" >&2
    timeout -k 10 "$cap" "$@" > "$file"
    local rc=$? took=$((SECONDS - t0))
    case $rc in
    0) notes+=("$name ${took} s of ${cap}") ;;
    124 | 137) notes+=("$name STOPPED at its cap of ${cap} s (the cases after its last line did not run)") ;;
    *) notes+=("$name FAILED (exit $rc) after ${took} s (see the log)") ;;
    esac
    echo "   $name: exit $rc, ${took} s" >&2
}

ceilings=""
if [ "$mode" = run ]; then
    phase ceilings "${CAP_CEILINGS:-45}" "$out/ceilings.json" "$py" bench/torch_gpu.py --ceilings
    ceilings=$(tail -1 "$out/ceilings.json")
    rm -f "$out/ceilings.json"
    roof=$(echo "$ceilings" | "$py" -c 'import json, sys; c = json.loads(sys.stdin.read()); print(f"{c[\"hbm_gbs\"]},{c[\"bf16_tflops\"]},67")' 2>/dev/null) \
        && export DRPO_ROOFLINE="$roof"
fi
"$peers" --list "${dry[@]}" > "$out/cases.jsonl"
phase drpo "${CAP_DRPO:-150}" "$out/drpo.jsonl" "$peers" "${dev[@]}"
phase torch "${CAP_TORCH:-150}" "$out/torch.jsonl" "$py" bench/torch_gpu.py "$out/cases.jsonl" "${dry[@]}"
phase kernels "${CAP_KERNELS:-120}" "$out/kernels.txt" "$kernels" "${dev[@]}"

table_args=(--device "$device" --commit "$commit")
[ -n "$ceilings" ] && table_args+=(--ceilings "$ceilings")
for n in "${notes[@]}"; do table_args+=(--notes "$n"); done
{
    python3 bench/gpu_table.py "$out/cases.jsonl" "$out/drpo.jsonl" "$out/torch.jsonl" "${table_args[@]}" "${dry[@]}"
    echo
    echo "#### Kernels against the roofline (\`cargo bench --bench kernels\`, commit $commit)"
    echo
    grep -v '^|' "$out/kernels.txt"
    echo
    grep '^|' "$out/kernels.txt"
} > "$out/gpu-bench.md"
cat "$out/gpu-bench.md"
