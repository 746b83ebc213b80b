"""ChatOpenAI for any OpenAI-compatible server, speaking each server's dialect.

Servers agree on the chat API but not on two details the arena depends on:
- **The token budget.** OpenAI deprecated ``max_tokens`` for ``max_completion_tokens``, which
  ChatOpenAI sends. vLLM and llama.cpp's ``llama-server`` honour both; llama-cpp-python's server
  (0.3.x) ignores ``max_completion_tokens`` and generated until its context was full. So an
  endpoint other than OpenAI's own gets both.
- **Structured output.** OpenAI, vLLM and ``llama-server`` take ``response_format``
  ``{"type": "json_schema", ...}``. llama-cpp-python's server rejects it (HTTP 500, "Input should
  be 'text' or 'json_object'") but enforces ``{"type": "json_object", "schema": ...}``.

The dialect is configured (Context.structured_output) or, with 'auto', detected once per endpoint
and model with a one-token request, and remembered for the process.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from langchain_openai import ChatOpenAI

_dialects: dict[tuple[str, str], str] = {}
_dialects_lock = threading.Lock()
PROBE_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


class OpenAICompatibleChat(ChatOpenAI):
    """ChatOpenAI that sends each endpoint the budget and structured-output dialect it honours."""

    accepts_response_format: ClassVar[bool] = True
    json_dialect: str = "auto"  # auto, json_schema, json_object (see the module docstring)

    @property
    def _third_party(self) -> bool:
        return bool(self.openai_api_base) and "api.openai.com" not in str(self.openai_api_base)

    def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict:
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        if self._third_party and "max_completion_tokens" in payload:
            payload["max_tokens"] = payload["max_completion_tokens"]
        requested = payload.get("response_format")
        if isinstance(requested, dict) and requested.get("type") == "json_schema" and self.dialect() == "json_object":
            payload["response_format"] = {"type": "json_object", "schema": requested["json_schema"]["schema"]}
        return payload

    def dialect(self) -> str:
        """'json_schema' or 'json_object': configured, or detected once for this endpoint and model."""
        if self.json_dialect in ("json_schema", "json_object"):
            return self.json_dialect
        if not self._third_party:
            return "json_schema"
        key = (str(self.openai_api_base), self.model_name)
        with _dialects_lock:
            if key not in _dialects:
                _dialects[key] = self._probe()
            return _dialects[key]

    def _probe(self) -> str:
        """Ask for one token in the json_schema dialect: a server that refuses the dialect itself
        (not the request) speaks json_object. Connection errors propagate (nothing is remembered)."""
        import openai

        try:
            self.root_client.chat.completions.create(
                model=self.model_name,
                messages=[{"role": "user", "content": "ok?"}],
                max_tokens=1,
                max_completion_tokens=1,
                response_format={"type": "json_schema", "json_schema": {"name": "probe", "schema": PROBE_SCHEMA}},
            )
        except (openai.BadRequestError, openai.UnprocessableEntityError, openai.InternalServerError) as exc:
            if "json_schema" in str(exc) or "response_format" in str(exc) or "json_object" in str(exc):
                return "json_object"
            raise
        return "json_schema"
