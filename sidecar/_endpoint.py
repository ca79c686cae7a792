"""Calling an OpenAI-compatible chat endpoint: one answer per call, retried when that can help.

The official `openai` client does the HTTP (imported here, and only `evaluate`
imports this module, so other commands never load it). Its own retries are
off: this module retries 429, 5xx, 408/409, timeouts, dropped connections and
unreadable responses with exponential backoff and full jitter, and honours
`Retry-After` (capped). Other 4xx are final at once, and 401/403/404 stop the
whole run, since every item would fail the same way. A final failure is
raised as `CallFailed`, for the caller to record as a failure, never as a
wrong answer.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import SidecarError

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403, 404})


@dataclass(frozen=True)
class EndpointConfig:
    base_url: str
    model: str
    api_key: str
    temperature: float = 0.0
    max_tokens: int | None = None
    timeout_s: float = 60.0
    max_attempts: int = 6
    backoff_s: float = 1.0  # the first retry waits up to this; each later one up to twice as long
    max_backoff_s: float = 60.0  # also the cap on a Retry-After


@dataclass(frozen=True)
class Completion:
    """One successful call: the answer text and what it cost."""

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float  # of the attempt that succeeded
    attempts: int
    finish_reason: str


class CallFailed(Exception):
    """The call failed for good (retries spent, or an error that retrying cannot fix)."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class EndpointRefused(SidecarError):
    """401/403/404: the key, the permission or the model is wrong; stop instead of failing all."""


class Stopped(Exception):
    """The run is stopping (Ctrl-C); the call was abandoned, not failed."""


class Endpoint:
    """A thread-safe caller; one client (connection pool) shared by every worker thread."""

    def __init__(
        self,
        config: EndpointConfig,
        stop: threading.Event | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        import openai  # the optional `evaluate` dependency, loaded only when a run starts

        self.config = config
        self.stop = stop or threading.Event()
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            max_retries=0,
            timeout=config.timeout_s,
        )
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def complete(self, messages: Sequence[Mapping[str, str]]) -> Completion:
        """The answer to one chat; raises CallFailed, EndpointRefused or Stopped."""
        last_error = "not called"
        for attempt in range(1, self.config.max_attempts + 1):
            if self.stop.is_set():
                raise Stopped()
            started = time.monotonic()
            try:
                response = self._create(messages)
                completion = _completion(response, time.monotonic() - started, attempt)
                return completion
            except self._openai.APIStatusError as exc:
                status = exc.status_code
                last_error = f"HTTP {status}: {_message(exc)}"
                if status in FATAL_STATUSES:
                    raise EndpointRefused(
                        f"{self.config.base_url} refused the call ({last_error}); check the "
                        "API key, the model name and the base URL"
                    ) from exc
                if status not in RETRY_STATUSES:
                    raise CallFailed(last_error, attempt) from exc
                wait = _retry_after(exc.response.headers)
            except self._openai.APITimeoutError:
                last_error, wait = f"timed out after {self.config.timeout_s:g} s", None
            except self._openai.APIConnectionError as exc:
                last_error, wait = f"connection failed ({_message(exc)})", None
            except (ValueError, _Malformed) as exc:
                last_error, wait = f"unreadable response ({str(exc)[:120]})", None
            if attempt < self.config.max_attempts:
                self._sleep(attempt, wait)
        raise CallFailed(
            f"{last_error} (gave up after {self.config.max_attempts} attempts)",
            self.config.max_attempts,
        )

    def _create(self, messages: Sequence[Mapping[str, str]]) -> Any:
        options: dict[str, Any] = {"temperature": self.config.temperature}
        if self.config.max_tokens is not None:
            options["max_tokens"] = self.config.max_tokens
        return self._client.chat.completions.create(
            model=self.config.model,
            messages=list(messages),  # type: ignore[arg-type]  # plain role/content dicts
            **options,
        )

    def _sleep(self, attempt: int, retry_after: float | None) -> None:
        """Full jitter on an exponential cap; a Retry-After is a floor, both capped."""
        cap = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** (attempt - 1))
        with self._random_lock:
            wait = self._random.uniform(0, cap)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.config.max_backoff_s))
        if self.stop.wait(wait):
            raise Stopped()


class _Malformed(Exception):
    pass


def _completion(response: Any, latency_s: float, attempt: int) -> Completion:
    choices = getattr(response, "choices", None)
    if not choices or getattr(choices[0], "message", None) is None:
        raise _Malformed("no choices in the response")
    usage = getattr(response, "usage", None)
    return Completion(
        text=choices[0].message.content or "",
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        latency_s=latency_s,
        attempts=attempt,
        finish_reason=str(choices[0].finish_reason or ""),
    )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:200]
    return str(exc)[:200]
