"""OpenAI-style bodies: the endpoint, the text a request is routed on, and the rewrite."""

from __future__ import annotations

import json

import pytest

from sidecar import InvalidArgument
from sidecar._openai_body import (
    CHAT,
    COMPLETIONS,
    clip,
    endpoint_kind,
    error_body,
    parse_body,
    prompt_text,
    with_model,
)

CONVERSATION = {
    "model": "auto",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "second question"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "with two parts"},
            ],
        },
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
    ],
}


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/v1/chat/completions", CHAT),
        ("/openai/v1/chat/completions?api-version=1", CHAT),
        ("/v1/chat/completions/", CHAT),
        ("/v1/completions", COMPLETIONS),
        ("/v1/models", None),
        ("/v1/embeddings", None),
        ("", None),
    ],
)
def test_endpoint_kind(path: str, kind: str | None) -> None:
    assert endpoint_kind(path) == kind


def test_last_user_message_with_text_is_the_default() -> None:
    # The last user message holds only an image: the one before it is used.
    assert prompt_text(CONVERSATION, CHAT) == "second question\nwith two parts"


def test_all_user_messages_and_the_whole_conversation() -> None:
    assert prompt_text(CONVERSATION, CHAT, "all-user") == (
        "first question\nsecond question\nwith two parts"
    )
    assert prompt_text(CONVERSATION, CHAT, "conversation") == (
        "You are terse.\nfirst question\nfirst answer\nsecond question\nwith two parts"
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "auto"},
        {"model": "auto", "messages": "hello"},
        {"model": "auto", "messages": []},
        {"model": "auto", "messages": [{"role": "system", "content": "only a system prompt"}]},
        {"model": "auto", "messages": [{"role": "user", "content": "   "}]},
        {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        {"model": "auto", "messages": [None, 3, {"role": "user"}]},
    ],
)
def test_no_usable_chat_text_is_invalid_argument(payload: dict) -> None:
    with pytest.raises(InvalidArgument, match=r"messages|no text"):
        prompt_text(payload, CHAT)


def test_completions_prompt() -> None:
    assert prompt_text({"prompt": "Say hi"}, COMPLETIONS) == "Say hi"
    assert prompt_text({"prompt": ["a", "b"]}, COMPLETIONS) == "a\nb"
    with pytest.raises(InvalidArgument, match="token ids"):
        prompt_text({"prompt": [1, 2, 3]}, COMPLETIONS)
    with pytest.raises(InvalidArgument, match="no text"):
        prompt_text({"prompt": ""}, COMPLETIONS)
    with pytest.raises(InvalidArgument, match="no text"):
        prompt_text({}, COMPLETIONS)


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="last-user"):
        prompt_text(CONVERSATION, CHAT, "first-user")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object, not a JSON list"),
        (b'"text"', "not a JSON str"),
        (b'{"model": NaN}', "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),  # deep nesting: no RecursionError escapes
    ],
)
def test_bad_bodies_say_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        parse_body(body)


def test_rewrite_replaces_only_the_model() -> None:
    payload = parse_body(json.dumps({**CONVERSATION, "temperature": 0.2, "stream": True}).encode())
    rewritten = json.loads(with_model(payload, "gpt-4o-mini-2024-07-18"))
    assert rewritten == {
        **CONVERSATION,
        "temperature": 0.2,
        "stream": True,
        "model": "gpt-4o-mini-2024-07-18",
    }
    assert payload["model"] == "auto"  # the parsed payload is left as it was


def test_rewrite_keeps_text_and_survives_lone_surrogates() -> None:
    body = with_model({"model": "auto", "note": "naïve 日本"}, "m")
    assert "naïve 日本".encode() in body
    odd = parse_body(b'{"model": "auto", "messages": [{"role": "user", "content": "a\\ud800b"}]}')
    assert json.loads(with_model(odd, "m"))["messages"][0]["content"] == "a\ud800b"
    assert prompt_text(odd, CHAT).encode("utf-8")  # the routed text is valid Unicode


def test_clip_keeps_head_and_tail_within_the_limit() -> None:
    text = "head " + "middle " * 100_000 + " tail"
    clipped = clip(text, 4096)
    assert len(clipped.encode()) <= 4096 + 1
    assert clipped.startswith("head ") and clipped.endswith(" tail")
    assert clip("short", 4096) == "short"


def test_error_body_has_the_openai_shape() -> None:
    error = json.loads(error_body("bad", type_="invalid_request_error", code="x"))["error"]
    assert error == {"message": "bad", "type": "invalid_request_error", "param": None, "code": "x"}
