#!/usr/bin/env bash
# Install everything the tests need (venv, Python packages, Debian's chromium and g++) and run them.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: chromium for the browser tests, g++ for the compiled kernels (encoder
# attention, decoder tail, mask step).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "== installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]}; run 'sudo apt-get install -y ${missing[*]}' (without chromium the browser tests are skipped, without g++ the native-kernel tests; both fail under CI=true)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  # PyTorch's CUDA build (the one pip gets on x86_64) makes the venv about 6.5 GB.
  free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
  if [ "${free_gb:-99}" -lt 8 ]; then
    echo "== warning: ${free_gb} GB free here; the venv needs about 7 GB (PyTorch), so pip may fail with 'No space left on device'" >&2
  fi
  echo "== creating .venv"
  python3 -m venv .venv
fi
echo "== installing Python packages"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt

echo "== running tests"
export MOBILE_SAM_OFFLINE="${MOBILE_SAM_OFFLINE:-1}"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
