"""ResNet (bottleneck) architectures and their layer chains, torchvision's layout."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SpecError
from .layers import LayerDesc
from .transformer import Granularity

__all__ = ["ResNetSpec"]


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k


@dataclass(frozen=True)
class ResNetSpec:
    """A bottleneck ResNet: stem, four stages of blocks, global pool, classifier. Sizes are per
    sample (an image), so the workload's sequence length does not apply."""

    blocks: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    expansion: int = 4
    image: int = 224
    classes: int = 1000
    channels: int = 3

    def __post_init__(self) -> None:
        for name in ("blocks", "widths"):
            if not isinstance(getattr(self, name), tuple):
                raise SpecError(f"{name}: expected a list of whole numbers, got "
                                f"{getattr(self, name)!r}")
        if len(self.blocks) != len(self.widths) or not self.blocks:
            raise SpecError(f"blocks: expected one count per width {list(self.widths)}, "
                            f"got {list(self.blocks)}")
        for name, values in (("blocks", self.blocks), ("widths", self.widths)):
            if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
                raise SpecError(f"{name}: must be positive whole numbers, got {list(values)}")
        for name in ("expansion", "image", "classes", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SpecError(f"{name}: must be a positive whole number, got {value!r}")
        if self.image % 32:
            raise SpecError(f"image: must be a multiple of 32, got {self.image!r}")

    def params(self) -> int:
        return sum(layer.params for layer in self.layer_descs("op"))

    def active_params(self) -> int:
        return self.params()

    def layer_descs(self, granularity: Granularity = "block") -> list[LayerDesc]:
        """Block granularity: stem, each bottleneck block, head. Op granularity splits each
        block into its three convolutions (the downsample path rides with the first)."""
        if granularity not in ("block", "op"):
            raise SpecError(f"granularity: expected 'block' or 'op', got {granularity!r}")
        side = self.image // 2  # the stem's stride-2 convolution
        stem_p = _conv(self.channels, 64, 7) + 2 * 64
        out = [LayerDesc("stem", "conv", stem_p, unit="sample", out_elems=64 * (side // 2) ** 2,
                         flops=2 * _conv(self.channels, 64, 7) * side * side,
                         buffer_elems=64 * side * side)]
        side //= 2  # max pool
        cin = 64
        for stage, (count, width) in enumerate(zip(self.blocks, self.widths, strict=True)):
            for b in range(count):
                stride = 2 if (b == 0 and stage > 0) else 1  # torchvision: stride on conv2
                out_side = side // stride
                cout = width * self.expansion
                # (tag, weights, batch-norm params, output channels, output side)
                convs = [
                    ("conv1", _conv(cin, width, 1), 2 * width, width, side),
                    ("conv2", _conv(width, width, 3), 2 * width, width, out_side),
                    ("conv3", _conv(width, cout, 1), 2 * cout, cout, out_side),
                ]
                down = _conv(cin, cout, 1) + 2 * cout if b == 0 else 0
                down_flops = 2 * _conv(cin, cout, 1) * out_side**2 if b == 0 else 0
                name = f"layer{stage + 1}.{b}"
                ops = [LayerDesc(f"{name}.{tag}", "conv", w + bn + (down if i == 0 else 0),
                                 unit="sample", out_elems=c * sd * sd,
                                 flops=2 * w * sd * sd + (down_flops if i == 0 else 0))
                       for i, (tag, w, bn, c, sd) in enumerate(convs)]
                if granularity == "op":
                    out.extend(ops)
                else:
                    out.append(LayerDesc(name, "block", sum(o.params for o in ops), unit="sample",
                                         out_elems=ops[-1].out_elems,
                                         flops=sum(o.flops for o in ops),
                                         buffer_elems=max(o.out_elems for o in ops[:-1])))
                cin, side = cout, out_side
        head_p = cin * self.classes + self.classes
        out.append(LayerDesc("head", "fc", head_p, unit="sample", out_elems=self.classes,
                             flops=2 * cin * self.classes))
        return out
