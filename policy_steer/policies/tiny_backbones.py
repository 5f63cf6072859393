"""Small, randomly initialised but real backbones that lerobot's own classes load offline.

lerobot's flow-matching VLAs and multi_task_dit name their backbones and tokenizers by hub id and
fetch them at construction time. Nothing can be downloaded here, so this module builds tiny versions
of the same architectures with ``transformers``' own classes and saves them to local folders that
``from_pretrained`` accepts:

- :func:`train_tokenizer`: a byte-level BPE tokenizer trained locally with the ``tokenizers`` library
  (no unknown tokens: any instruction, any digit string tokenizes);
- :func:`build_tiny_clip`: a CLIP text + vision model (multi_task_dit's text and image encoders);
- :func:`build_tiny_smolvlm`: a SmolVLM config + processor (smolvla, with ``load_vlm_weights=False``);
- :class:`TinyPiBackbone` + :func:`tiny_pi_backbone`: PaliGemma + Gemma expert sizes for pi0 / pi05.
  lerobot builds their backbones in code from two fixed variants (``gemma_2b`` is ~4 B parameters;
  ``gemma_300m`` cannot be the VLM because the image projection is fixed at 2048 wide), so there is
  no config field to shrink them. :func:`tiny_pi_backbone` is the hook a user with a custom backbone
  would write: while it is active, lerobot's own ``PaliGemmaWithExpertModel.__init__`` runs
  unchanged but reads tiny Gemma widths from ``get_gemma_config`` and builds its PaliGemma / Gemma
  modules from configs whose hard-coded sizes (vocabulary 257152, SigLIP-so400m tower, 2048-wide
  projection) are replaced by the tiny ones. A checkpoint built this way carries
  ``tiny_pi_backbone.json``, which :func:`policy_steer.policies.loading.load_policy` honours.

Checkpoints must be self-contained: :func:`make_self_contained` copies every local backbone /
tokenizer folder a checkpoint names into the checkpoint folder and rewrites the names to relative
ones, which ``load_policy`` resolves against the checkpoint folder (any working directory, fresh
clone). :func:`multi_task_dit_config` is the small flow-matching config the project trains its
state-based reference policies on.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

# ---------------------------------------------------------------------------------------------------
# Tokenizer

DEFAULT_CORPUS: tuple[str, ...] = (
    "push the block to the target",
    "push the puck to the goal region",
    "pick up the cube and place it in the bin",
    "pick the red cube and place it on the green pad",
    "lift the cube",
    "open the drawer and close it again",
    "reach the target position with the gripper",
    "stack the blue block on the red block",
    "move the arm to the left, then to the right",
    "Task: push the block, State: 0 12 127 128 200 255;\nAction: ",
    "Task: pick place, State: 3 45 67 89 101 233;\nAction: ",
) + tuple(" ".join(str(i) for i in range(j, j + 16)) for j in range(0, 256, 16))

SMOLVLM_SPECIAL_TOKENS: dict[str, str] = {
    "image_token": "<image>",
    "fake_image_token": "<fake_token_around_image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}


def train_tokenizer(
    folder: str | Path,
    *,
    vocab_size: int = 512,
    corpus: Sequence[str] = DEFAULT_CORPUS,
    bos_token: str = "<bos>",
    eos_token: str = "<eos>",
    pad_token: str = "<pad>",
    add_bos: bool = True,
    add_eos: bool = True,
    extra_special_tokens: dict[str, str] | None = None,
    model_max_length: int = 512,
):
    """Train a byte-level BPE tokenizer on ``corpus`` and save it (``AutoTokenizer`` loads the folder).

    Token ids: ``pad`` 0, ``eos`` 1, ``bos`` 2 (Gemma's ids; and not CLIP's legacy ``eos_token_id == 2``
    convention, under which CLIP pools at the largest token id instead of at the eos token), then the
    extra special tokens, the byte alphabet and the merges; ``len(tokenizer) <= vocab_size``.
    Returns the loaded ``transformers`` tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    extra = dict(extra_special_tokens or {})
    specials = [pad_token, eos_token, bos_token, *extra.values()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: no unknown tokens
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer)
    template = " ".join(([bos_token] if add_bos else []) + ["$A"] + ([eos_token] if add_eos else []))
    used = [t for t in (bos_token, eos_token) if t in template.split()]
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, tok.token_to_id(t)) for t in used]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        extra_special_tokens=extra or None,
        model_max_length=model_max_length,
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------------
# CLIP (multi_task_dit)


def build_tiny_clip(
    folder: str | Path,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    vocab_size: int = 512,
    max_position_embeddings: int = 32,
    image_size: int = 32,
    patch_size: int = 8,
    projection_dim: int = 32,
    seed: int = 0,
) -> Path:
    """A CLIP model (text and vision towers) + tokenizer in ``folder``; ~70 k parameters by default.

    ``CLIPTextModel.from_pretrained(folder)`` and ``CLIPVisionModel.from_pretrained(folder)`` both load
    it, as they load ``openai/clip-vit-base-patch16``. lerobot's multi_task_dit only accepts encoder
    names that contain "clip", so the folder's name must.
    """
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    if "clip" not in folder.name.lower():
        raise ValueError(f"multi_task_dit needs a CLIP folder whose name contains 'clip', got {folder.name!r}")
    tok = train_tokenizer(folder, vocab_size=vocab_size, model_max_length=max_position_embeddings)
    text = dict(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        projection_dim=projection_dim,
        # CLIP pools the text at the first eos token (ours has id 1, not the legacy 2: see train_tokenizer)
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = dict(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=projection_dim,
    )
    with _seeded(seed):
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim))
    model.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------
# SmolVLM (smolvla)


def build_tiny_smolvlm(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 512,
    image_size: int = 32,
    patch_size: int = 8,
    vision_hidden_size: int = 32,
    vision_layers: int = 1,
    vision_heads: int = 2,
    scale_factor: int = 2,
) -> Path:
    """A SmolVLM config + processor (tokenizer, image and video processors) in ``folder``.

    smolvla with ``load_vlm_weights=False`` reads only the config and the processor and initialises
    the VLM itself (its weights end up in the smolvla checkpoint). Use it with
    ``vlm_model_name=folder``, ``num_vlm_layers=num_layers`` and
    ``resize_imgs_with_padding=(image_size, image_size)``: the vision tower's position table has
    ``(image_size / patch_size)^2`` entries, and the connector's pixel shuffle needs that grid's side
    to be divisible by ``scale_factor``.
    """
    from transformers import SmolVLMConfig, SmolVLMProcessor
    from transformers.models.smolvlm.image_processing_smolvlm import SmolVLMImageProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    side = image_size // patch_size
    if image_size % patch_size or side % scale_factor:
        raise ValueError(f"image_size/patch_size ({image_size}/{patch_size}) must be an integer divisible by {scale_factor}")
    folder = Path(folder)
    tok = train_tokenizer(
        folder, vocab_size=vocab_size, add_bos=True, add_eos=False, extra_special_tokens=SMOLVLM_SPECIAL_TOKENS
    )
    config = SmolVLMConfig(
        text_config=dict(
            model_type="llama",
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads,
            vocab_size=len(tok),
            max_position_embeddings=512,
            rms_norm_eps=1e-5,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=vision_hidden_size,
            intermediate_size=2 * vision_hidden_size,
            num_hidden_layers=vision_layers,
            num_attention_heads=vision_heads,
            image_size=image_size,
            patch_size=patch_size,
        ),
        scale_factor=scale_factor,
        image_token_id=tok.convert_tokens_to_ids(SMOLVLM_SPECIAL_TOKENS["image_token"]),
        pad_token_id=tok.pad_token_id,
    )
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}, do_image_splitting=False
        ),
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(),
        image_seq_len=(side // scale_factor) ** 2,
    )
    config.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------
# PaliGemma + Gemma expert (pi0, pi05)

TINY_PI_FILE = "tiny_pi_backbone.json"
PALIGEMMA_TOKENIZER = "google/paligemma-3b-pt-224"  # the hub id pi0 / pi05 processors hard-code


@dataclass(frozen=True)
class GemmaSize:
    """One Gemma stack, in the fields of lerobot's ``GemmaConfig`` (openpi's variant table)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int = 8  # lerobot's joint attention reshapes to 8 heads: keep 8
    num_kv_heads: int = 1
    head_dim: int = 8


@dataclass(frozen=True)
class TinyPiBackbone:
    """Sizes of a tiny pi0 / pi05 backbone; the ``*_variant`` names of the config are only labels.

    The VLM and the expert share attention layer by layer, so they need the same depth, heads,
    kv heads and head_dim; their widths may differ (as gemma_2b and gemma_300m do).
    """

    vlm: GemmaSize = field(default_factory=lambda: GemmaSize(width=64, depth=2, mlp_dim=128))
    expert: GemmaSize = field(default_factory=lambda: GemmaSize(width=32, depth=2, mlp_dim=64))
    vocab_size: int = 512
    vision_width: int = 32
    vision_depth: int = 1
    vision_heads: int = 2
    vision_mlp: int = 64
    patch_size: int = 8
    vlm_variant: str = "gemma_2b"  # the config names this stands for
    expert_variant: str = "gemma_300m"

    def __post_init__(self) -> None:
        a, b = self.vlm, self.expert
        if (a.depth, a.num_heads, a.num_kv_heads, a.head_dim) != (b.depth, b.num_heads, b.num_kv_heads, b.head_dim):
            raise ValueError("VLM and expert must share depth, num_heads, num_kv_heads and head_dim")
        if self.vlm_variant == self.expert_variant:
            raise ValueError("vlm_variant and expert_variant must differ (they select the two sizes)")

    def write(self, folder: str | Path) -> None:
        (Path(folder) / TINY_PI_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, folder: str | Path) -> "TinyPiBackbone | None":
        path = Path(folder) / TINY_PI_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(**{**data, "vlm": GemmaSize(**data["vlm"]), "expert": GemmaSize(**data["expert"])})

    def configure(self, config) -> None:
        """Point a PI0Config / PI05Config at this backbone's variant labels."""
        config.paligemma_variant = self.vlm_variant
        config.action_expert_variant = self.expert_variant


_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def tiny_pi_backbone(spec: TinyPiBackbone, tokenizer_dir: str | Path | None = None) -> Iterator[None]:
    """While active, pi0 / pi05 policies (and their processors) are built with ``spec``'s sizes.

    Patches three names in lerobot's ``modeling_pi0`` / ``modeling_pi05`` modules for the duration:
    ``get_gemma_config`` (variant -> tiny widths), and the two model classes
    ``PaliGemmaForConditionalGenerationWithPiGemma`` / ``PiGemmaForCausalLM``, wrapped so that the
    config lerobot prepared is shrunk where lerobot hard-codes full sizes before the real class is
    built. With ``tokenizer_dir``, the processors' hard-coded PaliGemma tokenizer id is also
    redirected to that local folder. Construction only: the built modules are ordinary lerobot ones.
    """
    from lerobot.policies.pi0 import modeling_pi0, processor_pi0
    from lerobot.policies.pi05 import modeling_pi05, processor_pi05
    from lerobot.policies.pi_gemma import PaliGemmaForConditionalGenerationWithPiGemma, PiGemmaForCausalLM

    sizes = {spec.vlm_variant: spec.vlm, spec.expert_variant: spec.expert}

    def get_gemma_config(variant: str):
        if variant not in sizes:
            raise ValueError(f"tiny pi backbone defines {sorted(sizes)}, not {variant!r}")
        return modeling_pi0.GemmaConfig(**asdict(sizes[variant]))

    def make_vlm(config):
        config = copy.deepcopy(config)
        config._vocab_size = spec.vocab_size  # noqa: SLF001 (lerobot sets the same private field)
        config.text_config.vocab_size = spec.vocab_size
        vc = config.vision_config
        vc.hidden_size = spec.vision_width
        vc.num_hidden_layers = spec.vision_depth
        vc.num_attention_heads = spec.vision_heads
        vc.intermediate_size = spec.vision_mlp
        vc.patch_size = spec.patch_size
        vc.projection_dim = config.text_config.hidden_size  # image tokens join the text stream
        config.projection_dim = vc.projection_dim
        config.text_config.num_image_tokens = (vc.image_size // vc.patch_size) ** 2
        return PaliGemmaForConditionalGenerationWithPiGemma(config=config)

    def make_expert(config):
        config = copy.deepcopy(config)
        config.vocab_size = spec.vocab_size  # its embedding is dropped; the lm_head stays
        return PiGemmaForCausalLM(config=config)

    def tokenizer_step(cls):
        def make(**kwargs):
            if tokenizer_dir is not None and kwargs.get("tokenizer_name") == PALIGEMMA_TOKENIZER:
                kwargs["tokenizer_name"] = str(tokenizer_dir)
            return cls(**kwargs)

        return make

    patches: list[tuple[Any, str, Any]] = []
    for mod in (modeling_pi0, modeling_pi05):
        patches += [
            (mod, "get_gemma_config", get_gemma_config),
            (mod, "PaliGemmaForConditionalGenerationWithPiGemma", make_vlm),
            (mod, "PiGemmaForCausalLM", make_expert),
        ]
    for mod in (processor_pi0, processor_pi05):
        patches.append((mod, "TokenizerProcessorStep", tokenizer_step(mod.TokenizerProcessorStep)))
    with _PATCH_LOCK:
        saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
        try:
            for mod, name, value in patches:
                setattr(mod, name, value)
            yield
        finally:
            for mod, name, value in saved:
                setattr(mod, name, value)


def build_paligemma_tokenizer(folder: str | Path, vocab_size: int = 512):
    """A local stand-in for the PaliGemma tokenizer: bos prepended, no eos; pad, eos, bos ids 0, 1, 2 (as Gemma)."""
    return train_tokenizer(folder, vocab_size=vocab_size, add_bos=True, add_eos=False)


# ---------------------------------------------------------------------------------------------------
# Self-contained checkpoints

BACKBONE_NAME_FIELDS = ("vlm_model_name", "text_encoder_name", "vision_encoder_name")
"""Config fields through which lerobot policies name a backbone / tokenizer folder."""


def make_self_contained(checkpoint: str | Path) -> list[str]:
    """Copy every local backbone folder a saved checkpoint names into it and name it relatively.

    Looks at ``config.json`` (:data:`BACKBONE_NAME_FIELDS`) and at the ``tokenizer_name`` of the
    pre-processor's steps. A name that is an existing folder outside the checkpoint is copied to
    ``checkpoint/<folder name>`` and replaced by that relative name; an absolute name whose folder
    is gone but which the checkpoint already carries (copied by name) is renamed too; hub ids and
    names already relative are left alone. Returns the names this call rewrote, relative. Run it on
    what lerobot's ``save_pretrained`` (or its training script) wrote.
    """
    checkpoint = Path(checkpoint).resolve()
    renamed: dict[str, str] = {}

    def localise(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        if value in renamed:
            return renamed[value]
        p = Path(value)
        inside = checkpoint / (p.name if p.is_absolute() else p)
        if not p.is_absolute() and inside.is_dir():
            return value  # already relative and inside
        if p.is_dir():
            p = p.resolve()
            if checkpoint in p.parents:
                rel = str(p.relative_to(checkpoint))
            else:
                rel = p.name
                target = checkpoint / rel
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(p, target)
        elif p.is_absolute() and inside.is_dir():
            rel = p.name  # the original is gone, but the checkpoint already carries the folder
        else:
            return value  # a hub id
        renamed[value] = rel
        return rel

    cfg_path = checkpoint / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in BACKBONE_NAME_FIELDS:
        if key in cfg:
            cfg[key] = localise(cfg[key])
    cfg_path.write_text(json.dumps(cfg, indent=4) + "\n")
    pre_path = checkpoint / "policy_preprocessor.json"
    if pre_path.is_file():
        pre = json.loads(pre_path.read_text())
        for step in pre.get("steps", []):
            conf = step.get("config", {})
            if "tokenizer_name" in conf:
                conf["tokenizer_name"] = localise(conf["tokenizer_name"])
        pre_path.write_text(json.dumps(pre, indent=2) + "\n")
    return sorted(set(renamed.values()))


def save_self_contained(
    folder: str | Path, policy, preprocessor, postprocessor, tiny_pi: TinyPiBackbone | None = None
) -> Path:
    """``save_pretrained`` the policy and both processors into ``folder``, then :func:`make_self_contained`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(folder)
    preprocessor.save_pretrained(folder)
    postprocessor.save_pretrained(folder)
    if tiny_pi is not None:
        tiny_pi.write(folder)
    make_self_contained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------
# multi_task_dit for state-based tasks


def multi_task_dit_config(
    state_dim: int,
    action_dim: int,
    clip_dir: str | Path | None = None,
    *,
    lr: float | None = None,
    objective: str = "flow_matching",
    horizon: int = 16,
    n_obs_steps: int = 2,
    n_action_steps: int = 8,
    hidden_dim: int = 128,
    num_layers: int = 3,
    num_heads: int = 4,
    timestep_embed_dim: int = 32,
    num_integration_steps: int = 10,
    num_inference_steps: int = 10,
    tokenizer_max_length: int = 16,
    device: str = "cpu",
    **overrides: Any,
):
    """A small state-only ``MultiTaskDiTConfig`` for lerobot's training code.

    About 1.36 M trainable parameters with the defaults and a 20-D state, 3-D action (5.5 MB in
    float32; most of it is the AdaLN conditioning of the 3 blocks), plus the frozen tiny CLIP text
    encoder (35 k). Inputs: ``observation.state`` [state_dim] (put object
    poses in the state: multi_task_dit ignores ``observation.environment_state``); output ``action``
    [action_dim]. lerobot's ``make_policy`` may overwrite the features from the dataset.

    The CLIP text encoder and tokenizer are the tiny ones in ``clip_dir`` (built with
    :func:`build_tiny_clip` into a fresh temporary ``.../tiny_clip`` folder when None). lerobot opens
    that folder by name while training, so the config names it by absolute path;
    ``config.extra_folders()`` lists it. After saving, copy it into the checkpoint folder and run
    :func:`make_self_contained` on the checkpoint (which does both), so the checkpoint names it
    relatively and loads from any working directory.
    """
    import tempfile

    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.multi_task_dit.configuration_multi_task_dit import MultiTaskDiTConfig

    if clip_dir is None:
        clip_dir = build_tiny_clip(Path(tempfile.mkdtemp(prefix="policy-steer-")) / "tiny_clip")
    clip = str(Path(clip_dir).resolve()) if Path(clip_dir).is_dir() else str(clip_dir)
    kwargs: dict[str, Any] = dict(
        objective=objective,
        horizon=horizon,
        n_obs_steps=n_obs_steps,
        n_action_steps=n_action_steps,
        hidden_dim=hidden_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        timestep_embed_dim=timestep_embed_dim,
        num_integration_steps=num_integration_steps,
        num_inference_steps=num_inference_steps,
        noise_scheduler_type="DDIM",
        text_encoder_name=clip,
        vision_encoder_name=clip,
        tokenizer_max_length=tokenizer_max_length,
        image_crop_shape=None,
        device=device,
        push_to_hub=False,
        input_features={"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(int(state_dim),))},
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(int(action_dim),))},
    )
    if lr is not None:
        kwargs["optimizer_lr"] = float(lr)
    kwargs.update(overrides)
    cfg = MultiTaskDiTConfig(**kwargs)
    folders = [clip] if Path(clip).is_dir() else []
    cfg.extra_folders = lambda: list(folders)  # not a config field: never serialised
    return cfg


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic initialisation without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
