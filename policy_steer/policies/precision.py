"""How a loaded policy's network computes: its dtype, whether its denoiser is compiled, and the
algebraic form of its tanh-based activations. The sampler's tensors stay float32 in every case.

- ``dtype="bfloat16"``: the model's weights are converted to bfloat16 and its forward passes run
  under ``torch.autocast(bfloat16)`` (matmuls and convolutions in bfloat16; what autocast keeps in
  float32 stays there); the denoiser's output is cast back to float32, so the sampler's ``x``, its
  update rule, guidance gradients and the verifier's features are float32. pi0 / pi05 / SmolVLA
  use lerobot's own ``dtype`` (bfloat16 weights except the parameters lerobot keeps in float32).
  Fidelity against float32 is a stated bound measured on the shipped policies
  (``benchmarks/taco_cost.py --fidelity``; README), not bit equality.
- ``compile=True``: the denoiser module is wrapped in ``torch.compile(dynamic=False)`` (one graph
  per batch size; the first chunk of each size pays the compile). The forward hooks the adapters read
  TACO's features through run inside the compiled graph. Chunks equal float32 eager ones to float
  tolerance. torch recompiles for each new batch size up to ``torch._dynamo.config.recompile_limit``
  (8) and runs a size beyond that eagerly with a warning: a server batching many robots' TACO rows
  meets more sizes than that. Inductor's default mode (no CUDA graphs).
- ``activations="sigmoid"``: ``Mish`` and tanh-``GELU`` modules of the network are replaced by exact
  algebraic rewrites through the sigmoid (:class:`SigmoidMish`, :class:`SigmoidGelu`). torch's CPU
  ``tanh`` is several times slower than its ``sigmoid`` (measured on this project's CPU: 2.1 vs
  0.3 ns per element), and the tanh is most of the cost of these activations; the results agree to
  float32 rounding (max abs difference 2e-6 on [-30, 30], relative 4e-7). ``"exact"`` (the default)
  keeps lerobot's modules, so published chunks stay bit-identical.

An unknown name, bfloat16 on a device without bfloat16 kernels, and compile where torch cannot
compile are refused by :func:`check_compute` with a ConfigError naming the option; nothing falls
back in silence.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from policy_steer.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ACTIVATIONS = ("exact", "sigmoid")


@dataclass(frozen=True)
class Compute:
    """The compute settings of one loaded policy (see the module docstring)."""

    dtype: str = "float32"
    compile: bool = False
    activations: str = "exact"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def reduced(self) -> bool:
        """Whether the network computes below float32."""
        return self.dtype != "float32"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context a forward pass runs in: autocast to the dtype, or nothing for float32."""
        if not self.reduced:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.torch_dtype)


def parse_dtype(name: str, option: str = "--dtype") -> str:
    """A dtype name as :data:`DTYPES` spells it (``bf16`` / ``fp32`` accepted), or a ConfigError naming ``option``."""
    key = str(name).strip().lower()
    key = {"bf16": "bfloat16", "fp32": "float32", "float": "float32"}.get(key, key)
    if key not in DTYPES:
        raise ConfigError(f"{option} {name!r} is not a supported dtype: use one of {', '.join(DTYPES)}")
    return key


def check_compute(compute: Compute, device: str) -> Compute:
    """``compute`` with its dtype name normalised, or a ConfigError for a combination this machine cannot run."""
    dtype = parse_dtype(compute.dtype)
    if compute.activations not in ACTIVATIONS:
        raise ConfigError(f"--activations {compute.activations!r}: use one of {', '.join(ACTIVATIONS)}")
    dev = torch.device(device)
    if dtype == "bfloat16" and not bf16_supported(dev):
        raise ConfigError(f"--dtype bfloat16: the {dev.type} device has no bfloat16 kernels torch can use "
                          f"(torch {torch.__version__}); use --dtype float32")
    if compute.compile:
        why = compile_unavailable(dev)
        if why is not None:
            raise ConfigError(f"--compile true: {why}; use --compile false")
    return Compute(dtype=dtype, compile=bool(compute.compile), activations=compute.activations)


def bf16_supported(device: torch.device) -> bool:
    """Native bfloat16 compute on ``device`` (CUDA: its compute capability; CPU: oneDNN's bf16 kernels,
    i.e. AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if device.type == "mps":
        return bool(torch.backends.mps.is_macos_or_newer(14, 0))
    return False


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot build a kernel for ``device`` here, or None when it can."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return f"torch {torch.__version__} cannot compile under this Python"
    if device.type == "cpu":
        from torch._inductor import config as inductor_config

        cxx = inductor_config.cpp.cxx[-1] if isinstance(inductor_config.cpp.cxx, tuple) else inductor_config.cpp.cxx
        if cxx is None:
            cxx = "g++"
        if shutil.which(cxx) is None:
            return f"inductor compiles CPU kernels with a C++ compiler ({cxx}), and none is on PATH"
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "inductor needs triton for CUDA kernels, and it is not installed"
    return f"policy-steer compiles the denoiser on cpu and cuda only, not {device.type}"


def compiled(module: nn.Module) -> nn.Module:
    """``module`` compiled once per input shape (batch sizes differ between M = 1, TACO and VLS)."""
    return torch.compile(module, dynamic=False)


class SigmoidMish(nn.Module):
    """mish(x) = x tanh(softplus(x)) = x n / (2 - n), n = s (2 - s), s = sigmoid(x).

    (tanh(softplus x) = ((1 + e^x)^2 - 1) / ((1 + e^x)^2 + 1) and 1 + e^x = 1 / (1 - s).) No tanh, and no
    cancellation: n is in [0, 1), 2 - n in (1, 2]. Six elementwise operators, the fewest found.
    """

    def forward(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(x)
        n = s * (2 - s)
        return x * n / (2 - n)


class SigmoidGelu(nn.Module):
    """GELU's tanh form, 0.5 x (1 + tanh(z)) = x sigmoid(2 z), z = sqrt(2 / pi) (x + 0.044715 x^3)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))


def use_sigmoid_activations(module: nn.Module) -> int:
    """Replace ``module``'s Mish and tanh-GELU submodules by their sigmoid forms; returns how many."""
    swapped = 0
    for name, child in module.named_children():
        if isinstance(child, nn.Mish):
            setattr(module, name, SigmoidMish())
            swapped += 1
        elif isinstance(child, nn.GELU) and child.approximate == "tanh":
            setattr(module, name, SigmoidGelu())
            swapped += 1
        else:
            swapped += use_sigmoid_activations(child)
    return swapped


def apply_compute(compute: Compute, model: nn.Module, denoiser: nn.Module) -> nn.Module:
    """Put ``model`` (the whole lerobot network) into ``compute``'s form; returns what to call as the denoiser.

    Activations first (the swap must happen before compiling), then the dtype, then ``torch.compile`` of
    ``denoiser`` (a submodule of ``model``); the returned module shares its parameters and hooks.
    """
    if compute.activations == "sigmoid":
        use_sigmoid_activations(model)
    if compute.reduced:
        model.to(compute.torch_dtype)
    return compiled(denoiser) if compute.compile else denoiser
