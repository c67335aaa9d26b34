"""The chat layer: one step of a conversation with tools, knowing nothing of HTTP or JSON-RPC.

`conversation.Chat.step` takes a conversation (`StepRequest`) and yields text deltas, tool calls
and the step's result. It reads the turn once (`turn`), builds the tool offer (`offer`: what the
prompt shows, the schema a call must satisfy, whether a call is valid) from `tool_choice`, the
loop guard's round limit (`loopguard`), the tool router's decision (`router`, for models whose
template has no tool format) and grounding's bounds (`grounding`), renders the prompt with the
model's own chat template (`prompt`, `template`) and parses what the model writes with its
tool-call format (`toolcalls`). Below it is only the `Engine` seam (engines/base.py).
"""
