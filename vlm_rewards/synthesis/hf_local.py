"""``transformers`` backend: a local image-text-to-text model with a chat template (Qwen2.5-VL,
SmolVLM, Idefics3, ...), loaded once from a folder (no hub access: ``local_files_only``).

The prompt goes through the processor's own chat template (``apply_chat_template`` with the images
inline), the answer comes from ``generate`` (greedy), decoded without the prompt.
"""

from __future__ import annotations

from pathlib import Path

import torch

from policy_steer.errors import ConfigError
from policy_steer.vlm_rewards.synthesis.base import SynthesisConfig
from policy_steer.vlm_rewards.synthesis.chat import ChatSynthesizer, TransportError
from policy_steer.vlm_rewards.synthesis.prompt import Message, merge_system

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersSynthesizer(ChatSynthesizer):
    name = "transformers"

    def __init__(self, cfg: SynthesisConfig) -> None:
        super().__init__(cfg)
        if not cfg.model_path or not Path(cfg.model_path).is_dir():
            raise ConfigError(f"transformers backend: model_path must be a local model folder, got {cfg.model_path!r}")
        if cfg.dtype != "auto" and cfg.dtype not in _DTYPES:
            raise ConfigError(f"transformers backend: dtype {cfg.dtype!r}; use auto or one of {list(_DTYPES)}")
        from transformers import AutoModelForImageTextToText, AutoProcessor
        dtype = "auto" if cfg.dtype == "auto" else _DTYPES[cfg.dtype]
        try:
            self.processor = AutoProcessor.from_pretrained(cfg.model_path, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(cfg.model_path, local_files_only=True, dtype=dtype)
        except (OSError, ValueError) as e:
            raise ConfigError(f"transformers backend: cannot load {cfg.model_path}: {e}") from e
        if getattr(self.processor, "chat_template", None) is None:
            raise ConfigError(f"transformers backend: {cfg.model_path} has no chat template")
        self.model.to(cfg.device).eval()

    def _complete(self, messages: list[Message]) -> str:
        hf_messages = [
            {"role": m["role"], "content": [dict(c) for c in m["content"]]}
            # several chat templates (Idefics3, SmolVLM, ...) have no system role
            for m in merge_system(messages)
        ]
        try:
            inputs = self.processor.apply_chat_template(
                hf_messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            ).to(self.model.device)
        except (ValueError, TypeError, KeyError) as e:
            raise TransportError(f"the processor could not build the prompt: {e}") from e
        pad = getattr(self.processor, "tokenizer", self.processor).pad_token_id
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.cfg.max_new_tokens, do_sample=False, pad_token_id=pad)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]
