"""OpenAI-style request bodies: which endpoint, which prompt text to route on, the rewrite.

Plain JSON and text, no gRPC and no Envoy, so the rule that picks the text a
request is routed on can be read and tested on its own. The rule:

- ``/v1/chat/completions``: the text content of the messages. ``last-user``
  (the default) takes the last user message that has any text;
  ``all-user`` every user message; ``conversation`` every message of any
  role, in order. A message's ``content`` is a string or a list of parts;
  only ``{"type": "text", "text": ...}`` parts count, images, audio and
  other parts are ignored. Texts are joined with newlines.
- ``/v1/completions``: ``prompt``, a string or a list of strings (joined with
  newlines); token-id prompts cannot be routed.

The embedder's truncation then applies to that text as to any Route prompt.
Bad input raises InvalidArgument with a message meant for the application.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._errors import InvalidArgument

CHAT = "chat"
COMPLETIONS = "completions"
PROMPT_RULES = ("last-user", "all-user", "conversation")
DEFAULT_PROMPT_RULE = "last-user"


def endpoint_kind(path: str) -> str | None:
    """CHAT or COMPLETIONS for the endpoints the processor routes, else None.

    Matched on the path's end (any prefix, query string ignored), so
    ``/openai/v1/chat/completions?x=1`` counts as chat.
    """
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return CHAT
    if path.endswith("/completions"):
        return COMPLETIONS
    return None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object; anything else is InvalidArgument saying what is wrong."""
    if not body.strip():
        raise InvalidArgument("the request body is empty; send a JSON object")
    try:
        payload = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidArgument(f"the request body is not valid JSON: {reason}") from None
    if not isinstance(payload, dict):
        raise InvalidArgument(
            f"the request body must be a JSON object, not a JSON {type(payload).__name__}"
        )
    return payload


def prompt_text(payload: Mapping[str, Any], kind: str, rule: str = DEFAULT_PROMPT_RULE) -> str:
    """The text the request is routed on, by the documented rule; InvalidArgument if none."""
    if rule not in PROMPT_RULES:
        raise InvalidArgument(f"prompt rule {rule!r} is not one of {', '.join(PROMPT_RULES)}")
    text = _chat_text(payload, rule) if kind == CHAT else _completion_text(payload)
    if not text.strip():
        raise InvalidArgument(_NO_TEXT[kind] if kind == CHAT else _NO_TEXT[COMPLETIONS])
    return _valid_unicode(text)


_NO_TEXT = {
    CHAT: "no text to route on: model 'auto' needs a user message with text content "
    "(a string, or parts of type 'text')",
    COMPLETIONS: "no text to route on: model 'auto' needs a non-empty 'prompt' string",
}


def _chat_text(payload: Mapping[str, Any], rule: str) -> str:
    messages = payload.get("messages")
    if not isinstance(messages, list):
        raise InvalidArgument("'messages' must be a list of message objects")
    texts = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        if rule != "conversation" and message.get("role") != "user":
            continue
        text = _content_text(message.get("content"))
        if text.strip():
            texts.append(text)
    if rule == "last-user":
        texts = texts[-1:]
    return "\n".join(texts)


def _content_text(content: Any) -> str:
    """A message's text: the string itself, or its text parts joined; other parts ignored."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
    return "\n".join(texts)


def _completion_text(payload: Mapping[str, Any]) -> str:
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    if isinstance(prompt, list):
        raise InvalidArgument(
            "'prompt' holds token ids; model 'auto' routes on text, so send the prompt as a string"
        )
    return ""


def _valid_unicode(text: str) -> str:
    """JSON may carry lone surrogates (\\ud800), which no embedder can take; replace them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def clip(text: str, max_bytes: int) -> str:
    """At most about ``max_bytes`` of UTF-8: the head and the tail, which truncation keeps.

    A conversation can be far longer than the Route prompt limit; the embedder
    keeps only its first and last tokens anyway, so the middle goes first.
    """
    if len(text) * 4 <= max_bytes or len(text.encode("utf-8")) <= max_bytes:
        return text
    half = max_bytes // 8  # characters: at most 4 bytes each, so head + tail fit
    return text[:half] + "\n" + text[-half:]


def with_model(payload: Mapping[str, Any], model: str) -> bytes:
    """The body with ``model`` replaced, as compact UTF-8 JSON (other fields as they came)."""
    rewritten = {**payload, "model": model}
    try:
        return json.dumps(rewritten, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in some field: keep it escaped, as it came
        return json.dumps(rewritten, separators=(",", ":")).encode("ascii")


def error_body(message: str, *, type_: str, code: str, param: str | None = None) -> bytes:
    """An error in the OpenAI API's shape, so OpenAI clients raise their usual exceptions."""
    error = {"message": message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": error}, ensure_ascii=False).encode("utf-8")
