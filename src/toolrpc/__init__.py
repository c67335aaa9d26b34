"""toolrpc: a self-hosted LLM inference server with tool calling.

Clients talk JSON-RPC 2.0 (`/rpc`) or Server-Sent Events (`/stream`); the server renders the
conversation and tools with the model's own chat template, runs the model, turns its output into
text or structured tool calls, and guards each turn against tool-call loops. Tools run on the
client. See docs/design.md for the layers: server -> rpc/service -> chat -> engines -> scheduling.
"""

__version__ = "0.1.0"
