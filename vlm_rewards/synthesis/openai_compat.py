"""``openai`` backend: any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, a hosted API).

``url`` (the API base, e.g. ``http://localhost:8000/v1``, or the full ``.../chat/completions``),
``model`` and ``api_key`` come from the config or from ``POLICY_STEER_VLM_URL`` /
``POLICY_STEER_VLM_MODEL`` / ``POLICY_STEER_VLM_API_KEY``. Images go as PNG data URLs
(``image_url`` content parts). Timeouts and HTTP errors count as failed attempts.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx

from policy_steer.errors import ConfigError
from policy_steer.vlm_rewards.synthesis.base import ENV_MODEL, ENV_URL, SynthesisConfig
from policy_steer.vlm_rewards.synthesis.chat import ChatSynthesizer, TransportError
from policy_steer.vlm_rewards.synthesis.prompt import Message


class OpenAISynthesizer(ChatSynthesizer):
    name = "openai"

    def __init__(self, cfg: SynthesisConfig) -> None:
        cfg = cfg.resolved()
        super().__init__(cfg)
        if not cfg.url:
            raise ConfigError(f"openai backend needs an endpoint: --url or {ENV_URL}")
        if not cfg.model:
            raise ConfigError(f"openai backend needs a model name: --model or {ENV_MODEL}")
        if cfg.timeout_s <= 0:
            raise ConfigError(f"openai backend: timeout_s must be > 0, got {cfg.timeout_s}")
        url = cfg.url.rstrip("/")
        self.endpoint = url if url.endswith("/chat/completions") else url + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(cfg.timeout_s))

    def close(self) -> None:
        self._client.close()

    def _complete(self, messages: list[Message]) -> str:
        body = {
            "model": self.cfg.model,
            "messages": [{"role": m["role"], "content": [_part(c) for c in m["content"]]} for m in messages],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_new_tokens,
        }
        try:
            r = self._client.post(self.endpoint, json=body)
        except httpx.TimeoutException:
            raise TransportError(f"no answer from {self.endpoint} within {self.cfg.timeout_s} s") from None
        except httpx.HTTPError as e:
            raise TransportError(f"cannot reach {self.endpoint}: {e}") from None
        if r.status_code >= 400:
            raise TransportError(f"HTTP {r.status_code} from {self.endpoint}: {r.text[:300]}")
        try:
            content = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):  # RecursionError: a body nested absurdly deep
            raise TransportError(f"not a chat-completions response: {r.text[:300]}") from None
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise TransportError(f"answer content is {type(content).__name__}, not text")
        return content


def _part(c: dict[str, Any]) -> dict[str, Any]:
    if c["type"] == "text":
        return {"type": "text", "text": c["text"]}
    buf = io.BytesIO()
    c["image"].save(buf, format="PNG")
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}}
