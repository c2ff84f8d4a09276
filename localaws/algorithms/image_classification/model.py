"""Networks (torch). Imported by training only: the server runs the exported ONNX graph.

- ``FastNet`` (our default, ``num_layers`` unset): a small fast-CIFAR style network. A frozen
  2x2 "patch-whitening" convolution whose filters come from the eigenvectors of the training
  patches' covariance (and their negatives), GELU, then three groups of
  conv3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv3x3 -> BatchNorm -> GELU, global max-pool
  and a bias-free linear head whose logits are scaled down.
- ``CifarResNet`` (``num_layers`` = 6n+2: 20, 32, 44, 56, 110, ...): the ResNet paper's CIFAR
  network, three stages of n basic blocks with 16/32/64 channels, projection shortcuts.
- ``ImageNetResNet`` (``num_layers`` in 18, 34, 50, 101, 152, 200): the ImageNet ResNets
  (basic blocks for 18/34, bottlenecks above). Images smaller than 64 px get a 3x3 stride-1
  stem without the max-pool instead of the 7x7 stride-2 stem.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .hyperparameters import IMAGENET_DEPTHS, Hyperparameters


class _ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=bn_momentum)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = self.act(self.bn1(x))
        return self.act(self.bn2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3,
                 widths: tuple[int, int, int] = (32, 64, 128), patch: int = 2,
                 logit_scale: float = 1 / 9, bn_momentum: float = 0.4,
                 dirac: bool = False) -> None:
        super().__init__()
        self.patch = patch
        n_whiten = 2 * in_channels * patch * patch
        self.whiten = nn.Conv2d(in_channels, n_whiten, patch, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        chans = (n_whiten, *widths)
        self.groups = nn.Sequential(*(_ConvGroup(chans[i], chans[i + 1], bn_momentum)
                                      for i in range(len(widths))))
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale
        if dirac:
            for m in self.modules():
                if isinstance(m, nn.Conv2d) and m is not self.whiten:
                    # Identity-like start on the first input channels.
                    w = m.weight.data
                    k = min(w.shape[0], w.shape[1])
                    w[:k, :k].add_(nn.init.dirac_(torch.empty_like(w[:k, :k])))

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the frozen first layer from (normalised) training images ``(N, C, H, W)``."""
        patches = F.unfold(images.float(), kernel_size=self.patch)  # N, C*p*p, L
        patches = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
        patches = patches - patches.mean(dim=0, keepdim=True)
        cov = patches.T @ patches / max(1, patches.shape[0] - 1)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        filters = eigvecs.T / torch.sqrt(eigvals.clamp_min(0) + eps)[:, None]
        filters = filters.reshape(-1, *self.whiten.weight.shape[1:]).float()
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        x = torch.amax(x, dim=(2, 3))
        return self.head(x) * self.logit_scale


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)
        self.short = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn3.weight)
        self.short = _shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.short(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        layers: list[nn.Module] = []
        cin = 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                layers.append(_Basic(cin, width, 2 if (stage > 0 and i == 0) else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)
        _init_convs(self)
        for m in self.modules():  # _init_convs must not undo the zero-init of residual BNs
            if isinstance(m, _Basic):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


_IMAGENET_BLOCKS = {
    18: (_Basic, (2, 2, 2, 2)),
    34: (_Basic, (3, 4, 6, 3)),
    50: (_Bottleneck, (3, 4, 6, 3)),
    101: (_Bottleneck, (3, 4, 23, 3)),
    152: (_Bottleneck, (3, 8, 36, 3)),
    200: (_Bottleneck, (3, 24, 36, 3)),
}


class ImageNetResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3,
                 small_input: bool = False) -> None:
        super().__init__()
        block, counts = _IMAGENET_BLOCKS[depth]
        if small_input:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(64), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3,
                                                bias=False),
                                      nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        layers: list[nn.Module] = []
        cin = 64
        for stage, (width, count) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
            for i in range(count):
                layers.append(block(cin, width, 2 if (stage > 0 and i == 0) else 1))
                cin = width * block.expansion
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)
        _init_convs(self)
        for m in self.modules():
            if isinstance(m, _Basic):
                nn.init.zeros_(m.bn2.weight)
            elif isinstance(m, _Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


def build(hp: Hyperparameters) -> nn.Module:
    channels, height, width = hp.image_shape
    if hp.num_layers is None:
        return FastNet(hp.num_classes, channels)
    if hp.num_layers in IMAGENET_DEPTHS:
        return ImageNetResNet(hp.num_layers, hp.num_classes, channels,
                              small_input=min(height, width) < 64)
    return CifarResNet(hp.num_layers, hp.num_classes, channels)


class Exported(nn.Module):
    """What ``model.onnx`` computes: raw pixels (0-255, float32, NCHW) -> probabilities."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("inv_std",
                             1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        x = (data * (1.0 / 255.0) - self.mean) * self.inv_std
        return torch.softmax(self.net(x), dim=1)
