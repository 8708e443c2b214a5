#!/usr/bin/env bash
# Build the TensorRT plans of a quantplug model repository on the deployment GPU.
#
#   deploy/build_engines.sh [--dry-run] [--force] REPOSITORY [IMAGE]
#
# Every version folder holding a build.json (written by `quantplug repo add --backend tensorrt
# --defer-build`) gets model.plan built from its QDQ model.onnx with trtexec: explicit quantization
# (--int8 honours the Q/DQ scales), one optimization profile over the batch dimension from build.json,
# a timing cache shared by all models (REPOSITORY/.timing.cache). Plans are specific to the GPU model and
# the TensorRT version: build with the TensorRT release of the Triton image that serves them
# (nvcr.io/nvidia/tensorrt:24.10-py3 for nvcr.io/nvidia/tritonserver:24.10-py3), on the same GPU model.
#
# Where trtexec is on PATH (inside NVIDIA's TensorRT container) it builds directly; otherwise it runs
# itself inside IMAGE with docker and the first GPU. Existing plans are kept unless --force.
# --dry-run prints the trtexec commands without running anything.
set -euo pipefail

DRY_RUN=0
FORCE=0
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --force) FORCE=1 ;;
    *) echo "error: unknown option $1 (valid: --dry-run, --force)" >&2; exit 2 ;;
  esac
  shift
done
REPO="${1:-}"
IMAGE="${2:-nvcr.io/nvidia/tensorrt:24.10-py3}"
if [[ -z "$REPO" || ! -d "$REPO" ]]; then
  echo "error: pass the model repository folder (got '${REPO}'); usage: $0 [--dry-run] [--force] REPOSITORY [IMAGE]" >&2
  exit 2
fi
REPO="$(cd "$REPO" && pwd)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ $DRY_RUN -eq 0 ]] && ! command -v trtexec >/dev/null 2>&1; then
  command -v docker >/dev/null 2>&1 || { echo "error: neither trtexec nor docker is available; run this inside $IMAGE" >&2; exit 2; }
  flags=()
  [[ $FORCE -eq 1 ]] && flags+=(--force)
  exec docker run --rm --gpus 'device=0' -v "$REPO:/models" -v "$HERE:/deploy:ro" "$IMAGE" \
    /deploy/build_engines.sh "${flags[@]}" /models
fi

# Print one trtexec argument list per line for a version folder's build.json (python3 is in the image).
trtexec_args() {
  python3 - "$1" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1] + "/build.json"))
shape = lambda b: ",".join(f"{n}:{'x'.join(str(d) for d in [b, *dims])}" for n, dims in spec["inputs"].items())
args = [f"--onnx={sys.argv[1]}/{spec['onnx']}", f"--saveEngine={sys.argv[1]}/{spec['plan']}.tmp", "--int8",
        f"--minShapes={shape(spec['min_batch'])}", f"--optShapes={shape(spec['opt_batch'])}",
        f"--maxShapes={shape(spec['max_batch'])}", "--skipInference"]
if spec.get("fp16", True):
    args.append("--fp16")
print(" ".join(args))
PY
}

built=0
while IFS= read -r -d '' spec; do
  vdir="$(dirname "$spec")"
  if [[ -f "$vdir/model.plan" && $FORCE -eq 0 ]]; then
    echo "keep   $vdir/model.plan (use --force to rebuild)"
    continue
  fi
  args="$(trtexec_args "$vdir")"
  cmd="trtexec $args --timingCacheFile=$REPO/.timing.cache"
  if [[ $DRY_RUN -eq 1 ]]; then
    echo "$cmd"
    continue
  fi
  echo "build  $vdir/model.plan"
  # shellcheck disable=SC2086
  if ! trtexec $args --timingCacheFile="$REPO/.timing.cache" > "$vdir/build.log" 2>&1; then
    rm -f "$vdir/model.plan.tmp"
    echo "error: trtexec failed for $vdir; the layer it rejects is in $vdir/build.log:" >&2
    grep -E "ERROR|Error" "$vdir/build.log" | tail -5 >&2 || tail -5 "$vdir/build.log" >&2
    exit 1
  fi
  mv "$vdir/model.plan.tmp" "$vdir/model.plan"   # atomic: Triton never sees half a plan
  built=$((built + 1))
done < <(find "$REPO" -mindepth 3 -maxdepth 3 -name build.json -print0 | sort -z)

[[ $DRY_RUN -eq 1 ]] || echo "built $built plan(s) in $REPO; check with: quantplug repo check $REPO"
