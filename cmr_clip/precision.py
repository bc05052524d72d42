"""Inference precision as a user setting: which dtype a model runs in, and int8 quantisation of its Linear layers.

    precision = resolve_precision("auto", quantize="int8", device="cpu")  # -> Precision(dtype, quantize, reason)
    model = apply_precision(model, precision)                              # cast, quantise, log one line
    precision = set_precision(model, "auto")                               # both, for the model's device

`dtype` is "auto", "float32", "bfloat16", "float16" or a `torch.dtype`. "auto" picks bfloat16 where the
device computes it natively (a CPU with AVX512-BF16 or AMX, a GPU that `torch.cuda.is_bf16_supported()`)
and float32 elsewhere; `Precision.reason` says which rule decided. float16 runs on GPUs only (CPU kernels
for it are slow or missing). `quantize="int8"` applies torchao's dynamic int8 quantisation (int8 weights,
activations quantised per token at run time) to every `nn.Linear` (`pip install "cmr-clip[int8]"`); the
`torch.ao.quantization` API it replaces is deprecated. Its int8 matrix product is fast only where the CPU has
AVX512-VNNI (`native_int8`); elsewhere the reason warns that it will be slower than float32. In float32 on
an AMD CPU with AVX-512, `apply_precision` routes the Linear layers through oneDNN (`use_onednn_linear`):
torch's MKL takes its AVX2 path there, at about half the speed.

`compile=True` also runs the video tower through `torch.compile` (inductor, with the weights frozen into the
compiled graph: `compile_video_towers`). Compilation happens on the first batch and takes 15 to 60 s on a CPU
(again for a new batch shape, once), so it pays for batch jobs (index building, `cmr-clip predict` over many
studies), not for one study. Where it pays is int8: torchao's int8 layers are written for the compiler, which
fuses the per-token quantisation of the activations into the products (a ViT-B tower on 2 AMD EPYC cores: int8
2.5x to 2.6x float32 compiled, 1.4x to 1.8x eager; `benchmarks/inference_precision.py --compile`), and bfloat16
on large batches (the demo's tower, batch 63: 1.8x float32 compiled, 1.6x eager), where the short attention
groups' products fuse with their softmax (`CPU_COMPILE_OPTIONS` keeps inductor from turning them into SDPA's kernel).
Compiled float32 is slower than eager (inductor's products go back to MKL, which the oneDNN routing avoids). It
needs a C++ compiler on a CPU (inductor writes and builds C++ kernels).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
QUANTIZE_CHOICES = ("int8",)
INT8_INSTALL = 'pip install "cmr-clip[int8]"'
CPU_FLAGS_FILE = Path("/proc/cpuinfo")
COMPILE_OPTIONS = {"freezing": True}
"""inductor options of `compile_video_towers`: freezing folds the weights into the graph as constants, so that
inductor can lay them out for its kernels ahead of time; only an inference graph (no gradients) is frozen."""
CPU_COMPILE_OPTIONS = {**COMPILE_OPTIONS, "pattern_matcher": False}
"""`COMPILE_OPTIONS` for a tower on a CPU, with inductor's pattern matcher off: its attention pattern would fuse the
matrix products that short patch groups and the CLS query attend by there (see `CPU_EAGER_MAX_KEYS`) back into
SDPA's kernel, 5 ms a call at the demo's shapes against about 1 (demo tower, batch 63, 2 AMD EPYC cores: int8
compiled 0.95x float32 with the matcher, 1.6x without). Freezing's weight packing does not depend on the matcher.
On a GPU every attention goes through SDPA anyway, and the matcher's other fusions stay on."""
SOURCE_FINGERPRINTS = "_cmr_clip_source_fingerprints"
"""Attribute under which `apply_precision` keeps a model's fingerprints from before it converted it."""


class PrecisionError(ValueError):
    """A precision setting that is unknown or cannot run on the device."""


class QuantizationBackendError(PrecisionError, ImportError):
    """`quantize="int8"` was asked for but torchao is not installed."""


@dataclass(frozen=True)
class Precision:
    """What a model runs in: `dtype`, `quantize` (None or "int8"), `reason`, why this dtype was picked, and
    `compile`, whether its video tower runs through `torch.compile`."""

    dtype: torch.dtype
    quantize: str | None
    reason: str
    compile: bool = False

    @property
    def name(self) -> str:
        """e.g. "bfloat16+int8" (the numbers computed; compiled or not, they agree to rounding)."""
        return str(self.dtype).removeprefix("torch.") + (f"+{self.quantize}" if self.quantize else "")

    def __str__(self) -> str:
        return f"precision {self.name}{', compiled' if self.compile else ''} ({self.reason})"


FLOAT32 = Precision(torch.float32, None, "float32 asked for")


def _cpuinfo_field(name: str) -> str:
    """The value of the first `name` line of /proc/cpuinfo (Linux); "" where the file cannot be read."""
    try:
        text = CPU_FLAGS_FILE.read_text()
    except OSError:
        return ""
    line = next((line for line in text.splitlines() if line.startswith(name)), "")
    return line.partition(":")[2].strip()


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where that file cannot be read."""
    return set(_cpuinfo_field("flags").split())


def native_bf16(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """(whether `device` computes bfloat16 natively, the evidence in words)."""
    device = torch.device(device)
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        return supported, f"this GPU {'supports' if supported else 'has no native'} bfloat16"
    if device.type != "cpu":
        return False, f"no bfloat16 probe for {device.type} devices"
    # torch's own cpuinfo probes (the same ones oneDNN uses to pick bf16 kernels); not public API, hence getattr.
    probes = {"AVX512-BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}
    found = [name for name, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()]
    if found:
        return True, f"this CPU has native bfloat16 ({' and '.join(found)})"
    return False, "this CPU has no native bfloat16 (no AVX512-BF16 or AMX)"


MIXED_PRECISION_CHOICES = ("auto", "no", "bf16", "fp16")


def training_mixed_precision(setting: str, device: str | torch.device) -> tuple[str, str]:
    """Accelerate's `mixed_precision` for a training run on `device`, and why: `auto` trains in bf16 autocast
    where the device computes bfloat16 natively and in float32 elsewhere (emulated bf16 is several times
    slower than float32); `no`, `bf16` and `fp16` are taken as given."""
    if setting not in MIXED_PRECISION_CHOICES:
        raise PrecisionError(f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {setting!r}.")
    if setting != "auto":
        return setting, f"mixed_precision={setting} as set"
    native, evidence = native_bf16(device)
    return ("bf16" if native else "no"), f"auto: {evidence}"


def native_int8(device: str | torch.device = "cpu", flags: set[str] | None = None) -> bool:
    """Whether int8 matrix products are fast on `device`: any GPU, or a CPU with AVX512-VNNI. torch's CPU
    `_int_mm`, which torchao's int8 layers call, runs at 0.02x a float32 product of the same shape on an
    AVX2-only CPU (torch 2.13; `benchmarks/inference_precision.py`'s first line). Unknown CPU flags count as
    fast, so that no false warning is given."""
    if torch.device(device).type != "cpu":
        return True
    flags = cpu_flags() if flags is None else flags
    return not flags or "avx512_vnni" in flags


def resolve_precision(dtype: str | torch.dtype | None = "auto", quantize: str | None = None,
                      device: str | torch.device = "cpu", bf16_native: bool | None = None,
                      compile: bool = False) -> Precision:
    """The `Precision` a model on `device` runs in for the user's `dtype`, `quantize` and `compile` settings.

    `bf16_native` overrides the device probe (`native_bf16`) for "auto". Raises `PrecisionError` for an
    unknown setting, float16 on a CPU, or `compile` on a CPU machine without a C++ compiler."""
    if quantize not in (None, "none", *QUANTIZE_CHOICES):
        raise PrecisionError(f"quantize={quantize!r}: use None or one of {QUANTIZE_CHOICES}.")
    quantize = None if quantize == "none" else quantize
    device = torch.device(device)
    chosen, reason = _resolve_dtype("auto" if dtype is None else dtype, device, bf16_native)
    if chosen == torch.float16 and device.type == "cpu":
        raise PrecisionError("dtype float16 runs on a GPU only (CPU float16 kernels are slow or missing); on a CPU "
                             "use dtype='bfloat16' (--dtype bfloat16) or 'float32', or 'auto' to pick.")
    if quantize == "int8" and not native_int8(device):
        reason += "; warning: this CPU has no AVX512-VNNI, so int8 runs slower than float32 here (drop quantize)"
    if compile not in (True, False):
        raise PrecisionError(f"compile must be True or False, got {compile!r}.")
    if compile and device.type == "cpu" and cpp_compiler() is None:
        raise PrecisionError("compile=True (--compile) needs a C++ compiler on a CPU: torch.compile builds its CPU "
                             "kernels with one. Install g++ (Debian/Ubuntu: apt install g++) or set CXX, or run "
                             "without compile.")
    return Precision(chosen, quantize, reason, bool(compile))


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with (`$CXX`, else g++, c++ or clang++ on the PATH), or
    None."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((found for found in map(shutil.which, candidates) if found), None)


def _resolve_dtype(dtype, device: torch.device, bf16_native: bool | None) -> tuple[torch.dtype, str]:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise PrecisionError(f"dtype {dtype}: use one of {DTYPE_CHOICES}.")
        return dtype, f"{str(dtype).removeprefix('torch.')} asked for"
    if dtype in DTYPES:
        return DTYPES[dtype], f"{dtype} asked for"
    if dtype != "auto":
        raise PrecisionError(f"dtype {dtype!r}: use one of {DTYPE_CHOICES} (or a torch.dtype).")
    if bf16_native is None:
        bf16_native, evidence = native_bf16(device)
    else:
        evidence = f"native bfloat16 {'given' if bf16_native else 'ruled out'} by the caller"
    if bf16_native:
        return torch.bfloat16, f"auto: {evidence}; override with dtype='float32' or --dtype float32"
    return torch.float32, f"auto: {evidence}; override with dtype= or --dtype"


def set_precision(model: torch.nn.Module, dtype: str | torch.dtype | None = "auto", quantize: str | None = None,
                  compile: bool = False) -> Precision:
    """Resolve the user's `dtype`, `quantize` and `compile` for the device `model` is on and apply them to
    `model` (in place); the `Precision` it runs in."""
    precision = resolve_precision(dtype, quantize, next(model.parameters()).device, compile=compile)
    apply_precision(model, precision)
    return precision


def apply_precision(model: torch.nn.Module, precision: Precision) -> torch.nn.Module:
    """`model` (changed in place) cast to `precision.dtype`, for int8 with its Linear layers quantised, and with
    `precision.compile` its video towers compiled (`compile_video_towers`); logs one line saying which precision
    runs and why. A model it converts keeps the fingerprint of the weights it had (`model_fingerprint`), so that
    an index still knows it for the model it was built with."""
    converts = precision.quantize is not None or any(p.dtype != precision.dtype for p in model.parameters())
    if converts and not hasattr(model, SOURCE_FINGERPRINTS) and hasattr(model, "config"):
        setattr(model, SOURCE_FINGERPRINTS, _fingerprints(model))
    model = model.to(precision.dtype)
    if precision.quantize == "int8":
        quantize_int8(model)
    # float32 on a CPU where MKL's products are slow (AMD with AVX-512): Linear layers through oneDNN instead.
    # Not when compiling: the routed layers do not trace, and inductor picks its own kernels (for float32 on such a
    # CPU, MKL's: compiled float32 is slower there than this routing; see the module docstring).
    routed = 0
    if precision.dtype == torch.float32 and precision.quantize is None and _on_cpu(model) and not precision.compile:
        routed, why = use_onednn_linear(model, "auto")
    compiled = compile_video_towers(model) if precision.compile else 0
    logger.info("%s%s%s", precision, f"; float32 linear layers through oneDNN ({why})" if routed else "",
                f"; {compiled} video tower(s) compile on their first batch (15 to 60 s on a CPU)" if compiled else "")
    return model


def compile_video_towers(model: torch.nn.Module) -> int:
    """Run every video tower in `model` (the model itself, a CMR-CLIP's or a CMR-TARGET's: each module whose class
    sets `compile_at_inference`, as `CMRCLIPVisionModel` does) through `torch.compile` with `compile_options` for
    the device its weights are on, in place: `nn.Module.compile`, so the module tree, state dict and fingerprint
    stay as they were. Compilation happens on the first call, and once more for the first call with another batch
    shape (then for any shape).
    Towers of one configuration share the compiled code, each with its own weights, and weights loaded into a
    compiled tower are the ones its next call uses (`tests/test_precision.py` checks both). Returns how many towers
    were compiled."""
    towers = [module for module in model.modules() if getattr(type(module), "compile_at_inference", False)]
    for tower in towers:
        tower.compile(options=compile_options(next(tower.parameters()).device))
    return len(towers)


def compile_options(device: torch.device | str) -> dict:
    """inductor's options for a video tower on `device`: `CPU_COMPILE_OPTIONS` on a CPU, else `COMPILE_OPTIONS`."""
    return dict(CPU_COMPILE_OPTIONS if torch.device(device).type == "cpu" else COMPILE_OPTIONS)


def _on_cpu(model: torch.nn.Module) -> bool:
    return all(p.device.type == "cpu" for p in model.parameters())


def model_fingerprint(model, with_folder: bool = False) -> str:
    """sha256 over the model's config and every weight, in name order: equal only for the same weights. The folder
    the model was loaded from (`_name_or_path`) is left out, so a copied model (a Space's `model/`) still matches;
    `with_folder=True` gives the fingerprint indexes saved before recorded (it included the folder). For a model
    `apply_precision` cast or quantised, the fingerprint of its weights before that (a float32 model and its
    bfloat16 or int8 copy are the same model to an index); change the weights after a conversion and the
    fingerprint no longer follows them."""
    fingerprints = getattr(model, SOURCE_FINGERPRINTS, None) or _fingerprints(model)
    return fingerprints[1] if with_folder else fingerprints[0]


def _fingerprints(model) -> tuple[str, str]:
    """(without the folder, with it): the config differs, the weights are read and hashed in one pass for both."""
    config = json.dumps({k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}, sort_keys=True,
                        default=str)
    digests = hashlib.sha256(config.encode()), hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = name.encode(), tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()  # 0-dim too
        for digest in digests:
            digest.update(data[0])
            digest.update(data[1])
    return digests[0].hexdigest(), digests[1].hexdigest()


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation (per-row int8 weights, per-token int8 activations) of every `nn.Linear` of
    `model`, in place, with torchao."""
    torchao = _import_torchao()
    torchao.quantization.quantize_(model, torchao.quantization.Int8DynamicActivationInt8WeightConfig())
    return model


NOISY_LOGGERS = ("torchao", "torch.utils._pytree")
"""Loggers that speak when torchao is imported on a machine without CUDA: a warning for each CUDA kernel library
torchao cannot load, and torch's deprecation warning for each Enum torchao registers with it."""


@contextmanager
def quiet_loggers(names: tuple[str, ...] = NOISY_LOGGERS, level: int = logging.ERROR):
    """Only messages at `level` or above from the loggers `names` inside the block; their own levels after it."""
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before):
            logger.setLevel(old)


def _import_torchao():
    # torchao logs a line for each optional CUDA kernel library it cannot load: noise on a CPU machine.
    try:
        with quiet_loggers():
            import torchao.quantization
    except ImportError as error:
        raise QuantizationBackendError(f'quantize="int8" needs torchao: {INT8_INSTALL}; or run without '
                                       "quantize (--quantize none).") from error
    return torchao


# --- float32 matrix products through oneDNN on AMD CPUs -------------------------------------------------------
# torch's CPU build computes a float32 `nn.Linear` with MKL, which on AMD processors takes its AVX2 path: on 2 cores
# of an AMD EPYC with AVX-512, 180-220 GFLOPS against oneDNN's 330-480 for the same products (`python
# benchmarks/video_encoder.py` shows what that gives a video tower). oneDNN, which torch ships, runs AVX-512 there.
# torch's own name for the kernel, used by its compiler (inductor) for CPU linear layers.
_ONEDNN_LINEAR = "_linear_pointwise"


def cpu_vendor() -> str:
    """The CPU's vendor id from /proc/cpuinfo ("AuthenticAMD", "GenuineIntel"); "" where unknown."""
    return _cpuinfo_field("vendor_id")


def onednn_linear_available() -> bool:
    return hasattr(torch.ops.mkldnn, _ONEDNN_LINEAR) and torch.backends.mkldnn.is_available()


def onednn_linear_pays(vendor: str | None = None, flags: set[str] | None = None) -> tuple[bool, str]:
    """(whether float32 linear layers run faster through oneDNN than through MKL on this CPU, the evidence):
    an AMD CPU with AVX-512, where MKL does not use AVX-512."""
    vendor = cpu_vendor() if vendor is None else vendor
    flags = cpu_flags() if flags is None else flags
    if not onednn_linear_available():
        return False, "this torch build has no oneDNN linear kernel"
    if vendor == "AuthenticAMD" and "avx512f" in flags:
        return True, "an AMD CPU with AVX-512, on which MKL's float32 products take their AVX2 path"
    return False, f"MKL's float32 products suit this CPU ({vendor or 'vendor unknown'})"


class _OneDNNLinearFunction(torch.autograd.Function):
    """y = x W^T + b with oneDNN's kernel; the input's gradient through oneDNN too, the weight's through torch."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return getattr(torch.ops.mkldnn, _ONEDNN_LINEAR)(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = getattr(torch.ops.mkldnn, _ONEDNN_LINEAR)(grad, weight.t().contiguous(), None, "none", [], "")
        rows = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_weight = rows.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_x, grad_weight, grad_bias


def _onednn_linear_forward(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # Only what the kernel computes as torch would: float32 on the CPU, outside autocast (which casts to bf16).
    if (x.device.type != "cpu" or x.dtype != torch.float32 or module.weight.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")):
        return torch.nn.functional.linear(x, module.weight, module.bias)
    return _OneDNNLinearFunction.apply(x.contiguous(), module.weight, module.bias)


def use_onednn_linear(model: torch.nn.Module, enable: bool | str = "auto") -> tuple[int, str]:
    """Route `model`'s `nn.Linear` layers (exactly that class: quantised or adapted layers keep their own forward,
    a LoRA layer's base layer is routed) through oneDNN's kernel when they run in float32 on the CPU; other
    dtypes, devices and autocast fall back to `nn.functional.linear`. "auto" does it where it pays
    (`onednn_linear_pays`), True wherever the kernel exists, False undoes it. The weights and the state dict are
    untouched; results agree with MKL's to float32 rounding (another summation order). Returns (the number of
    layers routed, why)."""
    pays, reason = onednn_linear_pays()
    if enable == "auto":
        enable = pays
    elif enable is True and not onednn_linear_available():
        raise PrecisionError("this torch build has no oneDNN linear kernel (torch.ops.mkldnn._linear_pointwise); "
                             "use enable='auto' or False.")
    elif enable not in (True, False):
        raise PrecisionError(f"enable must be 'auto', True or False, got {enable!r}.")
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            if enable:
                module.forward = _onednn_linear_forward.__get__(module)
            else:
                module.__dict__.pop("forward", None)
            count += 1
    return (count if enable else 0), reason
