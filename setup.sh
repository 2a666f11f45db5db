#!/usr/bin/env bash
# One-command set-up of DropPos Bench: everything the whole suite needs, in a venv.
#
#   ./setup.sh                 # venv in ./.venv
#   VENV=/path/to/venv ./setup.sh
#
# Steps (each skipped when already done, so re-running is quick):
#   1. Fashion-MNIST from Debian (apt-get install dataset-fashion-mnist; needs root), and
#      libjpeg-turbo's headers for the `fast` data path's window decoder (libjpeg62-turbo-dev).
#   2. A venv (python3 -m venv; PYTHON=python3.X picks the interpreter, >= 3.10).
#   3. torch==2.15.0 + torchvision==0.29.2 from PyPI (their regular builds also run on CPU).
#   4. detectron2: tools/install_detectron2.py rebuilds PyPI's sal-detectron2 as a pure wheel
#      in build/wheels/.
#   5. This project, editable, with all extras, plus that wheel, in one pip call (it compiles the
#      JPEG window decoder, optional: a warning if it could not); then pip check.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_PINS=(torch==2.15.0 torchvision==0.29.2)
FMNIST_DIR=/usr/share/datasets/fashion-mnist
FMNIST_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
              t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
WHEEL_DIR=build/wheels
START=$SECONDS

step() { printf '==> [%3ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }

# 1. Data -----------------------------------------------------------------------------------
fmnist_missing=0
for f in "${FMNIST_FILES[@]}"; do [[ -f "$FMNIST_DIR/$f" ]] || fmnist_missing=1; done
if [[ $fmnist_missing == 0 ]]; then
    step "Fashion-MNIST: found in $FMNIST_DIR"
elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    step "Fashion-MNIST: apt-get install dataset-fashion-mnist"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
    printf 'setup.sh: warning: Fashion-MNIST is not in %s and this script is not root.\n' "$FMNIST_DIR" >&2
    printf '  Install it with: sudo apt-get install -y dataset-fashion-mnist\n' >&2
    printf '  (or give your own IDX folder later: droppos data --source DIR). Continuing.\n' >&2
fi

if [[ -f /usr/include/jpeglib.h ]]; then
    step "libjpeg-turbo headers: found"
elif [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    step "libjpeg-turbo headers: apt-get install libjpeg62-turbo-dev"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq libjpeg62-turbo-dev >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq libjpeg62-turbo-dev >/dev/null; } \
        || printf 'setup.sh: warning: libjpeg62-turbo-dev did not install; --data-backend fast will decode whole images\n' >&2
else
    printf 'setup.sh: warning: no libjpeg headers (/usr/include/jpeglib.h): --data-backend fast will decode whole\n' >&2
    printf '  images; for window decoding: sudo apt-get install -y libjpeg62-turbo-dev, then re-run ./setup.sh\n' >&2
fi

# 2. Venv -----------------------------------------------------------------------------------
if [[ -x "$VENV/bin/python" ]]; then
    step "venv: using $VENV ($("$VENV/bin/python" -V 2>&1))"
else
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python >= 3.10 or set PYTHON=..."
    step "venv: creating $VENV with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv $VENV' failed; on Debian/Ubuntu: apt-get install python3-venv"
fi
"$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$VENV uses $("$VENV/bin/python" -V 2>&1); Python >= 3.10 is needed (remove $VENV, set PYTHON=python3.X)"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# 3. torch + torchvision --------------------------------------------------------------------
torch_ok() {
    "$VENV/bin/python" - <<'EOF' 2>/dev/null
import torch, torchvision, torchvision.ops
assert torch.__version__.startswith("2.15.0") and torchvision.__version__.startswith("0.29.2")
EOF
}
if torch_ok; then
    step "torch: ${TORCH_PINS[*]} already installed"
else
    step "torch: installing ${TORCH_PINS[*]} from PyPI (about 5 GB, a minute or two)"
    "${PIP[@]}" install -qq --progress-bar off "${TORCH_PINS[@]}"
    torch_ok || die "torch/torchvision import failed after install; see: $VENV/bin/python -c 'import torchvision'"
fi

# 4. detectron2 wheel -----------------------------------------------------------------------
step "detectron2: building the pure-Python wheel in $WHEEL_DIR"
"$VENV/bin/python" tools/install_detectron2.py --pip "$VENV/bin/pip" --out "$WHEEL_DIR"

# 5. Project + extras + detectron2, one resolver run ----------------------------------------
step "project: pip install -e \".[all]\" $WHEEL_DIR/*.whl"
"${PIP[@]}" install -qq --progress-bar off -e ".[all]" "$WHEEL_DIR"/*.whl
step "pip check"
"${PIP[@]}" check
"$VENV/bin/python" -c 'from droppos.pretrain.datapath import WINDOW_NOTE, window_decoder
if window_decoder() is None: print("setup.sh: warning:", WINDOW_NOTE)' >&2

step "done: $("$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
names = ["torch", "torchvision", "timm", "sal-detectron2", "mmsegmentation", "mmengine", "mmcv-lite"]
print(", ".join(f"{n} {md.version(n)}" for n in names))
EOF
)"
