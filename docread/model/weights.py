"""One weights resolver and loader: a llava-hf checkpoint (local folder, HF cache or hub) →
a loaded model, tokenizer and image statistics, 4-bit where asked.

Safetensors only, never `trust_remote_code`; absent weights with no reachable hub fail in
well under a second with one line saying how to get them, instead of ~23 s of hub retries.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from docread.errors import DocreadError, UsageError
from docread.model.noise import quiet_third_parties

if TYPE_CHECKING:
    import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's pixel statistics, the llava-hf default
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HUB_FILES = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja"]  # never *.bin / *.pt
# Kept in half precision (4-bit breaks them). Bare names for transformers < 5, which matches
# substrings; "model."-prefixed for transformers 5, which matches from the start of the name.
NOT_QUANTIZED = [
    "vision_tower",
    "multi_modal_projector",
    "lm_head",
    "model.vision_tower",
    "model.multi_modal_projector",
]


class Quant(StrEnum):
    """How the language model's weights are held: `auto` is 4-bit NF4 on CUDA and none on a CPU."""

    auto = "auto"
    none = "none"
    int8 = "8bit"
    nf4 = "4bit"


QUANT_CHOICES = tuple(q.value for q in Quant)
HUB_CONNECT_TIMEOUT_S = 3.0
SUPPORTED_TYPES = ("llava", "llava_next")


@dataclass
class Base:
    """A loaded llava-hf checkpoint and what docread needs to feed it."""

    model: object  # LlavaForConditionalGeneration / LlavaNextForConditionalGeneration
    tokenizer: object  # its fast tokenizer, `<image>` included
    image_mean: tuple[float, float, float]  # normalisation of its image processor
    image_std: tuple[float, float, float]
    image_token_id: int  # the `<image>` placeholder id
    device: torch.device
    dtype: torch.dtype  # compute dtype of the unquantized parts
    quant: str  # "none", "8bit" or "4bit" (auto resolved)
    path: Path  # the local folder it was read from
    load_report: dict = field(default_factory=dict)  # how it was loaded: seconds per step, qcache hit/written


# -- where the files are -------------------------------------------------------------------------
def offline_requested(offline: bool | None = None) -> bool:
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_weights(base: str, *, offline: bool | None = None) -> Path:
    """A local folder holding `base`'s config, tokenizer and safetensors weights."""
    local = Path(base).expanduser()
    if local.is_dir():
        check_folder(local, base)
        return local
    looks_like_file = local.suffix.lower() in (".safetensors", ".bin", ".json", ".pt", ".gguf")
    if looks_like_file or base.startswith((".", "/", "~")) or base.count("/") != 1 or " " in base:
        raise UsageError(
            f"--model {base!r} is neither a preset, a local llava-hf folder nor a hub id like llava-hf/llava-1.5-7b-hf"
        )
    cached = _from_cache(base)
    if cached is not None:
        check_folder(cached, base)
        return cached
    how = (
        f"download it where there is a network (`hf download {base}`) and copy the HF cache "
        f"({_cache_dir()}) here, or pass a local llava-hf folder with --model"
    )
    if offline_requested(offline):
        raise DocreadError("weights_missing", f"{base} is not in the HF cache and offline mode is on: {how}")
    if not _hub_reachable():
        raise DocreadError(
            "hub_unreachable", f"{base} is not in the HF cache and {_endpoint()} cannot be reached: {how}"
        )
    return _download(base)


def cached_folder(base: str) -> Path | None:
    """The local folder of `base` (a directory, or a hub id in the HF cache), without any network; None if absent."""
    local = Path(base).expanduser()
    if local.is_dir():
        return local
    return _from_cache(base) if base.count("/") == 1 else None


def check_folder(folder: Path, name: str) -> None:
    """A llava-hf folder needs config.json and safetensors weights; pickle weights are refused."""
    if not (folder / "config.json").is_file():
        raise DocreadError("weights_missing", f"{folder} has no config.json: it is not a llava-hf model folder")
    if not any(folder.glob("*.safetensors")):
        pickled = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if pickled:
            raise DocreadError(
                "unsafe_weights",
                f"{name} has only pickle weights ({pickled[0]}); docread loads "
                "safetensors only: convert them with transformers' save_pretrained",
            )
        raise DocreadError("weights_missing", f"{name}: no *.safetensors weights in {folder}")


def _cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _from_cache(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None


def _hub_reachable() -> bool:
    """One DNS lookup and TCP connect with a short timeout, instead of the hub client's retries."""
    url = urlparse(_endpoint())
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=HUB_CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except GatedRepoError:
        raise DocreadError(
            "weights_missing", f"{repo_id} is gated: accept its licence on the hub and log in with `hf auth login`"
        ) from None
    except RepositoryNotFoundError:
        raise DocreadError("weights_missing", f"{repo_id} does not exist on the hub: check the name") from None
    except (HfHubHTTPError, OSError) as e:
        raise DocreadError(
            "hub_unreachable",
            f"downloading {repo_id} failed ({type(e).__name__}): "
            "try again, or pass a local llava-hf folder with --model",
        ) from None


# -- devices and precision ------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N") from None
    if resolved.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DocreadError(
                "no_cuda", f"--device {device}: no CUDA GPU is visible to this torch build; use --device cpu"
            )
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
        resolved = torch.device("cuda", index)
    return resolved


def resolve_quant(quant: str, device: torch.device) -> str:
    if quant not in QUANT_CHOICES:
        raise UsageError(f"--quant {quant!r}: choose {', '.join(QUANT_CHOICES)}")
    if quant == "auto":
        return "4bit" if device.type == "cuda" else "none"
    return quant


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU has it, else fp16 on CUDA; fp32 on CPU (half precision is slow there)."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# -- loading ----------------------------------------------------------------------------------------
def load_base(base: str, *, device: str = "auto", quant: str = "auto", offline: bool | None = None) -> Base:
    """Load a llava-hf checkpoint. Only the language model is ever quantized."""
    folder = resolve_weights(base, offline=offline)
    config = _read_json(folder / "config.json", base)
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise DocreadError(
            "unsupported_model",
            f"{base} is a {model_type!r} model; docread reads llava-hf "
            "LLaVA-1.5 (llava) and LLaVA-1.6 (llava_next) checkpoints",
        )
    torch_device = resolve_device(device)
    mode = resolve_quant(quant, torch_device)
    dtype = compute_dtype(torch_device)
    report: dict = {}
    model = _load_model(folder, model_type, torch_device, mode, dtype, name=_entry_base(base, folder), report=report)
    tokenizer = _load_tokenizer(folder)
    mean, std = _image_statistics(folder)
    image_token_id = getattr(model.config, "image_token_id", None)
    if image_token_id is None:
        image_token_id = model.config.image_token_index
    return Base(
        model=model,
        tokenizer=tokenizer,
        image_mean=mean,
        image_std=std,
        image_token_id=int(image_token_id),
        device=torch_device,
        dtype=dtype,
        quant=mode,
        path=folder,
        load_report=report,
    )


def _entry_base(base: str, folder: Path) -> str:
    """The name a quantized copy is filed under: the hub id, or a local folder's own name."""
    return folder.resolve().name if Path(base).expanduser().is_dir() else base


def _load_model(
    folder: Path,
    model_type: str,
    device: torch.device,
    mode: str,
    dtype: torch.dtype,
    *,
    name: str = "",
    report: dict | None = None,
):
    """The model, 4-bit ones through docread's quantized cache (`docread.model.qcache`). `report` gets what
    happened and how long each step took."""
    import transformers

    from docread.model import qcache

    transformers.utils.logging.disable_progress_bar()  # stderr is docread's: no loader bars or notices
    transformers.utils.logging.set_verbosity_error()
    quiet_third_parties()

    cls = {
        "llava": transformers.LlavaForConditionalGeneration,
        "llava_next": transformers.LlavaNextForConditionalGeneration,
    }[model_type]
    report = {} if report is None else report
    kwargs = dict(dtype=dtype, use_safetensors=True, local_files_only=True)
    if mode != "none":
        kwargs["device_map"] = {"": device}  # placed while loading: a quantized model is never .to()'d
    if mode in qcache.CACHED_MODES and qcache.switch() != "off":
        model = _load_through_cache(cls, folder, kwargs, mode, dtype, name or folder.name, report)
        return model.eval().requires_grad_(False)
    report["qcache"] = "off" if mode in qcache.CACHED_MODES else "n/a"
    quantized = {"quantization_config": quantization_config(mode, dtype)} if mode != "none" else {}
    model = _from_pretrained(cls, folder, {**kwargs, **quantized}, mode, report)
    if mode == "none":
        start = time.perf_counter()
        model = model.to(device)
        report["to_device_s"] = round(time.perf_counter() - start, 4)
    return model.eval().requires_grad_(False)


def _load_through_cache(cls, folder: Path, kwargs: dict, mode: str, dtype: torch.dtype, name: str, report: dict):
    """Read the verified quantized copy of `folder`; else load and quantize the base, and save the copy."""
    from docread.model import qcache

    inputs = qcache.key_inputs(folder, mode, dtype, NOT_QUANTIZED)
    key = qcache.make_key(inputs)
    entry, why = qcache.lookup(name, key, mode)
    if why is None and qcache.switch() == "refresh":
        why = "refresh asked"
    report.update(qcache_path=str(entry), qcache_key=key[: qcache.KEY_CHARS])
    if why is None:
        try:
            model = _from_pretrained(cls, entry, kwargs, mode, report)  # its config.json holds the quant settings
            report["qcache"] = "hit"
            qcache.log.info("read the quantized copy %s", entry)
            return model
        except DocreadError as e:
            why = e.message
    if why != "absent":
        qcache.log.warning("rebuilding the quantized copy %s: %s", entry, why)
    model = _from_pretrained(
        cls, folder, {**kwargs, "quantization_config": quantization_config(mode, dtype)}, mode, report
    )
    start = time.perf_counter()
    try:  # before any forward pass: on CPU bitsandbytes repacks weights at the first one
        qcache.save(model, entry, key=key, inputs=inputs, base=name)
        report["qcache"] = "written" if why == "absent" else "rebuilt"
    except OSError as e:  # a read-only or full cache costs speed, never the answer
        report["qcache"] = f"unwritable: {_first_line(e)}"
        qcache.log.warning("cannot write the quantized copy %s: %s", entry, _first_line(e))
    report["save_s"] = round(time.perf_counter() - start, 4)
    return model


def _from_pretrained(cls, folder: Path, kwargs: dict, mode: str, report: dict):
    start = time.perf_counter()
    try:
        model = cls.from_pretrained(folder, **kwargs)
    except ImportError as e:  # bitsandbytes / accelerate missing or too old
        raise DocreadError(
            "quant_unavailable", f"--quant {mode} needs bitsandbytes: {e}; or run with --quant none"
        ) from None
    except (OSError, ValueError) as e:
        raise DocreadError("corrupt", f"cannot load the weights in {folder}: {_first_line(e)}") from None
    report["from_pretrained_s"] = round(time.perf_counter() - start, 4)
    return model


def quantization_config(mode: str, dtype: torch.dtype):
    """NF4 (double-quantized) or int8 for the language model only."""
    from transformers import BitsAndBytesConfig

    if mode == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=NOT_QUANTIZED,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=NOT_QUANTIZED)


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise DocreadError("weights_missing", f"cannot read the tokenizer in {folder}: {_first_line(e)}") from None


def _image_statistics(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the checkpoint's image processor, read from its JSON (no processor built):
    preprocessor_config.json (llava-hf hub layout) or processor_config.json (transformers 5)."""
    config: dict = {}
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        if (folder / name).is_file():
            found = _read_json(folder / name, str(folder))
            config = found.get(key, {}) if key else found
            if "image_mean" in config:
                break
    mean, std = config.get("image_mean", CLIP_MEAN), config.get("image_std", CLIP_STD)
    return tuple(float(x) for x in mean), tuple(float(x) for x in std)


def _read_json(path: Path, name: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DocreadError("corrupt", f"{name}: cannot read {path.name}: {_first_line(e)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
