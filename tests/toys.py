"""The toy network and images that the Core ML, MIL and other target tests share: small enough to convert in
seconds, with every kernel family the real models use; and real digit images as files, for reports."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIZE = 32


class ToyNet(nn.Module):
    """Every kernel family the real models use, small: conv+BN+SiLU, LayerNorm, attention
    (matmul + softmax), exact GELU, bilinear upsampling, a linear head."""

    def __init__(self, chs: int = 16, num_classes: int = 10, heads: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, chs, 3, 2, 1, bias=False), nn.BatchNorm2d(chs), nn.SiLU())
        self.dw = nn.Sequential(nn.Conv2d(chs, chs, 3, 1, 1, groups=chs, bias=False), nn.BatchNorm2d(chs), nn.SiLU())
        self.norm = nn.LayerNorm(chs)
        self.qkv = nn.Linear(chs, 3 * chs)
        self.proj = nn.Linear(chs, chs)
        self.fc1, self.act, self.fc2 = nn.Linear(chs, 2 * chs), nn.GELU(), nn.Linear(2 * chs, chs)
        self.refine = nn.Sequential(nn.Conv2d(chs, chs, 3, 1, 1), nn.SiLU())
        self.head = nn.Linear(chs, num_classes)
        self.heads = heads

    def forward(self, x):                                              # [B, 3, H, W]
        x = self.dw(self.stem(x))                                      # [B, C, H/2, W/2]
        batch, chs, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)                          # [B, N, C]
        qkv = self.qkv(self.norm(tokens)).reshape(batch, -1, 3, self.heads, chs // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                 # 3 x [B, h, N, d]
        attn = (q @ k.transpose(-2, -1) * (chs // self.heads) ** -0.5).softmax(-1)
        tokens = tokens + self.proj((attn @ v).transpose(1, 2).reshape(batch, -1, chs))
        tokens = tokens + self.fc2(self.act(self.fc1(tokens)))
        x = tokens.transpose(1, 2).reshape(batch, chs, height, width)  # [B, C, H/2, W/2]
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # [B, C, H, W]
        return self.head(self.refine(x).mean((2, 3)))                  # [B, K]


def toy_net() -> nn.Module:
    """A seeded ToyNet with non-trivial BatchNorm statistics (so fusion and eps matter)."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ToyNet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(module.num_features, generator=gen) * 0.4 - 0.2)
    return model.eval()


def toy_images(n: int = 2, size: int = SIZE) -> np.ndarray:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1)).numpy()


def reference(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def convert(model: nn.Module, path, ios: int = 17, fp16: bool = False, size: int = SIZE):
    """The toy as an .mlpackage, made with coremltools directly (not through the target)."""
    import coremltools as ct

    example = torch.zeros(1, 3, size, size)
    mlmodel = ct.convert(
        torch.jit.trace(model, example), convert_to="mlprogram",
        inputs=[ct.TensorType(name="image", shape=example.shape, dtype=np.float32)],
        outputs=[ct.TensorType(name="logits", dtype=np.float32)],
        minimum_deployment_target={16: ct.target.iOS16, 17: ct.target.iOS17, 18: ct.target.iOS18}[ios],
        compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
    )
    mlmodel.save(str(path))
    return mlmodel


def digit_pngs(root, count: int, broken: int = 0) -> list[tuple[str, int]]:
    """`count` held-out digits as 8x8 PNGs in an ImageFolder tree under `root` (what the reference checkpoints
    read well), plus `broken` files that are not images (in class 3); -> [(path relative to root, digit)], the
    broken ones last: the lines of a listing file."""
    from mobilevit_deploy.digits import digit_image, digits_split

    test = digits_split().test
    rows = []
    for i in range(count):
        relative = f"{test.labels[i]}/d{i:03d}.png"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        digit_image(test.images[i]).save(root / relative)
        rows.append((relative, int(test.labels[i])))
    for i in range(broken):
        (root / "3").mkdir(parents=True, exist_ok=True)
        (root / f"3/broken{i}.png").write_bytes(b"not an image")
        rows.append((f"3/broken{i}.png", 3))
    return rows
