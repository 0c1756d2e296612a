"""Speaker encoders and the self-supervised encoder/projector model of Lepage & Dehak (2023).

- `ThinResNet34`: the official encoder (`theolepage/sslsv` @97915a6, `sslsv/encoders/ResNet34.py`
  with `BaseEncoder`): log-mel front end, 3×3 stem, residual blocks (3, 4, 6, 3) with
  squeeze-and-excitation (reduction 8) and the block order conv → ReLU → BN of the official code,
  channels base_dim·(1, 2, 4, 8) with `base_dim = 16`, self-attentive pooling (SAP, 128 hidden) and
  a linear layer to `encoder_dim = 512`; Kaiming-normal convolutions as in the official init.
- `CNN1DEncoder`: the small 1-D analogue used at the `book` preset (three conv+BN layers, mean+std
  statistics pooling, linear embedding).
- `SSLModel`: encoder + projector Linear(E, 4E) → ReLU → Linear(4E, E/2) (official
  `Custom.projector`: 512 → 2048 → 256). The loss sees the projector output; verification uses the
  **encoder** output (`Custom.forward(training=False)` returns `self.encoder(X)`).
"""

from __future__ import annotations

import torch
from torch import nn

from lossbook.audio import LogMelFrontend


class StatsPooling(nn.Module):
    """Mean and standard deviation over the last (time) axis, concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(-1), x.std(-1)], dim=1)


class CNN1DEncoder(nn.Module):
    """[B, L] signals → [B, embedding_dim]: 3 × (Conv1d → BN → ReLU), statistics pooling, linear.

    Kernels 5, 3, 3 with strides 2, 2, 1 (mnist1d's `ConvBase` strides its convolutions the same
    way); the mean+std pooling over time stands in for the ResNet's attentive pooling.
    """

    def __init__(self, channels: int = 32, embedding_dim: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2, stride=2), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1, stride=2), nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, padding=1), nn.BatchNorm1d(channels), nn.ReLU(),
        )
        self.pool = StatsPooling()
        self.fc = nn.Linear(2 * channels, embedding_dim)
        self.encoder_dim = embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x.unsqueeze(1))))


# --- the official Thin ResNet-34 ----------------------------------------------------------------

class SELayer(nn.Module):
    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class SEBlock(nn.Module):
    """Official `ResNetBlock`: conv → ReLU → BN, conv → BN → SE, + shortcut, ReLU."""

    def __init__(self, in_size: int, out_size: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_size, out_size, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_size)
        self.conv2 = nn.Conv2d(out_size, out_size, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_size)
        self.se = SELayer(out_size)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_size, out_size, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        z = self.bn1(self.relu(self.conv1(x)))
        z = self.se(self.bn2(self.conv2(z)))
        return self.relu(z + residual)


class SelfAttentivePooling(nn.Module):
    """Official `SelfAttentivePooling`: softmax-over-time attention per channel, weighted sum."""

    def __init__(self, out_size: int, dim: int = 128):
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(out_size, dim, 1), nn.ReLU(),
                                       nn.BatchNorm1d(dim), nn.Conv1d(dim, out_size, 1),
                                       nn.Softmax(dim=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _, w = x.shape
        x = x.reshape(b, -1, w)
        return (self.attention(x) * x).sum(2)


class ThinResNet34(nn.Module):
    """Waveform [B, T] (16 kHz) → embedding [B, encoder_dim] (official `ResNet34`, SAP pooling)."""

    def __init__(self, encoder_dim: int = 512, base_dim: int = 16, n_mels: int = 40,
                 layers: tuple[int, ...] = (3, 4, 6, 3)):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.frontend = LogMelFrontend(n_mels=n_mels)
        self.stem = nn.Sequential(nn.Conv2d(1, base_dim, 3, 1, 1), nn.ReLU(inplace=True),
                                  nn.BatchNorm2d(base_dim))
        blocks, in_size = [], base_dim
        for i, (n, stride) in enumerate(zip(layers, (1, 2, 2, 2))):
            out_size = base_dim * 2**i
            blocks += [SEBlock(in_size, out_size, stride)]
            blocks += [SEBlock(out_size, out_size, 1) for _ in range(n - 1)]
            in_size = out_size
        self.blocks = nn.Sequential(*blocks)
        out_size = int(n_mels / 8 * base_dim * 8)
        self.pooling = SelfAttentivePooling(out_size)
        self.fc = nn.Linear(out_size, encoder_dim)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.frontend(x).unsqueeze(1)  # [B, 1, n_mels, frames]
        z = self.blocks(self.stem(z))
        return self.fc(self.pooling(z))


class SSLModel(nn.Module):
    """Encoder + projector. `model(x)` is the encoder embedding (used for verification);
    `model.project(x)` the projector output the contrastive loss sees (`projector=False`: the
    encoder output, the paper's "without projector" row)."""

    def __init__(self, encoder: nn.Module, projector: bool = True,
                 hidden_dim: int | None = None, output_dim: int | None = None):
        super().__init__()
        self.encoder = encoder
        dim = encoder.encoder_dim
        self.projector = nn.Sequential(
            nn.Linear(dim, hidden_dim or 4 * dim), nn.ReLU(),
            nn.Linear(hidden_dim or 4 * dim, output_dim or dim // 2)) if projector else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        y = self.encoder(x)
        return y if self.projector is None else self.projector(y)


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Encoder embeddings of `x` in eval mode (batched), restoring the previous mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out
