#!/usr/bin/env bash
# The same benchmarks on CUDA, in fp32 and under bf16 autocast: pre-training steps (BERT-base,
# VisualBERT, LXMERT with ViLBERT alone; parity asserted first, memory = CUDA allocator peak in a process
# per side) and realistic padded inference (four models). About 4 minutes on one recent GPU.
#
#     bash benchmarks/gpu.sh                # JSON lines in benchmarks/gpu-results/ (or $OUT), table on stdout
# Each script's last stdout line is its JSON object; the tables are printed as they come.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/gpu-results}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: gpu.sh needs one')"
"$PY" -c "import torch; print(torch.cuda.get_device_name(0), torch.__version__)"

run() {  # name, then the script's arguments
  local name=$1; shift
  echo "== $name"
  timeout 150 "$PY" "$@" --device cuda | tee "$OUT/$name.log" | grep -v '^{' || true
  tail -n 1 "$OUT/$name.log" > "$OUT/$name.json"
}

for dtype in fp32 bf16; do
  run "bert-$dtype" benchmarks/bench_models.py --dtype "$dtype" --batch 32 --repeats 10
  run "visualbert-$dtype" benchmarks/bench_visualbert.py --dtype "$dtype" --batch 64 --repeats 10
  run "lxmert-$dtype" benchmarks/bench_lxmert.py --dtype "$dtype" --batch 32 --repeats 10
  run "inference-$dtype" benchmarks/bench_inference.py --dtype "$dtype" --batch 64 --repeats 10
done
"$PY" - "$OUT" <<'PY'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    try:
        r = json.loads(f.read_text())
    except ValueError:
        print(f.stem, "FAILED: see", f.with_suffix(".log"))
        continue
    figures = {k: r[k] for k in ("step_speedup", "step_memory_ratio", "inference_speedup") if k in r}
    print(f.stem, json.dumps(figures))
PY
