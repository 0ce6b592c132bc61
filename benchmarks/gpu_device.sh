#!/bin/bash
# The GPU check on a lent device machine, from the repository root, with what benchmarks/gpu_carry.py carried:
#   bash benchmarks/gpu_device.sh check   the machine, and that every carried wheel installs and imports
#   bash benchmarks/gpu_device.sh run     the onnxruntime-gpu wheel joined from its parts, the GPU tests, then
#                                         benchmarks/gpu_headtohead.py (five models profiled, one head-to-head)
# Logs and the run folder go under $OUT (what the device tool brings back), or reports/gpu where it is unset.
# WHL (default .whl) and PY (default python3) name the carried wheels and the Python, to rehearse it elsewhere.
set -u
W=${WHL:-.whl}
OUT=${OUT:-reports/gpu}
mkdir -p "$OUT"
PY=${PY:-python3}

install() {  # the wheels given into $1, put before the machine's own packages
    rm -rf "$1" && $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$1" "${@:2}" || exit 1
    export PYTHONPATH="$1:$PWD" PATH="$1/bin:$PATH"
}

case "${1:-}" in
check)
    nvidia-smi -L
    $PY --version
    install /tmp/site-check $W/wheels/*.whl
    $PY - <<'EOF' 2>&1 | tee "$OUT/check.log"
import importlib
for name in ("numpy", "pandas", "scipy", "pyarrow", "aiohttp", "onnx", "onnxruntime", "locust", "gevent", "flask",
             "orjson", "httptools", "plotly", "uvloop", "pytest", "pytest_aiohttp", "harness.kairos_load"):
    try:
        mod = importlib.import_module(name)
        print(f"ok   {name} {getattr(mod, '__version__', '')}")
    except Exception as exc:  # every missing one, not only the first
        print(f"FAIL {name}: {type(exc).__name__}: {exc}")
EOF
    # the carried test plugins load beside the machine's own pytest
    $PY -m pytest -q --co -p no:cacheprovider tests/servers/test_gpu.py 2>&1 | tail -3 | tee -a "$OUT/check.log"
    ;;
run)
    name=$(cat $W/ort/NAME) || exit 1
    ls $W/ort/part-* | tee "$OUT/parts.log"
    cat $W/ort/part-* > "/tmp/$name"
    if [ "$(sha256sum "/tmp/$name" | cut -d' ' -f1)" != "$(cat $W/ort/SHA256)" ]; then
        echo "$name: the parts do not join into the wheel (a part missing: the machine went back between calls?)"
        exit 1
    fi
    install /tmp/site $W/wheels/*.whl "/tmp/$name"
    # CUDA 13 and cuDNN come with the machine's PyTorch as pip packages; onnxruntime.preload_dlls looks for them beside
    # onnxruntime itself, which is now in /tmp/site, so the loader is told where they are.
    nv=$($PY -c "import glob, os, site; print(':'.join(sorted({os.path.dirname(p) for d in site.getsitepackages()
for p in glob.glob(os.path.join(d, 'nvidia', '**', 'lib*.so*'), recursive=True)})))")
    [ -n "$nv" ] && export LD_LIBRARY_PATH="$nv${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" | tee "$OUT/ld.log"
    $PY -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())" | tee "$OUT/ort.log"
    set -o pipefail
    $PY -m pytest -q -p no:cacheprovider tests/servers/test_gpu.py -rs 2>&1 | tee "$OUT/tests.log"
    PYTHONUNBUFFERED=1 $PY benchmarks/gpu_headtohead.py --out "$OUT/gpu" --samples 10 --bucket-step 100 \
        --dispatchers kairos,fcfs --max-phases 5 2>&1 | tee "$OUT/headtohead.log"
    ;;
*)
    echo "usage: bash benchmarks/gpu_device.sh check|run" >&2
    exit 2
    ;;
esac
