#!/usr/bin/env bash
# Installs NVRTC 13 (the compiler library only, no driver, no GPU needed) from PyPI wheels, then prints
# the environment lines that let `libnvrtc.so.13` be found.  Idempotent and quiet: pip's text goes to
# stderr, only `export` lines go to stdout, so a CI script does
#
#     eval "$(bash .ci/install-nvrtc.sh)"
#
# and `cargo test --test kernels_compile` then compiles every kernel for sm_80 and sm_90.
#   DRPO_NVRTC_LIB     folder holding libnvrtc.so.13 (and libnvrtc-builtins), prepended to LD_LIBRARY_PATH
#   DRPO_CUDA_INCLUDE  CUDA headers (cuda_bf16.h, …); the kernels need none, kept for experiments
# The wheels put both under nvidia/cu13/{lib,include} (checked with 13.5.37). Found in python's own
# site-packages if already there; otherwise installed with `pip install --target` into target/nvrtc-py
# of this checkout (ignored by git, removed by `cargo clean`): that needs no virtualenv and works with a
# distribution's "externally managed" python (PEP 668), which refuses a plain `pip install`.
set -euo pipefail
PY=${PYTHON:-python3}
LOCAL="$(cd "$(dirname "$0")/.." && pwd)/target/nvrtc-py"

find_cu13() {
    "$PY" - <<'PYEOF'
import os, sys
try:
    import nvidia
except ImportError:
    sys.exit(1)
for root in list(nvidia.__path__):
    d = os.path.join(root, "cu13")
    if os.path.isfile(os.path.join(d, "lib", "libnvrtc.so.13")):
        print(d)
        sys.exit(0)
sys.exit(1)
PYEOF
}

local_cu13() {
    [ -f "$LOCAL/nvidia/cu13/lib/libnvrtc.so.13" ] && echo "$LOCAL/nvidia/cu13"
}

if ! dir=$(local_cu13) && ! dir=$(find_cu13); then
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        echo "install-nvrtc: $PY has no pip; install python3-pip first" >&2
        exit 1
    fi
    "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --upgrade \
        --target "$LOCAL" 'nvidia-cuda-nvrtc>=13,<14' 'nvidia-cuda-runtime>=13,<14' >&2
    dir=$(local_cu13) || { echo "install-nvrtc: libnvrtc.so.13 not found in $LOCAL after pip install" >&2; exit 1; }
fi

echo "export DRPO_NVRTC_LIB=\"$dir/lib\""
echo "export DRPO_CUDA_INCLUDE=\"$dir/include\""
echo "export LD_LIBRARY_PATH=\"$dir/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
