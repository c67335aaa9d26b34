"""Engines: models that turn a prompt into a stream of text.

`base.Engine` is the seam the chat layer uses. `llama_cpp` serves GGUF models (the embedded
default among them) as a ModelRunner under the batching loop of `toolrpc.scheduling`; `fake` is a
deterministic scripted engine for tests and demos. Engines know tokens, sampling and grammars,
and nothing of tools, conversations, JSON-RPC or HTTP.
"""
