#!/usr/bin/env bash
# Check argentic on a machine with an NVIDIA GPU in one go: install vLLM (`uv sync --extra vllm`),
# serve google/gemma-3n-E4B-it, run the GPU test tier against it (the main example, video, audio)
# and print one PASS/FAIL line per check. Exits non-zero when any check fails, and at once, saying
# why, on a machine without a GPU.
#
# usage: scripts/gpu_check.sh            (HF_TOKEN must allow downloading the gated Gemma 3n weights,
#                                          unless they are already in the Hugging Face cache)
# env:   ARGENTIC_GPU_PORT (default 8011), ARGENTIC_GPU_MAX_MODEL_LEN (default 8192),
#        ARGENTIC_TEST_GEMMA3N_URL=http://HOST:PORT/v1 to check a Gemma 3n server already running.
set -uo pipefail
cd "$(dirname "$0")/.."

MODEL=google/gemma-3n-E4B-it
PORT=${ARGENTIC_GPU_PORT:-8011}
failures=0
report() { printf '%-5s %-10s %s\n' "$1" "$2" "$3"; }

if [ -z "${ARGENTIC_TEST_GEMMA3N_URL:-}" ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    report FAIL gpu "no NVIDIA GPU here (nvidia-smi is missing or sees no device): run this on a GPU machine"
    exit 2
  fi
  report PASS gpu "$(nvidia-smi -L | head -1)"
fi

if ! command -v uv >/dev/null; then python3 -m pip install -q uv; hash -r; fi
if uv sync --extra vllm --quiet; then
  report PASS install "uv sync --extra vllm"
else
  report FAIL install "uv sync --extra vllm failed"
  exit 1
fi

server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
}
trap cleanup EXIT

if [ -z "${ARGENTIC_TEST_GEMMA3N_URL:-}" ]; then
  if ! uv run --extra vllm python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    report FAIL cuda "torch sees no CUDA device after the install"
    exit 1
  fi
  log=$(mktemp -t argentic-gemma3n.XXXXXX.log)
  # Two images and one audio clip per prompt: what the video and audio checks send.
  ARGENTIC_LLM__SERVER__LIMIT_MM_PER_PROMPT='{"image": 2, "audio": 1}' \
  ARGENTIC_LLM__SERVER__SERVED_MODEL_NAME="$MODEL" \
  ARGENTIC_LLM__SERVER__STARTUP_TIMEOUT_S=1800 \
    uv run --extra vllm argentic serve --model "$MODEL" --port "$PORT" \
      --max-model-len "${ARGENTIC_GPU_MAX_MODEL_LEN:-8192}" >"$log" 2>&1 &
  server_pid=$!
  until grep -q "^serving " "$log"; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      report FAIL serve "argentic serve exited; log: $log"
      tail -20 "$log"
      exit 1
    fi
    sleep 5
  done
  report PASS serve "$MODEL at http://127.0.0.1:$PORT/v1"
  export ARGENTIC_TEST_GEMMA3N_URL="http://127.0.0.1:$PORT/v1"
fi

check() {  # name, then pytest node ids
  local name=$1
  shift
  local out
  out=$(mktemp -t "argentic-gpu-$name.XXXXXX.log")
  if uv run --extra vllm pytest -m gpu -q -p no:cacheprovider "$@" >"$out" 2>&1 && ! grep -q " skipped" "$out"; then
    report PASS "$name" "$(tail -1 "$out")"
  else
    report FAIL "$name" "$(tail -1 "$out") (log: $out)"
    failures=$((failures + 1))
  fi
}

check example tests/agents/test_agents_gpu.py
check video "tests/video/test_video_visual_vllm.py::test_gemma_3n_answers_about_frames_end_to_end"
check audio "tests/video/test_video_visual_vllm.py::test_gemma_3n_hears_the_tone"

if [ "$failures" -eq 0 ]; then
  report PASS all "every GPU check passed"
else
  report FAIL all "$failures check(s) failed"
fi
exit $((failures > 0))
