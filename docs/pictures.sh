#!/usr/bin/env bash
# The docs' pictures, made by avar's own commands (`make pictures` after `make run`, with the
# servers still up; `avar study` first for the study's plots). Needs Debian's graphviz
# (dot) and chromium. Each picture is written only when its source is there.
set -euo pipefail
cd "$(dirname "$0")/.."
img=docs/pages/img
mkdir -p "$img/study"
bin=.venv/bin
# tred drops the edges implied by others: the chain reads left to right
$bin/dvc dag --dot | tred | dot -Grankdir=LR -Gdpi=110 -Nshape=box -Nstyle=rounded -Tpng -o "$img/pipeline.png"
if [ -d models/sft_mm ]; then
  $bin/avar attention-map --model models/sft_mm --data data/raw/heldout/data.jsonl --index 0 \
    --out "$img/attention-map.png"
fi
[ -f metrics/plots/vas.png ] && cp metrics/plots/vas.png "$img/vas.png"
[ -d reports/study ] && cp reports/study/*.png "$img/study/"
shot() {  # url, file: a 1400x900 screenshot in headless Chromium (no network but loopback)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d)" --window-size=1400,900 --virtual-time-budget=15000 \
    --screenshot="$2" "$1" 2>/dev/null
}
if curl -fs http://127.0.0.1:5000/health >/dev/null; then
  shot "http://127.0.0.1:5000/#/experiments" "$img/mlflow.png"
fi
echo "pictures in $img"
