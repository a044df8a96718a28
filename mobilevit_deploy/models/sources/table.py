"""A rename table: how one source names the tensors of one model family, as data.

Rules run on *our* key (timm's names) and build the source's key, so the same table serves both ways:
loading a foreign checkpoint (look each of our keys up under its foreign name) and writing one (the
round-trip tests). One of our tensors may be several foreign ones: a fused `attn.qkv` is three
separate query/key/value tensors in Hugging Face checkpoints, concatenated along the output axis.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

QKV = "{qkv}"          # in a rule's replacement: our fused qkv tensor is three tensors under these names
Replacement = str | Callable[[re.Match], str]   # as re.sub takes it; a function for index arithmetic


@dataclass(frozen=True)
class RenameTable:
    source: str                                   # the --weights-format name: "hf", "torchvision", "timm"
    family: str | None                            # the model family it fits (None: any, names as ours)
    description: str                              # what error messages and notes call this layout
    rules: tuple[tuple[str, Replacement], ...] = ()  # (regex on our key, replacement), each applied in order
    qkv_names: tuple[str, str, str] = ("", "", "")  # what replaces QKV for the query, key and value parts
    signature: str | None = None                  # regex some key of this layout matches (detection)
    derived: tuple[str, ...] = ()                 # regexes of foreign buffers computed from the config: dropped
    aliases: tuple[tuple[str, str], ...] = ()     # other spellings of the same layout, rewritten first
    bgr_stem: str | None = None                   # our key of the stem conv weight when the source feeds BGR

    def foreign_names(self, key: str) -> tuple[str, ...]:
        """The key(s) this source stores our tensor `key` under (three for a split qkv)."""
        for pattern, replacement in self.rules:
            key = re.sub(pattern, replacement, key)
        if QKV in key:
            return tuple(key.replace(QKV, name) for name in self.qkv_names)
        return (key,)

    def normalize(self, key: str) -> str:
        """A foreign key in this layout's canonical spelling (see `aliases`)."""
        for pattern, replacement in self.aliases:
            key = re.sub(pattern, replacement, key)
        return key

    def is_derived(self, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in self.derived)

    def matches(self, keys) -> bool:
        return self.signature is not None and any(re.search(self.signature, key) for key in keys)
