"""Train a reference checkpoint on scikit-learn's handwritten digits and write it with its model card.

Usage: python scripts/train_digits.py --model mobilevit_xxs|swin_micro [--epochs N] [--seed S] [--out DIR]

Writes <out>/<model>_digits.safetensors (the eval-mode state dict, BatchNorm statistics included),
<model>_digits.json (the facts) and <model>_digits.md (the model card). The default <out> is the
package folder mobilevit_deploy/checkpoints, where `REFERENCE_CHECKPOINTS` finds them.

Deterministic on one machine and torch version: the split has a recorded seed, the init, shuffle and
augmentation draw from generators seeded with --seed, and the math runs on one thread; a rerun gives
bitwise the same tensors (the safetensors header may list them in another order). Training reads
the digits through the same Dataset / DataLoader / collate_skip path as calibration and evaluation
(`mobilevit_deploy.digits`); the test accuracy is measured on weights re-read from the written file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mobilevit_deploy import checkpoints, digits
from mobilevit_deploy.models import create_model, model_config
from mobilevit_deploy.models.weights import load_weights
from mobilevit_deploy.modelinfo import count_parameters

IMAGE_SIZE = 64       # the smallest side mobilevit_xxs takes (swin_micro trains at it too): short CPU epochs


@dataclass(frozen=True)
class Recipe:
    epochs: int                   # passes over the 1,347 training digits
    lr: float                     # AdamW peak learning rate, after the warmup
    weight_decay: float           # AdamW decay, on weight matrices and conv kernels only
    warmup_epochs: float          # linear warmup from 0, then cosine decay to 0
    batch_size: int = 32
    label_smoothing: float = 0.1
    max_shift: float = 0.06       # augmentation: random shift up to this fraction of the side (~half a digit pixel)
    max_degrees: float = 10.0     # augmentation: random rotation up to this many degrees
    max_scale: float = 0.10       # augmentation: random zoom by 1 +- this
    grad_clip: float = 1.0        # max global gradient norm


RECIPES: dict[str, Recipe] = {
    "mobilevit_xxs": Recipe(epochs=20, lr=2e-3, weight_decay=0.05, warmup_epochs=1),
    "swin_micro": Recipe(epochs=12, lr=1e-3, weight_decay=0.05, warmup_epochs=1),
}


def random_affine(x: Tensor, generator: torch.Generator, recipe: Recipe) -> Tensor:  # [B, 3, S, S]
    """Each image rotated, zoomed and shifted a little at random; pixels beyond the border repeat it.

    Applied to the preprocessed batch: resampling is a weighted mean with weights summing to 1, so it
    commutes with the per-channel mean/std and equals augmenting the [0, 1] image first.
    """
    def uniform(*shape: int) -> Tensor:                                 # in [-1, 1)
        return torch.rand(*shape, generator=generator) * 2 - 1

    batch = len(x)
    angle = uniform(batch) * math.radians(recipe.max_degrees)
    zoom = 1 + uniform(batch) * recipe.max_scale
    shift = uniform(batch, 2) * recipe.max_shift * 2                    # grid coordinates span 2 per side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], dim=1),
                         torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1)   # [B, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)     # [B, S, S, 2]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def optimizer_for(model: nn.Module, recipe: Recipe, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases, norms and position tables) with linear warmup and cosine decay per step."""
    def decays(name: str, p: nn.Parameter) -> bool:
        return p.ndim > 1 and not name.endswith("relative_position_bias_table")

    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW([{"params": [p for n, p in named if decays(n, p)], "weight_decay": recipe.weight_decay},
                                   {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}],
                                  lr=recipe.lr)
    warmup = max(1, round(recipe.warmup_epochs * steps / recipe.epochs))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(model: nn.Module, loader, recipe: Recipe, seed: int) -> list[dict]:
    """Train in place with a rich progress bar; -> one dict per epoch (loss and accuracy on augmented batches)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    steps = recipe.epochs * len(loader)
    optimizer, schedule = optimizer_for(model, recipe, steps)
    augment = torch.Generator().manual_seed(seed + 1)
    history = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("training", total=steps, loss="-")
        for epoch in range(recipe.epochs):
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0
            progress.update(task, description=f"epoch {epoch + 1}/{recipe.epochs}")
            for images, labels, _ in loader:                            # [B, 3, S, S], [B]
                logits = model(random_affine(images, augment, recipe))  # [B, 10]
                loss = F.cross_entropy(logits, labels, label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                optimizer.step()
                schedule.step()
                loss_sum += loss.item() * len(labels)
                correct += int((logits.argmax(dim=1) == labels).sum())
                seen += len(labels)
                progress.update(task, advance=1, loss=f"{loss.item():.3f}")
            history.append({"epoch": epoch + 1, "loss": round(loss_sum / seen, 4), "accuracy": round(correct / seen, 4)})
            progress.console.print(f"epoch {epoch + 1:>2}/{recipe.epochs}: loss {loss_sum / seen:.4f}, "
                                   f"augmented train accuracy {correct / seen:.2%}, {progress.tasks[0].elapsed:.0f} s")
    return history


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def per_class(labels: Tensor, predictions: Tensor) -> dict[str, float]:
    return {d: round(float((predictions[labels == i] == i).float().mean()), 4) for i, d in enumerate(digits.DIGIT_LABELS)}


def model_card(facts: dict) -> str:
    """The Markdown card, written from the same facts as the .json."""
    data, split, pre, train, ev = facts["data"], facts["split"], facts["preprocessing"], facts["training"], facts["evaluation"]
    env = facts["environment"]
    classes = ", ".join(f"{d}: {a:.0%}" for d, a in ev["per_class"].items())
    threads = f'{train["threads"]} thread{"s" if train["threads"] > 1 else ""}'
    return f"""# {facts["checkpoint"]}

`{facts["model"]}` ({facts["parameters"]:,} parameters, {facts["num_classes"]} classes) trained from a seeded
random init on scikit-learn's handwritten digits. Demo weights for mvdeploy: they make conversion and
quantization checks meaningful on real images. They are not ImageNet weights.

| | |
|---|---|
| weights | `{facts["weights_file"]}` (sha256 `{facts["sha256"][:16]}...`) |
| labels | {", ".join(facts["labels"])} (class index i is the digit i) |
| fp32 test accuracy | **{ev["accuracy"]:.2%}** ({ev["correct"]}/{ev["total"]} test digits) |
| train accuracy | {ev["train_accuracy"]:.2%} (eval mode, no augmentation) |
| input | {pre["image_size"]}x{pre["image_size"]} RGB, {pre["interpolation"]}, mean {pre["mean"]}, std {pre["std"]} |

## Data
{data["source"]}: no download. Pixels: {data["pixels"]}.
Split: {split["method"]}, seed {split["seed"]}, test fraction {split["test_fraction"]}: {split["train"]} train,
{split["test"]} test images. Re-create it with `mobilevit_deploy.digits.digits_split(seed={split["seed"]})`;
write it as PNG files with `export_digits_imagefolder(dir, split="test")`.

## Preprocessing
{pre["steps"]}

## Training
{train["epochs"]} epochs, batch {train["batch_size"]}, {train["optimizer"]}, {train["schedule"]},
label smoothing {train["label_smoothing"]}, gradient clipping at norm {train["grad_clip"]}.
Augmentation: {train["augmentation"]}.
Seed {train["seed"]}, {threads}, {train["seconds"]:.0f} s of training
({train["seconds_total"]:.0f} s with data and evaluation) on {env["machine"]}.
Command: `{facts["created_by"]}`

## Evaluation (fp32, test split)
Accuracy {ev["accuracy"]:.2%} ({ev["correct"]}/{ev["total"]}), measured on the weights re-read from the written file.
Per class: {classes}.

## Environment
torch {env["torch"]}, scikit-learn {env["scikit-learn"]}, numpy {env["numpy"]}, Python {env["python"]}; {facts["date"]}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, help="default: the model's recipe")
    parser.add_argument("--seed", type=int, default=0, help="init, shuffle and augmentation seed")
    parser.add_argument("--split-seed", type=int, default=digits.SPLIT_SEED)
    parser.add_argument("--out", type=Path, default=Path(checkpoints.__file__).parent)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on the shared 2-core machine one thread ran several times faster than two")
    args = parser.parse_args()

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    recipe = RECIPES[args.model] if args.epochs is None else replace(RECIPES[args.model], epochs=args.epochs)
    config = model_config(args.model)
    pre = config.preprocess.with_size(IMAGE_SIZE)
    split = digits.digits_split(args.split_seed)
    model = create_model(args.model, num_classes=len(digits.DIGIT_LABELS), image_size=IMAGE_SIZE, seed=args.seed)
    loader = digits.digits_loader(split.train, pre, recipe.batch_size, shuffle=True, seed=args.seed, drop_last=True)
    print(f"{args.model}: {count_parameters(model):,} parameters, {len(split.train)} train / {len(split.test)} test "
          f"digits at {IMAGE_SIZE}x{IMAGE_SIZE}, {recipe.epochs} epochs of {len(loader)} steps")

    train_start = time.perf_counter()
    history = train(model, loader, recipe, args.seed)
    train_seconds = time.perf_counter() - train_start

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.model}_digits"
    weights = stem.with_suffix(".safetensors")
    from safetensors.torch import save_file
    state = {k: v.detach().clone().contiguous() for k, v in model.eval().state_dict().items()}
    save_file(state, str(weights), metadata={"model": args.model, "image_size": str(IMAGE_SIZE),
                                             "labels": ",".join(digits.DIGIT_LABELS), "card": stem.with_suffix(".md").name})

    reloaded = create_model(args.model, num_classes=len(digits.DIGIT_LABELS), image_size=IMAGE_SIZE, seed=args.seed + 1)
    load_weights(reloaded, weights, args.model)
    test = digits.read_digits("test", pre, args.split_seed)
    correct, predictions = digits.evaluate(reloaded, test.images, test.labels)
    train_images = digits.read_digits("train", pre, args.split_seed)
    train_correct, _ = digits.evaluate(reloaded, train_images.images, train_images.labels)
    print(f"test accuracy {correct / len(test.labels):.2%} ({correct}/{len(test.labels)}), "
          f"train accuracy {train_correct / len(train_images.labels):.2%}, training {train_seconds:.0f} s")

    import numpy
    import sklearn
    facts = {
        "checkpoint": stem.name,
        "model": args.model,
        "weights_file": weights.name,
        "sha256": sha256(weights),
        "bytes": weights.stat().st_size,
        "parameters": count_parameters(model),
        "num_classes": len(digits.DIGIT_LABELS),
        "labels": list(digits.DIGIT_LABELS),
        "data": {"source": digits.DIGITS_SOURCE, "images": len(split.train) + len(split.test),
                 "pixels": "levels 0..16 -> uint8 round(level * 255 / 16), the 8x8 gray image a PNG stores"},
        "split": {"method": "sklearn.model_selection.train_test_split, stratified by class", "seed": split.seed,
                  "test_fraction": split.test_fraction, "train": len(split.train), "test": len(split.test)},
        "preprocessing": {"image_size": IMAGE_SIZE, "resize": pre.resize, "crop": pre.crop,
                          "interpolation": f"{pre.interpolation} (PIL)", "mean": list(pre.mean), "std": list(pre.std),
                          "steps": f"8x8 gray -> RGB (gray replicated) -> {pre.interpolation} resize (PIL) to "
                                   f"{pre.resize}x{pre.resize} -> center crop {pre.crop}x{pre.crop} -> [0, 1] -> "
                                   f"(x - mean) / std: the model's own Preprocess, as for any image file"},
        "training": {**{k: v for k, v in asdict(recipe).items() if not k.startswith("max_")},
                     "optimizer": f"AdamW (lr {recipe.lr}, weight decay {recipe.weight_decay} on weights only)",
                     "schedule": f"per-step linear warmup over {recipe.warmup_epochs} epoch(s), then cosine to 0",
                     "augmentation": f"random rotation +-{recipe.max_degrees:g} deg, zoom 1+-{recipe.max_scale:g}, "
                                     f"shift +-{recipe.max_shift:.0%} of the side, border pixels repeated",
                     "seed": args.seed, "threads": args.threads, "seconds": round(train_seconds, 1),
                     "seconds_total": round(time.perf_counter() - start, 1), "history": history},
        "evaluation": {"split": "test", "precision": "fp32", "accuracy": round(correct / len(test.labels), 4),
                       "correct": correct, "total": len(test.labels),
                       "train_accuracy": round(train_correct / len(train_images.labels), 4),
                       "per_class": per_class(test.labels, predictions)},
        "environment": {"torch": torch.__version__, "scikit-learn": sklearn.__version__, "numpy": numpy.__version__,
                        "python": platform.python_version(), "machine": f"{platform.machine()} CPU"},
        "created_by": " ".join(["python scripts/train_digits.py", *sys.argv[1:]]),
        "date": date.today().isoformat(),
    }
    stem.with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n")
    stem.with_suffix(".md").write_text(model_card(facts))
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB), {stem.with_suffix('.json').name}, {stem.with_suffix('.md').name}")


if __name__ == "__main__":
    main()
