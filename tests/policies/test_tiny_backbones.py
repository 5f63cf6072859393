"""Tiny local backbones: loadable offline by transformers' / lerobot's own classes, and really tiny."""

from __future__ import annotations

import re

import pytest
import torch

from policy_steer.policies import load_policy
from policy_steer.policies.tiny_backbones import (
    GemmaSize,
    TinyPiBackbone,
    build_tiny_clip,
    build_tiny_smolvlm,
    tiny_pi_backbone,
    train_tokenizer,
)


def test_tokenizer_has_no_unknown_tokens(tmp_path):
    tok = train_tokenizer(tmp_path / "tok", vocab_size=300)
    assert len(tok) <= 300 and (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    text = "Stack the Würfel: 12 255 -0.5 ;\nAction: ✓"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    batch = tok(["a", "push the block"], max_length=10, padding="max_length", truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 10) and batch["input_ids"][0, -1] == tok.pad_token_id


def test_tiny_clip_loads_with_the_classes_multi_task_dit_uses(tmp_path):
    from transformers import AutoTokenizer, CLIPTextModel, CLIPVisionModel

    folder = build_tiny_clip(tmp_path / "tiny_clip", image_size=32)
    tok = AutoTokenizer.from_pretrained(folder)
    text = CLIPTextModel.from_pretrained(folder)
    vision = CLIPVisionModel.from_pretrained(folder)
    enc = tok(["push the block"], max_length=16, padding="max_length", return_tensors="pt")
    pooled = text(**enc).pooler_output
    assert pooled.shape == (1, 32)
    # CLIP pools at the eos token: the pooled vector is the hidden state there
    eos = int((enc["input_ids"][0] == tok.eos_token_id).nonzero()[0])
    torch.testing.assert_close(pooled[0], text(**enc).last_hidden_state[0, eos])
    assert vision(pixel_values=torch.rand(2, 3, 32, 32)).last_hidden_state.shape == (2, 17, 32)
    assert sum(p.numel() for p in text.parameters()) < 60_000
    with pytest.raises(ValueError, match="clip"):
        build_tiny_clip(tmp_path / "tiny_text_encoder")


def test_tiny_smolvlm_folder_serves_config_processor_and_tokenizer(tmp_path):
    from transformers import AutoConfig, AutoProcessor, AutoTokenizer

    folder = build_tiny_smolvlm(tmp_path / "tiny_smolvlm", image_size=32)
    cfg = AutoConfig.from_pretrained(folder)
    proc = AutoProcessor.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert cfg.model_type == "smolvlm" and cfg.text_config.num_hidden_layers == 4
    assert proc.tokenizer.fake_image_token_id is not None and proc.tokenizer.global_image_token_id is not None
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<image>")
    with pytest.raises(ValueError, match="divisible"):
        build_tiny_smolvlm(tmp_path / "bad", image_size=24, patch_size=8)


def test_tiny_pi_backbone_patches_only_while_active():
    from lerobot.policies.pi0 import modeling_pi0, processor_pi0
    from lerobot.policies.pi05 import modeling_pi05

    names = ("get_gemma_config", "PaliGemmaForConditionalGenerationWithPiGemma", "PiGemmaForCausalLM")
    before = {(m.__name__, n): getattr(m, n) for m in (modeling_pi0, modeling_pi05) for n in names}
    tok_step = processor_pi0.TokenizerProcessorStep
    spec = TinyPiBackbone()
    with pytest.raises(RuntimeError, match="inside"):
        with tiny_pi_backbone(spec):
            assert modeling_pi0.get_gemma_config("gemma_2b").width == spec.vlm.width
            assert modeling_pi05.get_gemma_config("gemma_300m").width == spec.expert.width
            raise RuntimeError("inside")
    assert {(m.__name__, n): getattr(m, n) for m in (modeling_pi0, modeling_pi05) for n in names} == before
    assert processor_pi0.TokenizerProcessorStep is tok_step
    assert modeling_pi0.get_gemma_config("gemma_2b").width == 2048


def test_tiny_pi_backbone_spec_round_trip_and_checks(tmp_path):
    spec = TinyPiBackbone(vlm=GemmaSize(width=48, depth=3, mlp_dim=96), expert=GemmaSize(width=16, depth=3, mlp_dim=32))
    spec.write(tmp_path)
    assert TinyPiBackbone.read(tmp_path) == spec
    assert TinyPiBackbone.read(tmp_path / "nothing-here") is None
    with pytest.raises(ValueError, match="share depth"):
        TinyPiBackbone(expert=GemmaSize(width=32, depth=3, mlp_dim=64))


@pytest.mark.parametrize("kind,limit", [("pi0", 250_000), ("pi05", 250_000), ("smolvla", 500_000)])
def test_tiny_vla_checkpoints_are_tiny(flow_checkpoint, kind, limit):
    folder = flow_checkpoint(kind)
    n = sum(p.numel() for p in load_policy(folder).policy.parameters())
    assert n < limit
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 4 * n + 400_000


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_tiny_pi_is_lerobots_architecture_at_small_sizes(kind):
    """The full-size model built on the meta device (no memory) and the tiny one: same modules and
    parameter names, and configs that differ only in sizes."""
    from lerobot.policies.factory import make_policy_config
    from lerobot.policies.pi0.modeling_pi0 import PI0Pytorch
    from lerobot.policies.pi05.modeling_pi05 import PI05Pytorch

    from tests.policies.flow_checkpoints import vla_features

    inputs, outputs = vla_features()
    cfg = make_policy_config(kind, input_features=inputs, output_features=outputs, device="cpu")
    model_cls = PI0Pytorch if kind == "pi0" else PI05Pytorch
    with torch.device("meta"):
        full = model_cls(cfg)
    spec = TinyPiBackbone()
    spec.configure(cfg)
    with tiny_pi_backbone(spec):
        tiny = model_cls(cfg)
    assert sum(p.numel() for p in full.parameters()) > 3e9 > 3e5 > sum(p.numel() for p in tiny.parameters())

    def names(model):
        return {re.sub(r"\.\d+\.", ".N.", k) for k in model.state_dict()}

    assert names(full) == names(tiny)
    assert {type(m).__qualname__ for m in full.modules()} == {type(m).__qualname__ for m in tiny.modules()}
    sizes = {"vocab_size", "_vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads", "head_dim", "patch_size", "projection_dim", "num_image_tokens", "adarms_cond_dim"}

    def non_sizes(config, prefix=""):
        out = {}
        for k, v in config.items():
            if isinstance(v, dict):
                out.update(non_sizes(v, f"{prefix}{k}."))
            elif k not in sizes:
                out[f"{prefix}{k}"] = v
        return out

    pwe_full, pwe_tiny = full.paligemma_with_expert, tiny.paligemma_with_expert
    assert non_sizes(pwe_full.paligemma.config.to_dict()) == non_sizes(pwe_tiny.paligemma.config.to_dict())
    assert non_sizes(pwe_full.gemma_expert.config.to_dict()) == non_sizes(pwe_tiny.gemma_expert.config.to_dict())
