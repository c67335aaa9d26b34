"""A tool module for `toolrpc chat --tools tests.client.chat_tools:get_weather`."""

from __future__ import annotations


def get_weather(city: str) -> dict[str, object]:
    """Current weather for a city."""
    return {"city": city, "sky": "sunny", "temp_c": 21}
