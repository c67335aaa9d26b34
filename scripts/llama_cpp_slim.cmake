# Included by CMake right after llama.cpp's project() call (CMAKE_PROJECT_llama.cpp_INCLUDE):
# llama-cpp-python forces LLAMA_BUILD_COMMON on for its multimodal library; with that library off
# (LLAVA_BUILD=OFF) nothing loads llama.cpp's common library, which is half of the compile.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama.cpp common library: not loaded by toolrpc" FORCE)
