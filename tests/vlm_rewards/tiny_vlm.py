"""A tiny, randomly initialised SmolVLM saved to a local folder: real config, weights, processor
(image processor + a BPE tokenizer trained here with ``tokenizers``) and chat template. It loads with
``AutoProcessor`` / ``AutoModelForImageTextToText`` like a hub checkpoint and generates nonsense."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from policy_steer.policies.tiny_backbones import DEFAULT_CORPUS, SMOLVLM_SPECIAL_TOKENS, train_tokenizer
from policy_steer.vlm_rewards.json_schema import program_schema
from policy_steer.vlm_rewards.synthesis.prompt import EXAMPLE, SYSTEM, describe_terms

# SmolVLM-Instruct's template, without its <|im_start|> (not a token of this tokenizer)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_tiny_vlm(folder: str | Path, *, image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMProcessor
    from transformers.models.smolvlm.image_processing_smolvlm import SmolVLMImageProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    folder = Path(folder)
    # trained on the prompt's own vocabulary, so the long prompt (terms, schema) is a few thousand tokens
    corpus = list(DEFAULT_CORPUS) + [SYSTEM, describe_terms(), json.dumps(program_schema(), separators=(",", ":")), json.dumps(EXAMPLE)]
    tok = train_tokenizer(folder, vocab_size=1024, corpus=corpus, add_bos=True, add_eos=False,
                          extra_special_tokens=SMOLVLM_SPECIAL_TOKENS, model_max_length=16384)
    side = image_size // patch_size
    config = SmolVLMConfig(
        text_config=dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tok),
                         max_position_embeddings=16384, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=patch_size),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids(SMOLVLM_SPECIAL_TOKENS["image_token"]),
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(config)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(SMOLVLM_SPECIAL_TOKENS["end_of_utterance_token"])
    model.save_pretrained(folder)
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
                                              do_image_splitting=False),
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=(side // 2) ** 2,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder
