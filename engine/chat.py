"""The chat template: how /v1/chat/completions turns messages into one prompt for a byte-level model.

The engine's tokenizer is one token per UTF-8 byte, so the template is plain text. Each message is
its content followed by a marker naming who said it:

    CONTENT<|ROLE|>

with ROLE one of system, developer, user, assistant, tool; the answer is generated right after
the last marker. Generation stops, besides the request's own `stop` strings, at `<|` (where the
answer's own marker would begin), which is not part of the answer.

Why the marker follows the content: the first message starts at byte 0, so a prompt's tokens sit
at the same positions as in the plain completion API, block boundaries of the KV cache fall where
a workload put them, and identical leading messages render to identical leading bytes (a
conversation's earlier turns are a prefix of its later prompts and hit the cache).
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool")
TURN_STOP = "<|"


class TemplateError(ValueError):
    """A message list the template cannot render (answered as HTTP 400)."""


def render(messages: Any) -> str:
    """The prompt text of a chat request's `messages`."""
    if not isinstance(messages, list) or not messages:
        raise TemplateError("messages must be a non-empty list of {role, content} objects")
    parts = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise TemplateError(f"messages[{i}] must be an object with role and content")
        role = msg.get("role")
        if role not in ROLES:
            raise TemplateError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        parts.append(f"{_content(msg.get('content'), i)}{marker(role)}")
    return "".join(parts)


def marker(role: str) -> str:
    """What closes a message of `role`."""
    return f"<|{role}|>"


def _content(content: Any, i: int) -> str:
    """A string, or OpenAI's list of content parts of which only text parts are accepted."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise TemplateError(f"messages[{i}].content: only text parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise TemplateError(f"messages[{i}].content must be a string or a list of text parts")
