"""The ExecuTorch target as a package: target.py (the Target), export.py (torch.export -> XNNPACK-lowered
.pte, one recipe per precision). The .pte format itself is read in mobilevit_deploy/formats/pte.py."""
from .target import TARGET, ExecuTorchOptions, ExecuTorchTarget

__all__ = ["TARGET", "ExecuTorchTarget", "ExecuTorchOptions"]
