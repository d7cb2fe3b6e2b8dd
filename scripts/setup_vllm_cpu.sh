#!/usr/bin/env bash
# Build (or reuse) the vLLM CPU server environment and its Gemma 3 270M model in a cache folder.
# The build ships inside the package (argentic/llm/local/) so `argentic serve` can run it too.
# usage: scripts/setup_vllm_cpu.sh [CACHE_DIR]   (prints the cache folder on its last line)
set -euo pipefail
exec bash "$(cd "$(dirname "$0")" && pwd)/../src/argentic/llm/local/setup_vllm_cpu.sh" "$@"
