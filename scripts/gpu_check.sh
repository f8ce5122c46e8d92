#!/usr/bin/env bash
# The device check of issue 16: under 5 minutes on one GPU (estimated for an H200), everything under $OUT.
#
#   scripts/gpu_check.sh                      # on a GPU machine: writes gpu_check_out/
#   OUT=/tmp/gc DEVICE=cpu scripts/gpu_check.sh   # a dry run on CPU: the same steps, fp32 only where CUDA is needed
#
# 1. the machine: nvidia-smi, torch / CUDA / cuDNN versions, bf16 support;
# 2. a tiny synthetic dataset (`microexp synth`, $SUBJECTS subjects, $CLIPS clips, 64 px PNG folders);
# 3. one short fold (cv.protocol=split, the last two subjects tested, $EPOCHS epoch) of one model per family
#    with its CPU recipe from recipes/, in bf16 and in fp32 (--set train.amp=false), plus r3d_tiny in fp16
#    (the GradScaler path) and compiled (train.compile=true); $JOBS models at a time, each model's runs in turn;
# 4. the DDP check: torchrun with one process per GPU (NCCL; on CPU $NPROC processes, gloo) training one fold;
#    a failure is reported and the script goes on;
# 5. `microexp benchmark --device $DEVICE --quick --sections throughput,pipeline` (clips/s per family,
#    microexp loop vs bare loop, the data-wait fraction);
# 6. a summary table: $OUT/summary.md (also printed). Exit status 1 when any check failed.
#
# Settings (environment): OUT, DEVICE (cuda|cuda:N|cpu), PYTHON (default .venv/bin/python, else python3),
# JOBS (default 6 on CUDA, 1 on CPU), EPOCHS (1), SUBJECTS (8), CLIPS (48), WORKERS (data.num_workers, 2),
# RUN_TIMEOUT (seconds per training run, 240), BENCH_TIMEOUT (300), NPROC (DDP processes; default: the GPU
# count, 2 on CPU), PRECISIONS ("bf16 fp32"; on CPU bf16 is run as requested but autocast is CUDA-only, so
# it trains in fp32), MODELS (a subset of the names below, space-separated).
set -euo pipefail

OUT=${OUT:-gpu_check_out}
DEVICE=${DEVICE:-cuda}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
cuda=0
[[ "$DEVICE" == cuda* ]] && cuda=1
JOBS=${JOBS:-$([[ $cuda == 1 ]] && echo 6 || echo 1)}
EPOCHS=${EPOCHS:-1}
SUBJECTS=${SUBJECTS:-8}
CLIPS=${CLIPS:-48}
WORKERS=${WORKERS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-240}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
PRECISIONS=${PRECISIONS:-bf16 fp32}

# name | recipe | extra overrides (space-separated KEY=VALUE) -- one model per family (the transformer family
# twice: our TimeSformer and torchvision's MViT); ststnet's recipe is MEGC's, here on the synthetic 7 classes
SPECS=(
  "r3d_tiny|recipes/r3d-tiny_rgb-8f_synth_5fold.yaml|"
  "flow_tiny|recipes/flow-tiny_flow-8f_synth_5fold.yaml|"
  "tsm_tiny|recipes/tsm-tiny_rgb-8f_synth_5fold.yaml|"
  "timesformer_tiny|recipes/timesformer-tiny_rgb-8f_synth_5fold.yaml|"
  "mvit_tiny|recipes/mvit-tiny_rgb-8f_synth_5fold.yaml|"
  "frame_tiny|recipes/frame-tiny_rgb-8f_synth_5fold.yaml|"
  "ststnet|recipes/ststnet_apex-flow_megc-composite_loso.yaml|data.class_map=dfme7 train.batch_size=32"
)
MODELS=${MODELS:-r3d_tiny flow_tiny tsm_tiny timesformer_tiny mvit_tiny frame_tiny ststnet}

mkdir -p "$OUT"/{logs,runs,status,cache}
OUT=$(cd "$OUT" && pwd)
DATA="$OUT/data"
began=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - began ))s] $*"; }
since() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

# ---------------------------------------------------------------------------------------------- 1. machine
say "machine" | tee "$OUT/logs/machine.log"
{
  if command -v nvidia-smi >/dev/null; then nvidia-smi; nvidia-smi -L; else echo "nvidia-smi: not found"; fi
  "$PYTHON" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA (build)", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name} {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
    print("bf16 supported (native):", torch.cuda.is_bf16_supported(including_emulation=False))
else:
    print("cuda: not available")
EOF
} 2>&1 | tee -a "$OUT/logs/machine.log"
if [[ $cuda == 1 ]]; then
  ngpu=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
  [[ $ngpu -gt 0 ]] || ngpu=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
  NPROC=${NPROC:-$ngpu}
else
  NPROC=${NPROC:-2}
fi

# ---------------------------------------------------------------------------------------------- 2. data
say "synthetic data: $SUBJECTS subjects, $CLIPS clips"
if [[ ! -f "$DATA/annotations.csv" ]]; then
  "$PYTHON" -m microexp synth "$DATA" --subjects "$SUBJECTS" --clips "$CLIPS" --size 64 --format frames \
    --no-progress >"$OUT/logs/synth.log" 2>&1
fi
TEST_SUBJECTS="[$((SUBJECTS - 1)),$SUBJECTS]"

# ---------------------------------------------------------------------------------------------- 3. one fold per family
precision_sets() {  # the --set overrides of a precision
  case "$1" in
    bf16) echo "train.amp=true train.amp_dtype=bfloat16" ;;
    fp16) echo "train.amp=true train.amp_dtype=float16" ;;
    fp32) echo "train.amp=false" ;;
    compile) echo "train.amp=true train.amp_dtype=bfloat16 train.compile=true" ;;
    *) echo "unknown precision $1" >&2; return 2 ;;
  esac
}

train_run() {  # NAME RECIPE PRECISION OUT_NAME [EXTRA_SETS...]: one fold; writes status/OUT_NAME.tsv
  local name=$1 recipe=$2 precision=$3 run=$4
  shift 4
  local sets=() kv
  for kv in data.annotations="$DATA/annotations.csv" data.cache_dir="$OUT/cache/$name" train.epochs="$EPOCHS" \
      train.warmup_epochs=0 cv.protocol=split cv.test_subjects="$TEST_SUBJECTS" device="$DEVICE" data.num_workers="$WORKERS" \
      $(precision_sets "$precision") "$@"; do
    sets+=(--set "$kv")
  done
  local start rc=0
  start=$(date +%s%N)
  rm -rf "$OUT/runs/$run"
  timeout "$RUN_TIMEOUT" "$PYTHON" -m microexp train --config "$recipe" --out "$OUT/runs/$run" --no-progress \
    "${sets[@]}" >"$OUT/logs/$run.log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\t%s\t%s\n' "$run" "$name" "$precision" "$rc" "$(since "$start")" >"$OUT/status/$run.tsv"
}

model_job() {  # every run of one model, one after another (they share its clip cache)
  local spec=$1 name recipe extra precision
  IFS='|' read -r name recipe extra <<<"$spec"
  for precision in $PRECISIONS; do
    # shellcheck disable=SC2086  # extra is a list of KEY=VALUE words
    train_run "$name" "$recipe" "$precision" "${name}_${precision}" $extra
  done
  if [[ $name == r3d_tiny ]]; then  # the GradScaler path and torch.compile, on the Conv3d model
    train_run "$name" "$recipe" fp16 "${name}_fp16"
    [[ $cuda == 1 ]] && train_run "$name" "$recipe" compile "${name}_compile"
  fi
  return 0
}

say "training: one fold of each of [$MODELS] in [$PRECISIONS], $JOBS at a time"
running=0
for spec in "${SPECS[@]}"; do
  [[ " $MODELS " == *" ${spec%%|*} "* ]] || continue
  model_job "$spec" &
  running=$((running + 1))
  if (( running >= JOBS )); then wait -n || true; running=$((running - 1)); fi
done
wait || true
say "training done"

# ---------------------------------------------------------------------------------------------- 4. DDP
say "DDP: torchrun, $NPROC processes on $DEVICE"
ddp_rc=0
ddp_start=$(date +%s%N)
rm -rf "$OUT/runs/ddp_r3d_tiny"
timeout "$RUN_TIMEOUT" "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m microexp train \
  --config recipes/r3d-tiny_rgb-8f_synth_5fold.yaml --out "$OUT/runs/ddp_r3d_tiny" --no-progress \
  --set data.annotations="$DATA/annotations.csv" --set data.cache_dir="$OUT/cache/r3d_tiny" \
  --set train.epochs="$EPOCHS" --set train.warmup_epochs=0 --set cv.protocol=split --set cv.test_subjects="$TEST_SUBJECTS" \
  --set device="$DEVICE" --set data.num_workers="$WORKERS" --set train.amp=true --set train.amp_dtype=bfloat16 \
  >"$OUT/logs/ddp_r3d_tiny.log" 2>&1 || ddp_rc=$?
printf '%s\t%s\t%s\t%s\t%s\n' ddp_r3d_tiny "r3d_tiny (DDP x$NPROC)" bf16 "$ddp_rc" "$(since "$ddp_start")" \
  >"$OUT/status/ddp_r3d_tiny.tsv"
[[ $ddp_rc == 0 ]] || say "DDP run failed (rc $ddp_rc): see $OUT/logs/ddp_r3d_tiny.log; continuing"

# ---------------------------------------------------------------------------------------------- 5. benchmark
say "benchmark: throughput and pipeline (--quick) on $DEVICE"
bench_rc=0
timeout "$BENCH_TIMEOUT" "$PYTHON" -m microexp benchmark --device "$DEVICE" --quick --sections throughput,pipeline \
  --json --out "$OUT/benchmark.json" --no-progress >"$OUT/logs/benchmark.log" 2>&1 || bench_rc=$?
[[ $bench_rc == 0 ]] || say "benchmark failed (rc $bench_rc): see $OUT/logs/benchmark.log"

# ---------------------------------------------------------------------------------------------- 6. summary
say "summary"
failed=0
"$PYTHON" - "$OUT" "$bench_rc" "$(( $(date +%s) - began ))" <<'EOF' || failed=1
import csv, json, math, re, sys
from pathlib import Path

out, bench_rc, elapsed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lines = ["# gpu_check summary", "", (out / "logs" / "machine.log").read_text().strip().splitlines()[-1], "",
         "| run | model | precision | status | seconds | train loss | test ACC | test UF1 | used (from the log) |",
         "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
failures = []
for path in sorted((out / "status").glob("*.tsv")):
    run, model, precision, rc, seconds = path.read_text().strip().split("\t")
    loss = acc = uf1 = "-"
    log_csv = out / "runs" / run / "fold_00" / "log.csv"
    if log_csv.exists():
        rows = list(csv.DictReader(log_csv.open()))
        if rows:
            value = float(rows[-1]["train_loss"])
            loss = f"{value:.4f}" + ("" if math.isfinite(value) else " (not finite)")
    metrics = out / "runs" / run / "metrics.json"
    if metrics.exists():
        pooled = json.loads(metrics.read_text())["pooled"]
        acc, uf1 = f"{pooled['acc']:.3f}", f"{pooled['uf1']:.3f}"
    log = (out / "logs" / f"{run}.log").read_text(errors="replace") if (out / "logs" / f"{run}.log").exists() else ""
    used = re.search(r"precision (\S+), memory format (\S+)", log)
    status = "ok" if rc == "0" else ("timeout" if rc in ("124", "137") else f"FAIL (rc {rc})")
    if rc != "0":
        failures.append(run)
        tail = [line for line in log.strip().splitlines() if line.strip()][-1:] or [""]
        status += f": {tail[0][:120]}"
    lines.append(f"| {run} | {model} | {precision} | {status} | {seconds} | {loss} | {acc} | {uf1} | "
                 f"{used.group(1) + ', ' + used.group(2).rstrip(',') if used else '-'} |")

bench = out / "benchmark.json"
if bench.exists():
    report = json.loads(bench.read_text())
    for name, section in report["sections"].items():
        figures = section.get("figures", {})
        if name.startswith("throughput"):
            details = section  # a section's details sit beside its figures in the JSON report
            lines += ["", f"## {name} (batch {details.get('batch_size')}, autocast {details.get('dtype', details.get('amp'))})",
                      "", "| model | memory format | microexp clips/s | bare clips/s | microexp / bare |",
                      "| --- | --- | ---: | ---: | ---: |"]
            for model, info in details.get("models", {}).items():
                get = lambda key: figures.get(f"{model}.{key}", {}).get("median", float("nan"))
                lines.append(f"| {model} | {info.get('memory_format', '-')} | {get('microexp.clips_per_s'):.1f} | "
                             f"{get('bare.clips_per_s'):.1f} | {get('microexp_over_bare'):.2f} |")
        elif name.startswith("pipeline"):
            lines += ["", f"## {name}", ""] + [f"- {key}: {value['median']:.3f} {value['unit']}"
                                               for key, value in figures.items()]
else:
    lines += ["", f"benchmark: no report (rc {bench_rc})"]
    failures.append("benchmark")
lines += ["", f"total {elapsed} s; failed: {', '.join(failures) or 'none'}"]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if failures else 0)
EOF
say "done in $(( $(date +%s) - began )) s: $OUT/summary.md"
exit "$failed"
