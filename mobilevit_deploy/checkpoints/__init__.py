"""Reference checkpoints shipped inside the package: `REFERENCE_CHECKPOINTS` (model name -> checkpoint).

No model hub is reachable where mvdeploy is built, so `scripts/train_digits.py` trains these on
scikit-learn's handwritten digits (`mobilevit_deploy.digits`). They are demo weights (ten digit
classes at 64x64, not ImageNet) and the default of `make demo` and of `mvdeploy convert` without
--weights for their models. Each file <name>.safetensors has a model card: <name>.md for people,
<name>.json for programs (data, split, preprocessing, training, test accuracy, environment).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
DIGIT_LABELS = tuple(str(d) for d in range(10))    # class index i is the digit i


@dataclass(frozen=True)
class ReferenceCheckpoint:
    model: str                          # registry name of the model the weights are for
    path: Path                          # the .safetensors file
    card: Path                          # the model card, Markdown; its facts are in the .json beside it
    image_size: int                     # the input side it was trained at
    fixed_size_reason: str | None       # why the weights fit no other side; None: any side the model takes
    num_classes: int = 10
    labels: tuple[str, ...] = DIGIT_LABELS

    @property
    def name(self) -> str:
        return self.path.stem           # "mobilevit_xxs_digits"

    @property
    def facts(self) -> dict:
        """The machine-readable model card."""
        return json.loads(self.path.with_suffix(".json").read_text())

    def read(self, split: str, preprocess, count: int | None = None, seed: int = 0):
        """Images of the checkpoint's own data, preprocessed: "train" for calibration, "test" (held out)
        for parity and evaluation. Returns LoadedImages (images, labels, source)."""
        from ..digits import read_digits
        loaded = read_digits(split, preprocess)
        return loaded if count is None else loaded.take(count, seed)

    def shard(self, split: str, count: int | None = None, seed: int = 0):
        """The same images as `read(split, ..., count, seed)`, named rather than decoded: (source, a
        shard that `read`s them where it runs), for the report's evaluation."""
        from ..digits import digits_shard
        return digits_shard(split, count, seed)

    def describe(self) -> str:
        """One line for reports: 'reference:mobilevit_xxs_digits (digits 64x64, 98.9% test)'."""
        accuracy = self.facts["evaluation"]["accuracy"]
        return f"reference:{self.name} (digits {self.image_size}x{self.image_size}, {accuracy:.1%} test)"


def _digits_checkpoint(model: str, image_size: int, fixed_size_reason: str | None = None) -> ReferenceCheckpoint:
    stem = HERE / f"{model}_digits"
    return ReferenceCheckpoint(model, stem.with_suffix(".safetensors"), stem.with_suffix(".md"),
                               image_size, fixed_size_reason)


REFERENCE_CHECKPOINTS: dict[str, ReferenceCheckpoint] = {
    "mobilevit_xxs": _digits_checkpoint("mobilevit_xxs", 64),
    # at another side its windows follow the side and its bias tables are resized (models/swin.py)
    "swin_micro": _digits_checkpoint("swin_micro", 64),
}
