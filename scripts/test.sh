#!/usr/bin/env bash
# Run argentic's whole test suite on this machine, installing what it needs when missing:
# mosquitto, redis-server, promtool and chromium (Debian packages), uv, the project environment, and the vLLM CPU
# server environment with its model (built once into a cache folder, see scripts/setup_vllm_cpu.sh).
# usage: scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[test] %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ] || ! command -v mosquitto_pub >/dev/null; then
  say "installing mosquitto"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null
fi
if ! command -v redis-server >/dev/null && [ ! -x /usr/bin/redis-server ]; then
  say "installing redis-server"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v promtool >/dev/null; then
  say "installing promtool (prometheus), which checks deploy/'s Prometheus config and dashboard"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! command -v chromium >/dev/null; then
  say "installing chromium, the browser the gateway's live view is tested in"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! command -v uv >/dev/null; then
  say "installing uv"
  python3 -m pip install -q uv
  hash -r
fi
command -v uv >/dev/null || uv() { python3 -m uv "$@"; }

say "syncing the project environment"
uv sync --frozen --quiet
say "building (or reusing) the vLLM CPU environment"
bash scripts/setup_vllm_cpu.sh >/dev/null
say "running the tests"
exec uv run pytest "$@"
