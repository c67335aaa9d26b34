"""The HTTP layer: FastAPI routes for `/rpc`, `/stream` and `/health`, body limits, SSE.

It knows HTTP and the wire shapes, and nothing of tokens or models: requests go to the service
(`toolrpc.service`) through the JSON-RPC dispatcher or the SSE encoder.
"""

from toolrpc.server.app import create_app

__all__ = ["create_app"]
