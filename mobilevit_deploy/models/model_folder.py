"""What a checkpoint's folder says besides the weights, as Hugging Face's `save_pretrained` writes it:
which built-in model (config.json), the class names (its id2label) and the preprocessing
(preprocessor_config.json); and how that meets the user's flags.

A flag wins where it can (`--image-size`, `--labels`); a flag that contradicts the folder or the weights
(a model name, `--num-classes`) is one `WeightsConflictError` line naming both. The class count is the
weights' own: their classifier's rows (`weights.head_classes`), for a bare timm-style checkpoint too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsConflictError, WeightsError
from .hf_config import describe_config, labels_of
from .hf_processor import PROCESSOR_CONFIG, Processor, read_json, read_processor

CONFIG = "config.json"          # the model's config, beside the weights


@dataclass(frozen=True)
class ModelFolder:
    """The facts of a weights file's folder; a field is None when the folder does not say."""

    folder: Path
    model: str | None                   # the built-in model config.json describes
    labels: tuple[str, ...] | None      # id2label's names in index order
    image_size: int | None              # the processor's crop, else config.json's image_size
    processor: Processor | None         # preprocessor_config.json
    notes: tuple[str, ...]              # what was read, one line each

    @property
    def config(self) -> Path:
        return self.folder / CONFIG


def read_model_folder(weights: Path) -> ModelFolder | None:
    """The folder of `weights` (the folder itself, or a file's parent) when it holds a config.json or a
    preprocessor_config.json; None for a bare checkpoint."""
    weights = Path(weights)
    folder = weights if weights.is_dir() else weights.parent
    config_path, processor_path = folder / CONFIG, folder / PROCESSOR_CONFIG
    if not config_path.is_file() and not processor_path.is_file():
        return None
    notes, model, labels, size, processor = [], None, None, None, None
    if config_path.is_file():
        config = read_json(config_path)
        described = describe_config(config, config_path)
        model, size, labels = described.model, described.image_size, labels_of(config, config_path)
        notes.append(described.description)
    if processor_path.is_file() and _gives_sizes(read_json(processor_path)):
        processor = read_processor(processor_path)
        size = processor.preprocess.crop
        notes.append(processor.description)
    return ModelFolder(folder, model, labels, size, processor, tuple(notes))


def _gives_sizes(config: dict) -> bool:
    """A processor file that names the input size (a file holding only do_flip_channel_order does not)."""
    return config.get("size") is not None or config.get("crop_size") is not None


def model_name(given: str | None, folder: ModelFolder | None) -> str | None:
    """The model to build: the folder's, unless a name was given; a name that is not the folder's is refused."""
    if folder is None or folder.model is None:
        return given
    if given is not None and given != folder.model:
        raise WeightsConflictError(f"model {given} conflicts with {folder.config}, which describes {folder.model}")
    return folder.model


def class_count(given: int | None, head: tuple[str, int] | None,
                folder: ModelFolder | None) -> tuple[int | None, str | None]:
    """(the class count, a note saying where it came from): the weights' head `(key, rows)` decides;
    `--num-classes` (`given`) that differs from it, or an id2label of another length, is refused."""
    if head is None:
        return given, None
    key, rows = head
    if given is not None and given != rows:
        raise WeightsConflictError(f"--num-classes {given} conflicts with the weights: "
                                   f"their head {key} has {rows} classes")
    labels = folder.labels if folder is not None else None
    if labels is not None and len(labels) != rows:
        raise WeightsError(f"{folder.config}'s id2label names {len(labels)} classes; "
                           f"the weights' head {key} has {rows}")
    if labels is None:
        return rows, f"{rows} classes from the weights' head ({key}); no class names"
    shown = ", ".join(labels[:5]) + (f", ... ({len(labels)} in all)" if len(labels) > 5 else "")
    return rows, f"{rows} classes from the weights' head ({key}); labels from {CONFIG}'s id2label: {shown}"
