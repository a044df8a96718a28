"""Checkpoints: safetensors or a plain state dict (weights_only), read through the rename table of the
source that wrote them (timm's names are ours; Hugging Face and torchvision are translated, see
`sources/`), then one strict match that lists missing keys, unexpected keys and shape mismatches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import WeightMismatchError, WeightsError, did_you_mean, first_line
from .hf_processor import PROCESSOR_CONFIG, read_json
from .sources import FOREIGN_TABLES, TIMM, RenameTable, table_for
from .swin import resize_relative_position_bias, window_of_table

# Checkpoints that wrap the state dict in a dict under one of these keys (tried in order).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema")
# Key prefixes of wrapped models (DataParallel / DDP, Lightning-style `self.model`): removed when every key has one.
PREFIXES = ("module.", "model.")
# What Hugging Face's save_pretrained writes into a folder, in the order we look for it.
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")
HEAD = "head.fc.weight"         # our classifier's weight, [classes, features], in every model
CHANNEL_FLIP_NOTE = "BGR->RGB channel flip folded into the stem conv: the model takes RGB like every mvdeploy model"


class WeightsFormat(str, Enum):
    """Who named the checkpoint's tensors (`--weights-format`); None (not given) detects it from the keys."""

    hf = "hf"
    timm = "timm"
    torchvision = "torchvision"


WEIGHTS_FORMATS = tuple(f.value for f in WeightsFormat)


@dataclass
class LoadReport:
    """How a checkpoint was read: the layout of its keys and what was done on the way."""

    source: str                                     # "timm", "hf" or "torchvision"
    notes: list[str] = field(default_factory=list)  # unwrapping, prefixes, dropped buffers, a folded channel flip


# ---------------------------------------------------------------------------------------------------
# Reading a file into a flat {name: tensor} dict
# ---------------------------------------------------------------------------------------------------

def weights_file(path: Path) -> Path:
    """`path` itself, or inside a folder (as save_pretrained writes it) model.safetensors / pytorch_model.bin."""
    path = Path(path)
    if path.is_dir():
        found = next((path / name for name in FOLDER_FILES if (path / name).is_file()), None)
        if found is None:
            sharded = " (sharded checkpoints are not supported)" if any(path.glob("*.index.json")) else ""
            raise WeightsError(f"folder {path} holds none of {', '.join(FOLDER_FILES)}{sharded}")
        return found
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    return path


def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], list[str]]:
    """Tensors from a .safetensors file or a torch checkpoint loaded with weights_only=True, unwrapped
    from a training checkpoint's dict and stripped of wrapper prefixes; plus notes saying what was done."""
    path = weights_file(path)
    notes: list[str] = []
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign files raise many kinds of errors; all mean one thing
        raise WeightsError(f"cannot read weights {path}: {type(e).__name__}: {first_line(e)}"
                           " (expected .safetensors or a PyTorch state dict)") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            notes.append(f"state dict read from the checkpoint's '{key}' entry")
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors")
    state, stripped = strip_prefixes(state)
    if stripped:
        notes.append(f"key prefix {''.join(stripped)!r} removed")
    return state, notes


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint, unwrapped and without wrapper prefixes (see `read_checkpoint`)."""
    return read_checkpoint(path)[0]


def strip_prefixes(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Remove PREFIXES shared by every key, repeatedly (`module.model.` too); returns what was removed."""
    stripped = []
    while True:
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state, stripped
        state = {k[len(prefix):]: v for k, v in state.items()}
        stripped.append(prefix)


# ---------------------------------------------------------------------------------------------------
# Which rename table
# ---------------------------------------------------------------------------------------------------

def model_family(model: nn.Module) -> str | None:
    """The family of one of our models ("mobilevit", "swin": its config says), None for any other module."""
    return getattr(getattr(model, "cfg", None), "family", None)


def choose_table(state: dict[str, Tensor], model: nn.Module, model_name: str, path: Path,
                 weights_format: str | None = None) -> RenameTable:
    """The table named by `weights_format`, else the one whose signature key the checkpoint has, else
    ours (timm) when any key is one of the model's; anything else is a WeightsError naming what was seen."""
    family = model_family(model)
    if weights_format is not None:
        source = weights_format.value if isinstance(weights_format, WeightsFormat) else str(weights_format)
        if source not in WEIGHTS_FORMATS:
            raise WeightsError(f"unknown weights format '{source}' ({did_you_mean(source, WEIGHTS_FORMATS)})")
        table = table_for(source, family)
        if table is None:
            have = ", ".join(t.family for t in FOREIGN_TABLES if t.source == source)
            raise WeightsError(f"--weights-format {source} has no layout for {model_name} "
                               f"({family or type(model).__name__}); {source} covers: {have}")
        return table
    detected = next((t for t in FOREIGN_TABLES if t.matches(state)), None)
    if detected is not None:
        if detected.family != family:
            raise WeightsError(f"{Path(path).name} holds {detected.description} weights; "
                               f"{model_name} is a {family or type(model).__name__} model")
        return detected
    own = model.state_dict()
    if any(k in own for k in state):
        return TIMM
    example = ", ".join(sorted(state)[:2])
    raise WeightsError(f"cannot tell which layout {Path(path).name} uses: none of its {len(state)} keys "
                       f"(e.g. {example}) names a tensor of {model_name} as timm, Hugging Face or torchvision "
                       f"do; name it with --weights-format {'|'.join(WEIGHTS_FORMATS)}")


# ---------------------------------------------------------------------------------------------------
# Translating and loading
# ---------------------------------------------------------------------------------------------------

def translate(state: dict[str, Tensor], table: RenameTable, own: dict[str, Tensor],
              model_label: str) -> tuple[dict[str, Tensor], list[str]]:
    """Our state dict from a foreign one, strictly: every tensor of ours found with its shape, every
    foreign tensor used (derived buffers excepted). Raises WeightMismatchError listing, in the
    checkpoint's own names, the keys missing, the keys left over and the shapes that differ."""
    notes = []
    state = {table.normalize(k): v for k, v in state.items()}
    derived = {k for k in state if table.is_derived(k)}
    if derived:
        kinds = sorted({k.rsplit(".", 1)[-1] for k in derived})
        notes.append(f"{len(derived)} buffers derived from the config ignored ({', '.join(kinds)})")
    state = {k: v for k, v in state.items() if k not in derived}

    loaded, used, missing, shapes, resized = {}, set(), [], [], []
    for key, target in own.items():
        names = table.foreign_names(key)
        present = [n for n in names if n in state]
        used.update(present)
        if len(present) < len(names):
            if not key.endswith("num_batches_tracked"):     # older BatchNorms did not save it
                missing += [n for n in names if n not in state]
            continue
        part_shape = (target.shape[0] // len(names), *target.shape[1:]) if len(names) > 1 else tuple(target.shape)
        wrong = [f"{n} {tuple(state[n].shape)} vs {part_shape}" for n in names if tuple(state[n].shape) != part_shape]
        if wrong and is_bias_table_for_another_window(key, state[names[0]], target):
            old, new = window_of_table(state[names[0]]), window_of_table(target)
            loaded[key] = resize_relative_position_bias(state[names[0]], new)
            resized.append(f"{old}->{new}")
            continue
        if wrong:
            shapes += wrong
            continue
        loaded[key] = torch.cat([state[n] for n in names]) if len(names) > 1 else state[names[0]]
    unexpected = sorted(set(state) - used)
    if missing or unexpected or shapes:
        raise WeightMismatchError(model_label, sorted(missing), unexpected, sorted(shapes))
    if resized:
        notes.append(resized_tables_note(resized))
    return loaded, notes


def is_bias_table_for_another_window(key: str, theirs: Tensor, ours: Tensor) -> bool:
    """A Swin relative position bias table with our number of heads, made for another window side."""
    if not key.endswith("relative_position_bias_table") or theirs.dim() != 2 or theirs.shape[1] != ours.shape[1]:
        return False
    side = int(round(theirs.shape[0] ** 0.5))
    return side * side == theirs.shape[0] and side % 2 == 1


def resized_tables_note(changes: list[str]) -> str:
    """One line for the notes: which windows the tables were resized between, and what that means."""
    counts: dict[str, int] = {}
    for change in changes:
        counts[change] = counts.get(change, 0) + 1
    detail = ", ".join(f"window {c} in {n} block{'s' if n > 1 else ''}" for c, n in counts.items())
    return (f"Swin relative position bias tables resized bicubically to this input size's windows ({detail}), "
            "as the Swin authors do before fine-tuning at another size: accuracy can drop until the model "
            "is fine-tuned at this size; parity is against this resized PyTorch model")


def flips_channels(table: RenameTable, path: Path) -> tuple[bool, str | None]:
    """Whether the source fed its model BGR. Hugging Face's MobileViT processor does unless the
    preprocessor_config.json saved beside the weights says `do_flip_channel_order: false`."""
    if table.bgr_stem is None:
        return False, None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    config = folder / PROCESSOR_CONFIG
    if not config.is_file():
        return True, None
    if read_json(config).get("do_flip_channel_order", True):
        return True, None
    return False, f"{config.name} beside the weights sets do_flip_channel_order false: the model takes RGB as trained"


def head_classes(state: dict[str, Tensor], family: str | None,
                 weights_format: str | None = None) -> tuple[str, int] | None:
    """(the checkpoint's key of its classifier weight, its rows: the class count), found under the name
    each candidate layout gives our `HEAD` (the one `weights_format` names, else those whose signature the
    checkpoint has, then ours); None when no layout's head is there (the strict load says what is wrong)."""
    source = getattr(weights_format, "value", weights_format)
    tables = ([table_for(source, family)] if source is not None else
              [t for t in FOREIGN_TABLES if t.family == family and t.matches(state)] + [TIMM])
    for table in filter(None, tables):
        spelled = {table.normalize(key): key for key in state}
        for name in table.foreign_names(HEAD):
            key = spelled.get(name)
            if key is not None and state[key].dim() == 2:
                return key, int(state[key].shape[0])
    return None


def load_weights(model: nn.Module, path: Path, model_name: str, weights_format: str | None = None) -> LoadReport:
    """Load `path` into `model` strictly (`load_state`)."""
    state, notes = read_checkpoint(path)
    return load_state(model, state, notes, path, model_name, weights_format)


def load_state(model: nn.Module, state: dict[str, Tensor], notes: list[str], path: Path, model_name: str,
               weights_format: str | None = None) -> LoadReport:
    """Load a checkpoint's tensors (`read_checkpoint` of `path`, with its notes) into `model` strictly
    through the rename table of its source (`weights_format`, or detected from the keys): any missing
    key, unexpected key or shape mismatch is an error. A source that fed its model BGR gets the channel
    flip folded into the stem conv, so the model takes RGB."""
    notes = list(notes)
    table = choose_table(state, model, model_name, path, weights_format)
    label = model_name if table is TIMM else f"{model_name} (keys read as {table.description})"
    own = model.state_dict()
    loaded, translate_notes = translate(state, table, own, label)
    if table is not TIMM:
        notes.insert(0, f"weights read as {table.description} ({table.source}) and renamed to mvdeploy's")
    notes += translate_notes
    flip, flip_note = flips_channels(table, path)
    if flip:
        loaded[table.bgr_stem] = loaded[table.bgr_stem].flip(1)    # [out, in=BGR, k, k] -> [out, in=RGB, k, k]
        notes.append(CHANNEL_FLIP_NOTE)
    elif flip_note:
        notes.append(flip_note)
    with torch.no_grad():
        for key, value in loaded.items():
            own[key].copy_(value.to(own[key].dtype))
    return LoadReport(table.source, notes)


def foreign_state_dict(model: nn.Module, table: RenameTable) -> dict[str, Tensor]:
    """`model`'s tensors as `table`'s source names them (the inverse of loading, flip included):
    what that source would have saved. Derived buffers are not written. Round-trip tests use it."""
    out = {}
    for key, value in model.state_dict().items():
        if key == table.bgr_stem:
            value = value.flip(1)
        names = table.foreign_names(key)
        parts = value.chunk(len(names)) if len(names) > 1 else (value,)
        for name, part in zip(names, parts):
            out[name] = part.clone()
    return out
