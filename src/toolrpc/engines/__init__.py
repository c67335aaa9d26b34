"""Engines: models that turn a prompt into a stream of text.

`base.Engine` is the seam the chat layer uses. `batched.BatchedEngine` makes an Engine of any
`ModelRunner` through the batching loop of `toolrpc.scheduling`; the runners are `llama_cpp`
(GGUF models, the embedded default among them, which `default_model` finds) and `hf`
(transformers models). `fake` is a deterministic scripted engine for tests and demos, and
`factory` builds the engine the settings name. Engines know tokens, sampling and grammars, and
nothing of tools, conversations, JSON-RPC or HTTP.
"""
