"""Four multi-exit DNN workloads and their measured per-layer profiles.

The networks follow the layer shapes of AlexNet, VGG-16, ResNet-50 and MobileNetV2 (ImageNet,
224x224). Each backbone is a list of *units*: the points between units are the candidate
partition points. Side-branch exits hang after chosen units. FLOPs and tensor sizes are measured
by forward hooks on the real layers, run on the meta device (shapes only, no weights in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from edgeai_repro.core.errors import ConfigError


class Add(nn.Module):
    """Residual addition as a module, so the FLOP hooks see it."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = mid * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.add, self.act = Add(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.add(self.body(x), self.short(x)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6()]
        layers += [
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
            nn.BatchNorm2d(hid),
            nn.ReLU6(),
            nn.Conv2d(hid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.add(y, x) if self.residual else y


def _conv(cin: int, cout: int, k: int, s: int = 1, p: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.ReLU())


def _branch(channels: int, classes: int) -> nn.Module:
    # A light exit classifier: 1x1 conv bottleneck, global pooling, linear layer.
    width = min(channels, 128)
    return nn.Sequential(
        nn.Conv2d(channels, width, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, classes),
    )


class MultiExitNet(nn.Module):
    """A backbone cut into units, with side-branch exits after some units.

    `exits[u]` is the branch after unit index u (0-based); the last unit always ends in the
    network's own classifier and counts as the final exit (no branch).
    """

    def __init__(
        self, units: list[tuple[str, nn.Module]], exit_after: list[int], classes: int = 1000
    ) -> None:
        super().__init__()
        self.unit_names = [n for n, _ in units]
        self.units = nn.ModuleList([m for _, m in units])
        self.exit_after = sorted(exit_after)
        self.branches = nn.ModuleDict()
        self.classes = classes

    def build_branches(self, channels_after: dict[int, int]) -> None:
        for u in self.exit_after:
            self.branches[str(u)] = _branch(channels_after[u], self.classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, unit in enumerate(self.units):
            x = unit(x)
            if str(i) in self.branches:
                outs.append(self.branches[str(i)](x))
        outs.append(x)
        return outs


def alexnet() -> MultiExitNet:
    units = [
        ("conv1", _conv(3, 64, 11, 4, 2)),
        ("pool1", nn.MaxPool2d(3, 2)),
        ("conv2", _conv(64, 192, 5, 1, 2)),
        ("pool2", nn.MaxPool2d(3, 2)),
        ("conv3", _conv(192, 384, 3, 1, 1)),
        ("conv4", _conv(384, 256, 3, 1, 1)),
        ("conv5", _conv(256, 256, 3, 1, 1)),
        ("pool5", nn.MaxPool2d(3, 2)),
        ("fc6", nn.Sequential(nn.Flatten(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU())),
        ("fc7", nn.Sequential(nn.Linear(4096, 4096), nn.ReLU())),
        ("fc8", nn.Linear(4096, 1000)),
    ]
    return MultiExitNet(units, exit_after=[1, 3, 7])


def vgg16() -> MultiExitNet:
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    units: list[tuple[str, nn.Module]] = []
    cin, block, idx = 3, 1, 1
    for v in plan:
        if v == "M":
            units.append((f"pool{block}", nn.MaxPool2d(2, 2)))
            block, idx = block + 1, 1
        else:
            units.append((f"conv{block}_{idx}", _conv(cin, int(v), 3, 1, 1)))
            cin, idx = int(v), idx + 1
    units += [
        ("fc6", nn.Sequential(nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU())),
        ("fc7", nn.Sequential(nn.Linear(4096, 4096), nn.ReLU())),
        ("fc8", nn.Linear(4096, 1000)),
    ]
    names = [n for n, _ in units]
    return MultiExitNet(units, exit_after=[names.index("pool2"), names.index("pool3"), names.index("pool4")])


def resnet50() -> MultiExitNet:
    units: list[tuple[str, nn.Module]] = [
        (
            "stem",
            nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
            ),
        )
    ]
    cin, ends = 64, []
    for stage, (mid, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
        for b in range(blocks):
            units.append((f"layer{stage}.{b}", Bottleneck(cin, mid, stride if b == 0 else 1)))
            cin = mid * 4
        ends.append(len(units) - 1)
    units.append(("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))))
    return MultiExitNet(units, exit_after=ends[:3])


def mobilenetv2() -> MultiExitNet:
    units: list[tuple[str, nn.Module]] = [
        ("stem", nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()))
    ]
    cin = 32
    for t, c, n, s in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]:
        for i in range(n):
            units.append((f"block{len(units)}", InvertedResidual(cin, c, s if i == 0 else 1, t)))
            cin = c
    units.append(
        ("conv_last", nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()))
    )
    units.append(("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000))))
    # Exits after the 32-, 64- and 160-channel stages.
    return MultiExitNet(units, exit_after=[6, 10, 16])


BUILDERS = {"alexnet": alexnet, "vgg16": vgg16, "resnet50": resnet50, "mobilenetv2": mobilenetv2}


@dataclass(frozen=True)
class Profile:
    """Measured cost of one multi-exit network for a 3x224x224 input.

    unit_flops[u] and unit_out_elems[u] belong to unit u; exit_unit[e] is the unit after which
    exit e sits (the last exit is the final classifier), branch_flops[e] its side-branch cost.
    """

    name: str
    unit_names: tuple[str, ...]
    unit_flops: tuple[float, ...]
    unit_out_elems: tuple[int, ...]
    input_elems: int
    exit_unit: tuple[int, ...]
    branch_flops: tuple[float, ...]

    @property
    def total_flops(self) -> float:
        return float(sum(self.unit_flops))


def _leaf_flops(module: nn.Module, inputs: tuple, output: torch.Tensor) -> float:
    out = output.numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_out = 2 * (module.in_channels // module.groups) * kh * kw
        return float(out * per_out + (out if module.bias is not None else 0))
    if isinstance(module, nn.Linear):
        return float(
            2 * module.in_features * module.out_features
            + (module.out_features if module.bias is not None else 0)
        )
    if isinstance(module, nn.MaxPool2d):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        return float(out * k * k)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return float(inputs[0].numel())
    if isinstance(module, (nn.BatchNorm2d,)):
        return float(2 * out)
    if isinstance(module, (nn.ReLU, nn.ReLU6, Add)):
        return float(out)
    return 0.0


def measure(net: MultiExitNet, image: tuple[int, int, int] = (3, 224, 224)) -> Profile:
    """Run one forward pass with hooks and return per-unit FLOPs and output sizes (builds the exits)."""
    counter = {"flops": 0.0}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        counter["flops"] += _leaf_flops(module, inputs, output)

    def counted(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
        counter["flops"] = 0.0
        try:
            return module(x), counter["flops"]
        finally:
            for h in handles:
                h.remove()

    device = next(net.parameters()).device  # meta for profiling; a real device in tests
    x = torch.zeros(1, *image, device=device)
    unit_flops, unit_out, at_exit = [], [], {}
    for i, unit in enumerate(net.units):
        x, flops = counted(unit, x)
        unit_flops.append(flops)
        unit_out.append(x.numel())
        if i in net.exit_after:
            at_exit[i] = x
    with torch.device(device):
        net.build_branches({u: t.shape[1] for u, t in at_exit.items()})
    branch_flops = [counted(net.branches[str(u)], at_exit[u])[1] for u in net.exit_after]
    return Profile(
        name="",
        unit_names=tuple(net.unit_names),
        unit_flops=tuple(unit_flops),
        unit_out_elems=tuple(unit_out),
        input_elems=int(torch.Size(image).numel()),
        exit_unit=tuple(net.exit_after) + (len(net.units) - 1,),
        branch_flops=tuple(branch_flops) + (0.0,),
    )


@cache
def n_exits(name: str) -> int:
    """How many exits workload `name` has (its side branches and the final one), without the forward
    pass that `profile` runs: validation needs only this, and every launch validates."""
    if name not in BUILDERS:
        raise ConfigError(f"aeria workload {name!r} is unknown; use one of {', '.join(sorted(BUILDERS))}.")
    with torch.device("meta"):
        return len(BUILDERS[name]().exit_after) + 1


@cache
def profile(name: str) -> Profile:
    """The measured profile of workload `name` (cached per process)."""
    if name not in BUILDERS:
        raise ConfigError(f"aeria workload {name!r} is unknown; use one of {', '.join(sorted(BUILDERS))}.")
    with torch.device("meta"):
        net = BUILDERS[name]()
    p = measure(net)
    return Profile(
        name, p.unit_names, p.unit_flops, p.unit_out_elems, p.input_elems, p.exit_unit, p.branch_flops
    )
