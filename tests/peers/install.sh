#!/usr/bin/env bash
# Install the peer clients that tests/test_peer_clients.py drives: a Python virtual environment that
# sees the system's packages (tests/peers/.venv) and the npm packages (tests/peers/node_modules).
# Repeatable; each part that cannot be installed is reported, and its tests skip with the reason.
set -uo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv --system-site-packages .venv || echo "peer clients: could not create tests/peers/.venv" >&2
fi
if [ -x .venv/bin/python ]; then
  .venv/bin/python -m pip install -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" \
    || true
  .venv/bin/python -c "import semantic_kernel, autogen_ext, langchain_azure_dynamic_sessions" 2>/dev/null \
    || echo "peer clients: some Python clients did not install; their tests will skip" >&2
fi
if command -v npm >/dev/null; then
  npm install --no-audit --no-fund --silent >/dev/null 2>&1 \
    || echo "peer clients: npm install failed; the LlamaIndex TS test will skip" >&2
else
  echo "peer clients: npm not found; the LlamaIndex TS test will skip" >&2
fi
exit 0
