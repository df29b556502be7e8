"""One interface for every dictionary: SAE-Lens SAEs, SAE-Lens transcoders and raw MLP neurons.

A dictionary reads activations at `hook_in`, encodes them into `d_sae` latents, and decodes the
latents into a reconstruction of the activations at `hook_out` (the same hook for an SAE; the MLP
output for a transcoder). MLP neurons are the seed paper's baseline: their "encoder" is the MLP's
own input weights and non-linearity, optionally top-k sparsified per token.

Dictionary ids are TransformerLens hook names, prefixed by kind where one hook has several:
    resid:blocks.2.hook_resid_pre       SAE on the residual stream before block 2
    attn:blocks.2.hook_attn_out         SAE on attention output of block 2
    transcoder:blocks.2.ln2.hook_normalized  transcoder, block 2's MLP input -> blocks.2.hook_mlp_out
    neurons:blocks.2.mlp.hook_post      MLP neurons of block 2 (baseline)
    neurons_topk32:blocks.2.mlp.hook_post  the same, keeping the 32 largest per token (baseline)
    mlp:blocks.2.hook_mlp_out           SAE on the MLP output (SAE-Lens pretrained releases for GPT-2)

`load_dictionaries` loads a model's dictionaries by name: the embedded default's from `data/`,
GPT-2 small's from SAE-Lens pretrained releases on the Hugging Face Hub (failing fast offline),
and, for either, any local directory of SAE-Lens folders (e.g. transcoders, which no release has).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

from core.paths import REBUILD_COMMAND, default_paths
from core.subjects.models import MODEL_NAMES, ArtifactError, HubUnreachableError, hub_reachable, pick_device

DictionaryKind = Literal["resid", "attn", "transcoder", "mlp", "neurons", "neurons_topk"]
SAE_KINDS: tuple[DictionaryKind, ...] = ("resid", "attn", "transcoder", "mlp")
BASELINE_KINDS: tuple[DictionaryKind, ...] = ("neurons", "neurons_topk")


def hooks_for(kind: DictionaryKind, layer: int) -> tuple[str, str]:
    """(hook_in, hook_out) of a dictionary of `kind` at `layer`, as TransformerLens hook names."""
    if kind == "resid":
        h = f"blocks.{layer}.hook_resid_pre"
        return h, h
    if kind == "attn":
        h = f"blocks.{layer}.hook_attn_out"
        return h, h
    if kind == "transcoder":
        return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
    if kind == "mlp":
        h = f"blocks.{layer}.hook_mlp_out"
        return h, h
    if kind in BASELINE_KINDS:
        return f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
    raise ValueError(f"unknown dictionary kind {kind!r}; valid kinds: {', '.join(SAE_KINDS + BASELINE_KINDS)}")


def dictionary_id(kind: DictionaryKind, layer: int, topk: int | None = None) -> str:
    """The id string of a dictionary (see the module docstring)."""
    if kind in BASELINE_KINDS:
        prefix = f"neurons_topk{topk}" if kind == "neurons_topk" else "neurons"
        return f"{prefix}:blocks.{layer}.mlp.hook_post"
    return f"{kind}:{hooks_for(kind, layer)[0]}"


@dataclass
class Dictionary:
    """A loaded dictionary: which hooks it reads and writes, and the module that encodes/decodes.

    `module` is an SAE-Lens `SAE` (any subclass, `Transcoder` included) for SAE kinds, or the
    model's MLP block for neuron baselines.
    """

    id: str
    kind: DictionaryKind
    layer: int
    hook_in: str
    hook_out: str
    d_in: int
    d_sae: int
    d_out: int
    module: torch.nn.Module
    topk: int | None = None
    source: str = ""  # where it came from: a folder, or 'release/sae_id'
    # neurons: the LayerNorm whose normalised output is hook_in (its w and b are applied before W_in)
    ln: torch.nn.Module | None = None

    @property
    def is_baseline(self) -> bool:
        """True for the MLP-neuron baselines."""
        return self.kind in BASELINE_KINDS

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations `[..., d_sae]` of activations `x: [..., d_in]` read at `hook_in`."""
        import torch

        if self.kind in SAE_KINDS:
            return self.module.encode(x)
        acts = self.module.act_fn(x @ self.W_enc + self.b_enc)  # [..., d_mlp], the model's hook_post
        if self.topk is not None:
            vals, idx = acts.topk(self.topk, dim=-1)
            acts = torch.zeros_like(acts).scatter_(-1, idx, vals)
        return acts

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Reconstruction `[..., d_out]` at `hook_out` from latents `[..., d_sae]`."""
        if self.kind in SAE_KINDS:
            return self.module.decode(latents)
        return latents @ self.module.W_out + self.module.b_out

    @property
    def W_dec(self) -> torch.Tensor:
        """Decoder directions `[d_sae, d_out]` (one row per latent)."""
        return self.module.W_dec if self.kind in SAE_KINDS else self.module.W_out

    @property
    def W_enc(self) -> torch.Tensor:
        """Encoder directions `[d_in, d_sae]` (neurons: W_in with the LayerNorm's scale `w` folded in)."""
        if self.kind in SAE_KINDS:
            return self.module.W_enc
        w = getattr(self.ln, "w", None)
        return self.module.W_in if w is None else w[:, None] * self.module.W_in

    @property
    def b_enc(self) -> torch.Tensor:
        """Encoder bias `[d_sae]` (SAE-Lens transcoders and SAEs subtract no b_dec here when configured so;
        neurons: b_in plus the LayerNorm's bias `b` through W_in)."""
        if self.kind in SAE_KINDS:
            return self.module.b_enc
        b = getattr(self.ln, "b", None)
        return self.module.b_in if b is None else self.module.b_in + b @ self.module.W_in

    def describe(self) -> dict:
        """Plain-JSON description for stores and pages."""
        return {
            "id": self.id,
            "kind": self.kind,
            "layer": self.layer,
            "hook_in": self.hook_in,
            "hook_out": self.hook_out,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "d_out": self.d_out,
            "topk": self.topk,
            "source": self.source,
        }


def _folder_name(kind: DictionaryKind, layer: int) -> str:
    return f"{kind}-L{layer}"


def dictionary_from_sae(
    sae,
    kind: DictionaryKind,
    layer: int,
    source: str = "",
    hook_in: str | None = None,
    hook_out: str | None = None,
    id: str | None = None,
) -> Dictionary:
    """Wrap an SAE-Lens SAE or Transcoder as a Dictionary of `kind` at `layer`.

    Hooks default to `hooks_for(kind, layer)` and the id to `kind:hook_in`; pass them for SAEs on
    other hooks of the same kind (e.g. a pretrained SAE on `blocks.5.hook_resid_post`).
    """
    default_in, default_out = hooks_for(kind, layer)
    hook_in = hook_in or default_in
    hook_out = hook_out or (hook_in if kind != "transcoder" else default_out)
    d_out = getattr(sae.cfg, "d_out", sae.cfg.d_in) if kind == "transcoder" else sae.cfg.d_in
    return Dictionary(
        id=id or f"{kind}:{hook_in}",
        kind=kind,
        layer=layer,
        hook_in=hook_in,
        hook_out=hook_out,
        d_in=sae.cfg.d_in,
        d_sae=sae.cfg.d_sae,
        d_out=d_out,
        module=sae,
        source=source,
    )


def neuron_dictionary(model, layer: int, topk: int | None = None) -> Dictionary:
    """The MLP neurons of `layer` as a baseline dictionary (top-k sparsified per token if `topk`)."""
    kind: DictionaryKind = "neurons_topk" if topk else "neurons"
    hook_in, hook_out = hooks_for(kind, layer)
    mlp = model.blocks[layer].mlp
    return Dictionary(
        id=dictionary_id(kind, layer, topk),
        kind=kind,
        layer=layer,
        hook_in=hook_in,
        hook_out=hook_out,
        d_in=model.cfg.d_model,
        d_sae=model.cfg.d_mlp,
        d_out=model.cfg.d_model,
        module=mlp,
        topk=topk,
        source="model MLP weights (baseline)",
        ln=model.blocks[layer].ln2,  # hook_in is ln2.hook_normalized, before LayerNorm's w and b
    )


def save_dictionary(d: Dictionary, dictionaries_dir: Path) -> Path:
    """Save an SAE-kind dictionary in SAE-Lens format to `dictionaries_dir/<kind>-L<layer>/`."""
    if d.is_baseline:
        raise ValueError("neuron baselines are views of the model's weights and are not saved")
    folder = dictionaries_dir / _folder_name(d.kind, d.layer)
    d.module.save_model(str(folder))
    return folder


DEFAULT_FIX = f"rebuild the default with `{REBUILD_COMMAND}`"
LOCAL_FIX = "save it again with `sae.save_model(folder)` (SAE-Lens format: cfg.json + sae_weights.safetensors)"


def read_sae_cfg(folder: Path, fix: str = DEFAULT_FIX) -> dict:
    """The parsed `cfg.json` of an SAE-Lens folder; ArtifactError naming the file if missing or corrupt."""
    path = folder / "cfg.json"
    if not path.exists():
        raise ArtifactError(f"{path} is missing; {fix}")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); {fix}") from exc
    if not isinstance(cfg, dict) or "d_sae" not in cfg:
        raise ArtifactError(f"{path} is not an SAE-Lens config (no d_sae); {fix}")
    return cfg


def load_dictionary_folder(
    folder: Path,
    kind: DictionaryKind,
    layer: int,
    device: str | None = None,
    hook_in: str | None = None,
    hook_out: str | None = None,
    id: str | None = None,
    fix: str = DEFAULT_FIX,
) -> Dictionary:
    """Load one SAE-Lens folder (written by `save_dictionary` or `sae.save_model`) as a Dictionary.

    `fix` is what the error message tells the user to do when a file is missing or unreadable.
    """
    from sae_lens import SAE

    read_sae_cfg(folder, fix)
    weights = folder / "sae_weights.safetensors"
    if not weights.exists():
        raise ArtifactError(f"{weights} is missing; {fix}")
    try:
        sae = SAE.load_from_disk(str(folder), device=pick_device(device), dtype="float32")
    except Exception as exc:
        raise ArtifactError(f"cannot read {weights} ({type(exc).__name__}: {exc}); {fix}") from exc
    sae.eval()
    return dictionary_from_sae(sae, kind, layer, source=str(folder), hook_in=hook_in, hook_out=hook_out, id=id)


def list_default_dictionaries(root: Path | None = None) -> list[tuple[DictionaryKind, int, Path]]:
    """(kind, layer, folder) of every dictionary folder of the embedded default."""
    ddir = default_paths(root)["dictionaries_dir"]
    out = []
    if ddir.exists():
        for folder in sorted(ddir.iterdir()):
            kind, _, layer = folder.name.rpartition("-L")
            if kind in SAE_KINDS and layer.isdigit():
                out.append((kind, int(layer), folder))  # type: ignore[arg-type]
    return sorted(out, key=lambda t: (SAE_KINDS.index(t[0]), t[1]))


def load_default_dictionaries(
    root: Path | None = None, ids: list[str] | None = None, device: str | None = None
) -> dict[str, Dictionary]:
    """The embedded default's dictionaries by id (all, or those in `ids`)."""
    return load_dictionaries("default", ids=ids, device=device, root=root)


# ---------------------------------------------------------------------------------------------
# Dictionaries by model name: the default, SAE-Lens pretrained releases, local directories
# ---------------------------------------------------------------------------------------------

GPT2_DEFAULT_RELEASES = ("gpt2-small-res-jb", "gpt2-small-attn-out-v5-32k")
_RELEASE_MODELS = {"gpt2": ("gpt2-small", "gpt2")}  # our model name -> SAE-Lens `model` field values
_HOOK_PATTERN = re.compile(
    r"blocks\.(\d+)\.(hook_resid_pre|hook_resid_mid|hook_resid_post|hook_attn_out|hook_mlp_out|ln2\.hook_normalized)(_\d+)?"
)
_HOOK_KIND: dict[str, DictionaryKind] = {
    "hook_resid_pre": "resid",
    "hook_resid_mid": "resid",
    "hook_resid_post": "resid",
    "hook_attn_out": "attn",
    "hook_mlp_out": "mlp",
    "ln2.hook_normalized": "transcoder",
}
HUB_FIX = (
    "Use the embedded default (model 'default', e.g. `--model default`), or pass a local directory of "
    "SAE-Lens folders (`transcoder_dir=...`); to use the hub, run where huggingface.co is reachable once "
    "so the release is in the local Hugging Face cache."
)


@dataclass
class DictionarySpec:
    """Where one loadable dictionary lives, known before any weights are read."""

    id: str
    kind: DictionaryKind
    layer: int
    hook_in: str
    hook_out: str
    release: str | None = None  # SAE-Lens release, for hub dictionaries
    sae_id: str | None = None
    folder: Path | None = None  # for local folders
    fix: str = ""  # what an error about this folder tells the user to do


def spec_from_hook(hook_name: str, hook_name_out: str | None = None) -> tuple[DictionaryKind, int, str, str]:
    """(kind, layer, hook_in, hook_out) of a dictionary reading TransformerLens hook `hook_name`.

    A trailing `_<n>` (SAE-Lens ids such as `blocks.8.hook_resid_pre_768`) is dropped from the hook.
    """
    m = _HOOK_PATTERN.fullmatch(hook_name)
    if m is None:
        raise ValueError(
            f"cannot use a dictionary on hook {hook_name!r}; supported hooks: blocks.L.hook_resid_pre/mid/post, "
            f"blocks.L.hook_attn_out, blocks.L.hook_mlp_out, and transcoders from blocks.L.ln2.hook_normalized"
        )
    layer, name = int(m.group(1)), m.group(2)
    kind = _HOOK_KIND[name]
    hook_in = f"blocks.{layer}.{name}"
    if kind == "transcoder":
        return kind, layer, hook_in, hook_name_out or f"blocks.{layer}.hook_mlp_out"
    return kind, layer, hook_in, hook_in


def release_specs(model_name: str, releases: list[str]) -> dict[str, DictionarySpec]:
    """Every dictionary of the SAE-Lens pretrained `releases` for `model_name`, by id, from SAE-Lens's directory (no download)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    model_ids = _RELEASE_MODELS.get(model_name, ())
    valid = sorted(
        r
        for r, info in directory.items()
        if info.model in model_ids and all(_HOOK_PATTERN.fullmatch(i) for i in info.saes_map)
    )
    out: dict[str, DictionarySpec] = {}
    for release in releases:
        info = directory.get(release)
        if info is None or info.model not in model_ids:
            raise ValueError(
                f"unknown SAE-Lens release {release!r} for model {model_name!r}; valid releases: {', '.join(valid)}"
            )
        for sae_id in info.saes_map:
            try:
                kind, layer, hook_in, hook_out = spec_from_hook(sae_id)
            except ValueError as exc:
                raise ValueError(f"SAE-Lens release {release!r} has {sae_id}: {exc}") from None
            did = f"{kind}:{sae_id}" if sae_id != hook_in else f"{kind}:{hook_in}"
            if did in out:
                raise ValueError(f"{did} is in both {out[did].release} and {release}; load them in separate calls")
            out[did] = DictionarySpec(did, kind, layer, hook_in, hook_out, release=release, sae_id=sae_id)
    return out


def local_specs(directory: Path) -> dict[str, DictionarySpec]:
    """Every SAE-Lens folder directly under `directory` (or `directory` itself), by id, from its cfg.json."""
    if not directory.is_dir():
        raise FileNotFoundError(f"dictionary directory {directory} does not exist; pass a folder of SAE-Lens folders")
    folders = [directory] if (directory / "cfg.json").exists() else sorted(p for p in directory.iterdir() if p.is_dir())
    out: dict[str, DictionarySpec] = {}
    for folder in folders:
        cfg = read_sae_cfg(folder, LOCAL_FIX)
        meta = cfg.get("metadata") or {}
        hook = meta.get("hook_name") or cfg.get("hook_name")
        if not hook:
            raise ArtifactError(f"{folder / 'cfg.json'} names no hook (metadata.hook_name); {LOCAL_FIX}")
        kind, layer, hook_in, hook_out = spec_from_hook(hook, meta.get("hook_name_out") or cfg.get("hook_name_out"))
        if "transcoder" in str(cfg.get("architecture", "")) and kind != "transcoder":
            hook_out = meta.get("hook_name_out") or f"blocks.{layer}.hook_mlp_out"
            kind = "transcoder"
        did = f"{kind}:{hook_in}"
        if did in out:
            raise ValueError(f"{out[did].folder} and {folder} are both {did}; keep one of them in {directory}")
        out[did] = DictionarySpec(did, kind, layer, hook_in, hook_out, folder=folder, fix=LOCAL_FIX)
    if not out:
        raise ArtifactError(f"no SAE-Lens folders (cfg.json + sae_weights.safetensors) in {directory}")
    return out


def missing_release_files(specs: list[DictionarySpec]) -> list[str]:
    """Files of release dictionaries `specs` that the local Hugging Face cache lacks, as
    `<cache folder>/<file> (release, sae_id)`; [] when all are there.

    Checks the SAE-Lens-format releases (`cfg.json` + `sae_weights.safetensors` in the sae's folder);
    releases in converted formats are left to their loader.
    """
    from huggingface_hub import try_to_load_from_cache
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from core.subjects.models import hub_snapshot

    directory = get_pretrained_saes_directory()
    missing = []
    for spec in specs:
        info = directory[spec.release]
        if info.conversion_func is not None:
            continue
        repo = hub_snapshot(info.repo_id).parent.parent
        if not repo.is_dir():
            entry = f"{repo} (all of {spec.release})"
            if entry not in missing:
                missing.append(entry)
            continue
        folder = info.saes_map[spec.sae_id]
        for name in ("cfg.json", "sae_weights.safetensors"):
            if not isinstance(try_to_load_from_cache(info.repo_id, f"{folder}/{name}"), str):
                missing.append(f"{hub_snapshot(info.repo_id)}/{folder}/{name} ({spec.release}, {spec.sae_id})")
    return missing


@contextmanager
def _hub_cache_only() -> Iterator[None]:
    """Make huggingface_hub read only its local cache (no retries against an unreachable hub)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def load_release_dictionary(spec: DictionarySpec, device: str | None = None, online: bool = True) -> Dictionary:
    """One dictionary of an SAE-Lens pretrained release (`SAE.from_pretrained`); HubUnreachableError if it cannot be had."""
    from sae_lens import SAE

    assert spec.release is not None and spec.sae_id is not None
    where = f"SAE release {spec.release!r} ({spec.sae_id})"
    try:
        if online:
            sae = SAE.from_pretrained(spec.release, spec.sae_id, device=pick_device(device))
        else:
            with _hub_cache_only():
                sae = SAE.from_pretrained(spec.release, spec.sae_id, device=pick_device(device))
    except (OSError, ValueError, RuntimeError) as exc:  # huggingface_hub errors derive from these
        state = (
            "the Hugging Face Hub is unreachable and it is not in the local cache"
            if not online
            else f"download failed ({type(exc).__name__})"
        )
        raise HubUnreachableError(f"cannot load {where}: {state}. {HUB_FIX}") from exc
    sae.eval()
    return dictionary_from_sae(
        sae,
        spec.kind,
        spec.layer,
        source=f"{spec.release}/{spec.sae_id}",
        hook_in=spec.hook_in,
        hook_out=spec.hook_out,
        id=spec.id,
    )


def load_dictionaries(
    model_name: str = "default",
    releases: list[str] | None = None,
    transcoder_dir: Path | None = None,
    ids: list[str] | None = None,
    device: str | None = None,
    root: Path | None = None,
) -> dict[str, Dictionary]:
    """A model's dictionaries by id: all, or those in `ids`.

    'default': the embedded default's folders under `root` (default `data/default`). 'gpt2': the
    SAE-Lens pretrained `releases` (default: `GPT2_DEFAULT_RELEASES`) from the Hugging Face Hub or
    its local cache. For either, `transcoder_dir` adds every SAE-Lens folder in that directory
    (kind and layer read from each cfg.json's hook names). Ids are checked before anything is
    downloaded; offline, a hub release fails within seconds with HubUnreachableError.
    """
    specs, wanted, online = check_dictionary_sources(model_name, releases, transcoder_dir, ids, root)
    out: dict[str, Dictionary] = {}
    for did in wanted:
        spec = specs[did]
        if spec.folder is not None:
            out[did] = load_dictionary_folder(
                spec.folder, spec.kind, spec.layer, device, spec.hook_in, spec.hook_out, did, spec.fix
            )
        else:
            out[did] = load_release_dictionary(spec, device, online=online)
    return out


def spec_width(spec: DictionarySpec) -> int | None:
    """The input width (`d_in`) a dictionary's cfg.json declares, read from its folder or the local
    Hugging Face cache without loading weights; None when the file cannot be read here."""
    path: Path | None = spec.folder / "cfg.json" if spec.folder is not None else None
    if path is None and spec.release is not None and spec.sae_id is not None:
        from huggingface_hub import try_to_load_from_cache
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        info = get_pretrained_saes_directory()[spec.release]
        found = try_to_load_from_cache(info.repo_id, f"{info.saes_map[spec.sae_id]}/cfg.json")
        path = Path(found) if isinstance(found, str) else None
    try:
        return int(json.loads(path.read_text())["d_in"]) if path is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_widths(specs: list[DictionarySpec], d_model: int) -> None:
    """ValueError naming the first dictionary whose declared `d_in` is not the model's `d_model` (before any weights load)."""
    for spec in specs:
        width = spec_width(spec)
        if width is not None and width != d_model:
            where = spec.folder or f"{spec.release}/{spec.sae_id}"
            raise ValueError(
                f"dictionary {spec.id} expects d_in {width} but {spec.hook_in} has width {d_model} ({where}: "
                f"a dictionary of another model)"
            )


def check_dictionary_sources(
    model_name: str = "default",
    releases: list[str] | None = None,
    transcoder_dir: Path | None = None,
    ids: list[str] | None = None,
    root: Path | None = None,
) -> tuple[dict[str, DictionarySpec], list[str], bool]:
    """Everything `load_dictionaries` checks before reading any weights: model, release names and hooks,
    ids, and (offline) that every wanted file is in the local cache or folder.

    Returns (specs by id, wanted ids, whether the hub is reachable); raises a clear error otherwise.
    """
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; valid names: {', '.join(MODEL_NAMES)}")
    specs: dict[str, DictionarySpec] = {}
    if model_name == "default":
        if releases:
            raise ValueError(
                "SAE-Lens releases are for model 'gpt2'; the default's dictionaries come from data/default"
            )
        found = list_default_dictionaries(root)
        if not found and transcoder_dir is None:
            raise ArtifactError(f"no dictionaries in {default_paths(root)['dictionaries_dir']}; {DEFAULT_FIX}")
        for kind, layer, folder in found:
            hook_in, hook_out = hooks_for(kind, layer)
            did = dictionary_id(kind, layer)
            specs[did] = DictionarySpec(did, kind, layer, hook_in, hook_out, folder=folder, fix=DEFAULT_FIX)
    else:
        specs.update(release_specs(model_name, list(releases if releases is not None else GPT2_DEFAULT_RELEASES)))
    if transcoder_dir is not None:
        for did, spec in local_specs(Path(transcoder_dir)).items():
            if did in specs:
                raise ValueError(f"{did} is both in {transcoder_dir} and in the {model_name} dictionaries; remove one")
            specs[did] = spec

    wanted = list(ids) if ids is not None else list(specs)
    unknown = [i for i in wanted if i not in specs]
    if unknown:
        raise ValueError(f"unknown dictionary {', '.join(unknown)}; valid ids: {', '.join(specs)}")

    hub_wanted = [specs[did] for did in wanted if specs[did].folder is None]
    online = hub_reachable() if hub_wanted else False  # probe the hub once, only if a hub dictionary is wanted
    if hub_wanted and not online:
        missing = missing_release_files(hub_wanted)
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise HubUnreachableError(
                f"the Hugging Face Hub is unreachable and the local cache lacks {len(missing)} file(s) of the wanted dictionaries: "
                f"{'; '.join(missing[:3])}{more}; nothing was loaded. {HUB_FIX}"
            )
    for did in wanted:  # every local folder has its weights before any are read
        folder = specs[did].folder
        if folder is not None and not (folder / "sae_weights.safetensors").exists():
            raise ArtifactError(
                f"{folder / 'sae_weights.safetensors'} is missing; {specs[did].fix} (nothing was loaded)"
            )
    return specs, wanted, online


def read_manifest(root: Path | None = None) -> dict:
    """The build manifest of the embedded default."""
    path = default_paths(root)["manifest"]
    if not path.exists():
        raise ArtifactError(f"{path} is missing; rebuild the default with `{REBUILD_COMMAND}`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); rebuild with `{REBUILD_COMMAND}`") from exc


__all__ = [
    "GPT2_DEFAULT_RELEASES",
    "Dictionary",
    "DictionaryKind",
    "DictionarySpec",
    "HubUnreachableError",
    "check_dictionary_sources",
    "dictionary_from_sae",
    "dictionary_id",
    "hooks_for",
    "hub_reachable",
    "list_default_dictionaries",
    "load_default_dictionaries",
    "load_dictionaries",
    "load_dictionary_folder",
    "local_specs",
    "neuron_dictionary",
    "read_manifest",
    "read_sae_cfg",
    "release_specs",
    "save_dictionary",
    "spec_from_hook",
]
