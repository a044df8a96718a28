"""The Core ML target's own options (ExportSpec.options), validated once when they are built."""
from __future__ import annotations

from dataclasses import dataclass, field

from mobilevit_deploy.errors import OptionsError
from mobilevit_deploy.spec import Preprocess

IOS_VERSIONS = (16, 17, 18)


@dataclass(frozen=True)
class CoreMLOptions:
    """Build with TARGET.options(**values); a name it does not have is an OptionsError."""

    ios: int = 17                            # minimum deployment target: 16 | 17 | 18
    image_input: bool = False                # a Core ML image input (RGB, scale 1/255), mean/std applied inside
    preprocess: dict | None = None           # {"mean": [3], "std": [3], ...} or a Preprocess; default: the spec's
    labels: tuple[str, ...] | None = None    # a classifier with these labels (softmax inside, logits kept)
    metadata: dict = field(default_factory=dict)  # author/license/version/short_description, else user metadata
    weight_threshold: int = 2048             # smallest weight tensor (elements) that gets compressed
    block_size: int = 32                     # int4 block size along the input channels

    def __post_init__(self):
        set_ = object.__setattr__            # frozen: normalize the given forms once, here
        set_(self, "ios", int(self.ios))
        if self.ios not in IOS_VERSIONS:
            raise OptionsError(f"coreml: --ios {self.ios} is not supported "
                               f"(choose {', '.join(map(str, IOS_VERSIONS))})")
        if isinstance(self.preprocess, Preprocess):
            set_(self, "preprocess", self.preprocess.to_dict())
        set_(self, "image_input", bool(self.image_input))
        if self.labels is not None:
            set_(self, "labels", tuple(str(label) for label in self.labels))
            if not self.labels:
                raise OptionsError("coreml: labels is an empty list")
        set_(self, "metadata", dict(self.metadata or {}))
        set_(self, "weight_threshold", int(self.weight_threshold))
        set_(self, "block_size", int(self.block_size))
