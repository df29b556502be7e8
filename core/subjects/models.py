"""Subject models by name: the embedded default (from `data/`) or GPT-2 small (from the hub).

Both are TransformerLens `HookedTransformer`s with a tokenizer attached, so every other module
names locations by TransformerLens hook names and never cares which model it has.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    import torch

from core.paths import REBUILD_COMMAND, default_paths

MODEL_NAMES = ("default", "gpt2")


class ArtifactError(RuntimeError):
    """A file of the embedded default is missing or unreadable."""


class HubUnreachableError(RuntimeError):
    """A model or dictionary asked for by hub name could not be downloaded."""


def pick_device(device: str | None = None) -> str:
    """`device` if given, else 'cuda' when available, else 'cpu'."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPES = ("float32", "float64", "bfloat16", "float16")


def add_device_arguments(parser, dtypes: tuple[str, ...] = DTYPES) -> None:
    """Add `--device` and `--dtype` to a stage's argparse parser (one definition for every stage)."""
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument(
        "--dtype",
        default="float32",
        help=f"dtype of the model's and dictionaries' weights: {', '.join(dtypes)} (default float32)",
    )
    parser.set_defaults(_dtypes=dtypes)


def check_device(device: str | None) -> str:
    """The device to run on (`pick_device`), or ValueError with one clear line if it cannot be used here."""
    import torch

    name = pick_device(device)
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device torch knows; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"--device {name}: only cpu and cuda are supported")
    return name


def check_dtype(name: str | None, allowed: tuple[str, ...] = DTYPES) -> torch.dtype:
    """The torch dtype named `name` (default float32), or ValueError naming the dtypes this stage accepts."""
    import torch

    name = name or "float32"
    if name not in allowed:
        raise ValueError(f"--dtype {name!r} is not supported here; use one of {', '.join(allowed)}")
    return getattr(torch, name)


def device_and_dtype(args) -> tuple[str, torch.dtype]:
    """(device, dtype) from arguments added by `add_device_arguments`, checked before any work."""
    allowed = getattr(args, "_dtypes", DTYPES)
    return check_device(getattr(args, "device", None)), check_dtype(getattr(args, "dtype", None), allowed)


def model_config_fields(cfg) -> dict:  # cfg: HookedTransformerConfig
    """The fields of a HookedTransformerConfig needed to rebuild it, as plain JSON."""
    keep = (
        "n_layers d_model n_ctx d_head n_heads d_mlp d_vocab act_fn normalization_type "
        "positional_embedding_type attn_only seed default_prepend_bos original_architecture"
    ).split()
    fields = asdict(cfg) if hasattr(cfg, "__dataclass_fields__") else dict(cfg.__dict__)
    return {k: fields[k] for k in keep if k in fields}


def save_model(model, directory: Path) -> None:
    """Write a HookedTransformer's config (JSON) and weights (float16 safetensors) to `directory`."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(model_config_fields(model.cfg), indent=2))
    state = {
        k: v.detach().to(torch.float16).contiguous().cpu()
        for k, v in model.state_dict().items()
        if not k.endswith((".IGNORE", ".mask"))
    }
    save_file(state, str(directory / "model.safetensors"))


def build_config(fields: dict, device: str):
    """A HookedTransformerConfig from saved fields, on `device`."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(**fields, device=device)


def load_default_model(root: Path | None = None, device: str | None = None):
    """The embedded default as a HookedTransformer (float32) with its BPE tokenizer attached."""
    import torch
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer

    from core.build.tokenizer import load_tokenizer

    paths = default_paths(root)
    device = pick_device(device)
    for key in ("model_config", "model_weights"):
        if not paths[key].exists():
            raise ArtifactError(f"{paths[key]} is missing; rebuild the default with `{REBUILD_COMMAND}`")
    try:
        fields = json.loads(paths["model_config"].read_text())
        tokenizer = load_tokenizer(paths["tokenizer_dir"])
        model = HookedTransformer(build_config(fields, device), tokenizer=tokenizer)
        state = {k: v.to(torch.float32) for k, v in load_file(str(paths["model_weights"])).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
    except ArtifactError:
        raise
    except FileNotFoundError as exc:
        raise ArtifactError(str(exc)) from exc
    except Exception as exc:  # corrupt JSON or safetensors, wrong shapes
        raise ArtifactError(
            f"cannot read the default model in {paths['model_dir']} ({type(exc).__name__}: {exc}); "
            f"rebuild it with `{REBUILD_COMMAND}`"
        ) from exc
    real_missing = [k for k in missing if not k.endswith((".IGNORE", ".mask"))]
    if real_missing or unexpected:
        raise ArtifactError(
            f"{paths['model_weights']} does not match {paths['model_config']} "
            f"(missing {real_missing[:3]}, unexpected {list(unexpected)[:3]}); rebuild with `{REBUILD_COMMAND}`"
        )
    model.eval()
    return model.to(device)


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within `timeout` seconds (False when HF_HUB_OFFLINE)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(constants.ENDPOINT)
    answered: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
            answered.append(True)
        except OSError:
            answered.append(False)

    # In a thread, so a resolver that hangs (no DNS server) cannot hold us past `timeout`.
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answered and answered[0])


def hub_cached(repo_id: str) -> bool:
    """Whether `repo_id` (a model repo) has a snapshot in the local Hugging Face cache."""
    from huggingface_hub.constants import HF_HUB_CACHE

    folder = Path(HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    return folder.exists() and any(folder.iterdir())


def hub_unreachable_message(what: str) -> str:
    """The error text for a hub download that cannot happen here."""
    return (
        f"cannot load {what}: the Hugging Face Hub is unreachable from this machine and it is not in the local "
        f"cache. Use the embedded default (`--model default`, built into data/ by `{REBUILD_COMMAND}`), or a local "
        f"directory of SAE-Lens dictionary folders; or download it once where the hub is reachable."
    )


def hub_snapshot(repo_id: str, repo_type: str = "models") -> Path:
    """The folder of `repo_id`'s `main` revision in the local Hugging Face cache (it may not exist)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    repo = Path(HF_HUB_CACHE) / (f"{repo_type}--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    commit = ref.read_text().strip() if ref.is_file() else "<commit>"
    return repo / "snapshots" / commit


# Files a cached hub model needs, as alternatives: (what, [any one of these files]).
HUB_MODEL_FILES = (
    ("config", ("config.json",)),
    ("weights", ("model.safetensors", "pytorch_model.bin")),
    ("tokenizer", ("tokenizer.json", "vocab.json")),
)


def missing_hub_model_files(repo_id: str) -> list[str]:
    """Paths the local cache of model `repo_id` lacks (`refs/main`, config, weights, tokenizer); [] when complete."""
    snap = hub_snapshot(repo_id)
    ref = snap.parent.parent / "refs" / "main"
    if not ref.is_file():
        return [str(ref)]
    return [str(snap / names[0]) for _, names in HUB_MODEL_FILES if not any((snap / n).is_file() for n in names)]


def hub_model_width(repo_id: str) -> int | None:
    """`d_model` of hub model `repo_id` from its cached config.json (n_embd / hidden_size), or None if not cached."""
    path = hub_snapshot(repo_id) / "config.json"
    try:
        cfg = json.loads(path.read_text())
        return int(cfg.get("n_embd", cfg.get("hidden_size")))
    except (OSError, ValueError, TypeError):
        return None


def load_hub_model(name: str, device: str | None = None):
    """A pretrained TransformerLens model from the Hugging Face Hub (e.g. 'gpt2'); fails within seconds offline.

    Offline, a model whose local cache lacks a file fails before loading, naming the file.
    """
    from transformer_lens import HookedTransformer

    cached = hub_cached(name)
    missing = missing_hub_model_files(name) if cached else []
    if (not cached or missing) and not hub_reachable():
        if not cached:
            raise HubUnreachableError(hub_unreachable_message(f"model '{name}'"))
        raise HubUnreachableError(
            f"cannot load model '{name}' from the local Hugging Face cache: {', '.join(missing)} "
            f"is missing and the hub is unreachable; copy the file there, or rewrite the cache "
            f"(for the GPT-2 test fixture: `python -m core make-hub-fixture`)"
        )
    try:
        return HookedTransformer.from_pretrained(name, device=pick_device(device))
    except Exception as exc:
        if cached and not missing:  # every file was there: one of them is damaged (safetensors, JSON, shapes)
            raise ArtifactError(
                f"cannot read model '{name}' from the local Hugging Face cache {hub_snapshot(name)} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); replace the damaged file or rewrite the cache"
            ) from exc
        if isinstance(exc, (OSError, ValueError)):
            raise HubUnreachableError(
                hub_unreachable_message(f"model '{name}'") + f" ({type(exc).__name__}: {exc})"
            ) from exc
        raise


def load_model(
    name: str = "default", device: str | None = None, root: Path | None = None, dtype: torch.dtype | None = None
):
    """A subject model by name: 'default' (embedded, from `data/`) or 'gpt2' (GPT-2 small from the hub), in `dtype` (default float32)."""
    import torch

    if name == "default":
        model = load_default_model(root=root, device=device)
    elif name == "gpt2":
        model = load_hub_model("gpt2", device=device)
    else:
        raise ValueError(f"unknown model '{name}'; valid names: {', '.join(MODEL_NAMES)}")
    if dtype is not None and dtype != torch.float32:
        model = model.to(dtype)
        model.cfg.dtype = dtype
    return model
