"""The chat template: how /v1/chat/completions turns messages into one prompt for a byte-level model.

The engine's tokenizer is one token per UTF-8 byte, so the template is plain text. Each message is

    <|ROLE|>\\nCONTENT\\n

with ROLE one of system, user, assistant (tool and developer messages are rendered as such too),
and the prompt ends with the generation prompt `<|assistant|>\\n`. Generation stops, besides the
request's own `stop` strings, at `<|` (the start of the next turn's marker), which is not part of
the answer. Identical leading messages render to identical leading bytes, so a conversation's
earlier turns are a prefix of its later prompts and hit the KV cache.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool")
GENERATION_PROMPT = "<|assistant|>\n"
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
        parts.append(f"<|{role}|>\n{_content(msg.get('content'), i)}\n")
    parts.append(GENERATION_PROMPT)
    return "".join(parts)


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
