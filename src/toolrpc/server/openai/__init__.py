"""The OpenAI-compatible API (`/v1`) on the same server, over the same chat layer.

`routes.add_openai_routes` mounts the routes; `translate` maps the wire (`openai_protocol`)
onto the chat layer's steps and back; `errors` lays errors out in OpenAI's shape; `stream`
encodes OpenAI's server-sent events. docs/protocol.md ("OpenAI-compatible API") is the contract.
"""

from toolrpc.server.openai.routes import add_openai_routes

__all__ = ["add_openai_routes"]
