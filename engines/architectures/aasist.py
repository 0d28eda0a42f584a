"""AASIST and AASIST-L (Jung et al., "AASIST: Audio Anti-Spoofing using Integrated Spectro-Temporal Graph Attention
Networks", ICASSP 2022; clovaai/aasist, MIT): raw-waveform spoofed-speech detectors, and their registry entries.

The network, as the authors' models/AASIST.py computes it at inference (a fresh implementation with the same
module tree, so their published state dicts load strictly):
1. 70 fixed mel-spaced sinc band-pass filters (129 taps, Hamming window; not learned, not in the state dict)
   over the 64600-sample waveform; |.|, 3x3 max-pool, BatchNorm, SELU.
2. Six residual blocks of (2, 3) convolutions, each ending in a (1, 3) max-pool: a (channels, 23 bands, time) map.
3. A spectral graph (max |.| over time, + a learned position per band) and a temporal graph (max |.| over bands),
   each through a graph attention layer and a top-k graph pool.
4. Two parallel branches of two heterogeneous graph attention layers over both graphs and a learned master node,
   pooled in between; the branches are merged by element-wise max.
5. max |.| and mean over each graph's nodes, plus the master node -> Linear -> two logits [spoof, bona fide].

Quirks of the authors' code kept on purpose, because the published weights were trained with them:
- each residual block after the first holds a `bn1` whose output the authors' forward discards (its first
  convolution reads the block's input), so it is loaded and never applied;
- the heterogeneous layers score spectral->temporal and temporal->spectral edges with the same weight
  (`att_weight12`), and the first layer of each branch starts from the unexpanded learned master node.
Dropout and the training-time frequency mask are absent: this module only infers.

Labels: their data loader labels bona fide 1 and spoof 0, so p(fake) = softmax(logits)[0]. Input: their eval loader
(data_utils.pad) takes a clip's first 64600 samples, or tiles a shorter clip to that length (`AudioSpec.short`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engines.base import LabelMapping, WeightsFormatError
from engines.voice_base import AudioSpec, TorchVoiceEngine, VoiceModelEntry
from engines.registration import register_voice_models
from engines.weights import WeightsSource

WINDOW_SAMPLES = 64600  # the authors' nb_samp: about 4.04 s at 16 kHz
SAMPLE_RATE = 16000
SPOOF_INDEX = 0  # their labels: spoof 0, bona fide 1
SPECTRAL_NODES = 23  # bands left after the front end's 3x3 pool of 70 filters; the size of pos_S
FFT_POINTS = 512  # the mel scale is laid over the bins of a 512-point FFT, as the authors' CONV does


@dataclass(frozen=True, slots=True)
class AasistConfig:
    """A model_config of the authors' config/*.conf files (only what inference reads)."""

    first_conv: int
    filts: tuple[int, tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]
    gat_dims: tuple[int, int]
    pool_ratios: tuple[float, float, float, float]
    temperatures: tuple[float, float, float, float]


# config/AASIST.conf and config/AASIST-L.conf (they differ in filts, gat_dims and pool_ratios).
AASIST = AasistConfig(128, (70, (1, 32), (32, 32), (32, 64), (64, 64)), (64, 32), (0.5, 0.7, 0.5, 0.5),
                      (2.0, 2.0, 100.0, 100.0))
AASIST_L = AasistConfig(128, (70, (1, 32), (32, 32), (32, 24), (24, 24)), (24, 32), (0.4, 0.5, 0.7, 0.5),
                        (2.0, 2.0, 100.0, 100.0))
CONFIGS = {"aasist": AASIST, "aasist-l": AASIST_L}


def sinc_filters(channels: int, kernel: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(channels, taps) mel-spaced band-pass filters: ideal sinc band-passes between consecutive mel edges over
    0..Nyquist, Hamming-windowed. An even `kernel` gets one more tap, so every filter is symmetric."""
    taps = kernel + 1 if kernel % 2 == 0 else kernel
    hz = (sample_rate // 2) * np.linspace(0.0, 1.0, FFT_POINTS // 2 + 1)
    mel = 2595.0 * np.log10(1.0 + hz / 700.0)
    edges = 700.0 * (10.0 ** (np.linspace(mel.min(), mel.max(), channels + 1) / 2595.0) - 1.0)
    t = np.arange(taps, dtype=np.float64) - (taps - 1) / 2

    def low_pass(f: np.ndarray) -> np.ndarray:  # (channels, taps) ideal low-pass at each cut-off
        return (2 * f[:, None] / sample_rate) * np.sinc(2 * f[:, None] * t[None, :] / sample_rate)

    return ((low_pass(edges[1:]) - low_pass(edges[:-1])) * np.hamming(taps)[None, :]).astype(np.float32)


def pairwise(x: torch.Tensor) -> torch.Tensor:
    """(B, N, D) -> (B, N, N, D): the element-wise product of every pair of nodes."""
    return x.unsqueeze(2) * x.unsqueeze(1)


class GraphAttention(nn.Module):
    """Nodes attend to each other (attention from their pairwise products), then projection, BN, SELU."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = nn.Parameter(torch.zeros(out_dim, 1))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.tanh(self.att_proj(pairwise(x))) @ self.att_weight  # (B, N, N, 1)
        att = torch.softmax(scores.squeeze(-1) / self.temperature, dim=-1)
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return F.selu(self.bn(out.flatten(0, 1)).view_as(out))


class HeteroGraphAttention(nn.Module):
    """Attention over two node types (temporal, spectral) and a master node that attends to all of them."""

    def __init__(self, in_dim: int, out_dim: int, temperature: float) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = nn.Parameter(torch.zeros(out_dim, 1))  # type 1 -> type 1
        self.att_weight22 = nn.Parameter(torch.zeros(out_dim, 1))  # type 2 -> type 2
        self.att_weight12 = nn.Parameter(torch.zeros(out_dim, 1))  # across types, both directions
        self.att_weightM = nn.Parameter(torch.zeros(out_dim, 1))
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.temperature = temperature

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n1 = x1.shape[1]
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        # Each edge's score from the weight of its block: which types its two ends are.
        kinds = torch.cat([self.att_weight11, self.att_weight22, self.att_weight12], dim=1)  # (D', 3)
        scores = torch.tanh(self.att_proj(pairwise(x))) @ kinds  # (B, N, N, 3)
        is2 = torch.arange(x.shape[1], device=x.device) >= n1
        block = torch.where(is2[:, None] == is2[None, :], is2[:, None].long(), 2)  # 0: 11, 1: 22, 2: across
        scores = scores.gather(-1, block.expand(*scores.shape[:3]).unsqueeze(-1)).squeeze(-1)
        att = torch.softmax(scores / self.temperature, dim=-1)
        # The master node attends over every node.
        m_scores = torch.tanh(self.att_projM(x * master)) @ self.att_weightM  # (B, N, 1)
        m_att = torch.softmax(m_scores / self.temperature, dim=1)
        master = self.proj_with_attM(m_att.transpose(1, 2) @ x) + self.proj_without_attM(master)
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        out = F.selu(self.bn(out.flatten(0, 1)).view_as(out))
        return out[:, :n1], out[:, n1:], master


class GraphPool(nn.Module):
    """Keep the top `ratio` of nodes by a learned sigmoid score (highest first), each scaled by its score."""

    def __init__(self, ratio: float, in_dim: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(in_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.proj(h))  # (B, N, 1)
        keep = max(int(h.shape[1] * self.ratio), 1)
        idx = torch.topk(scores, keep, dim=1).indices.expand(-1, -1, h.shape[2])
        return torch.gather(h * scores, 1, idx)


class ResidualBlock(nn.Module):
    """conv (2, 3) -> BN -> SELU -> conv (2, 3), plus the (1x3-convolved where widths differ) input; (1, 3) pool."""

    def __init__(self, channels: tuple[int, int], first: bool = False) -> None:
        super().__init__()
        c_in, c_out = channels
        if not first:
            self.bn1 = nn.BatchNorm2d(c_in)  # in the weights, never applied (see the module docstring)
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=(2, 3), padding=(0, 1))
        self.downsample = c_in != c_out
        if self.downsample:
            self.conv_downsample = nn.Conv2d(c_in, c_out, kernel_size=(1, 3), padding=(0, 1))
        self.mp = nn.MaxPool2d((1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.selu(self.bn2(self.conv1(x))))
        identity = self.conv_downsample(x) if self.downsample else x
        return self.mp(out + identity)


class AASISTNetwork(nn.Module):
    """(B, samples) waveform -> (B, 2) logits [spoof, bona fide]; parameter names follow the authors' `Model`."""

    def __init__(self, config: AasistConfig = AASIST) -> None:
        super().__init__()
        filts, dims, ratios, temps = config.filts, config.gat_dims, config.pool_ratios, config.temperatures
        self.register_buffer("band_pass", torch.from_numpy(sinc_filters(filts[0], config.first_conv)).unsqueeze(1),
                             persistent=False)
        self.first_bn = nn.BatchNorm2d(1)
        blocks = [filts[1], filts[2], filts[3], filts[4], filts[4], filts[4]]
        self.encoder = nn.Sequential(*(nn.Sequential(ResidualBlock(c, first=i == 0)) for i, c in enumerate(blocks)))
        width = filts[-1][-1]
        self.pos_S = nn.Parameter(torch.zeros(1, SPECTRAL_NODES, width))
        self.master1 = nn.Parameter(torch.zeros(1, 1, dims[0]))
        self.master2 = nn.Parameter(torch.zeros(1, 1, dims[0]))
        self.GAT_layer_S = GraphAttention(width, dims[0], temps[0])
        self.GAT_layer_T = GraphAttention(width, dims[0], temps[1])
        self.HtrgGAT_layer_ST11 = HeteroGraphAttention(dims[0], dims[1], temps[2])
        self.HtrgGAT_layer_ST12 = HeteroGraphAttention(dims[1], dims[1], temps[2])
        self.HtrgGAT_layer_ST21 = HeteroGraphAttention(dims[0], dims[1], temps[2])
        self.HtrgGAT_layer_ST22 = HeteroGraphAttention(dims[1], dims[1], temps[2])
        self.pool_S = GraphPool(ratios[0], dims[0])
        self.pool_T = GraphPool(ratios[1], dims[0])
        self.pool_hS1 = GraphPool(ratios[2], dims[1])
        self.pool_hT1 = GraphPool(ratios[2], dims[1])
        self.pool_hS2 = GraphPool(ratios[2], dims[1])
        self.pool_hT2 = GraphPool(ratios[2], dims[1])
        self.out_layer = nn.Linear(5 * dims[1], 2)

    def _branch(self, t: torch.Tensor, s: torch.Tensor, master: torch.Tensor, first: HeteroGraphAttention,
                second: HeteroGraphAttention, pool_s: GraphPool, pool_t: GraphPool):
        t, s, master = first(t, s, master)
        s, t = pool_s(s), pool_t(t)
        t_aug, s_aug, m_aug = second(t, s, master)
        return t + t_aug, s + s_aug, master + m_aug

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = F.conv1d(wave.unsqueeze(1), self.band_pass).unsqueeze(1)  # (B, 1, filters, time)
        x = F.selu(self.first_bn(F.max_pool2d(x.abs(), (3, 3))))
        e = self.encoder(x).abs()  # (B, C, bands, time)
        spectral = self.pool_S(self.GAT_layer_S(e.amax(dim=3).transpose(1, 2) + self.pos_S))
        temporal = self.pool_T(self.GAT_layer_T(e.amax(dim=2).transpose(1, 2)))
        t1, s1, m1 = self._branch(temporal, spectral, self.master1, self.HtrgGAT_layer_ST11,
                                  self.HtrgGAT_layer_ST12, self.pool_hS1, self.pool_hT1)
        t2, s2, m2 = self._branch(temporal, spectral, self.master2, self.HtrgGAT_layer_ST21,
                                  self.HtrgGAT_layer_ST22, self.pool_hS2, self.pool_hT2)
        t, s, m = torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2)
        hidden = torch.cat([t.abs().amax(1), t.mean(1), s.abs().amax(1), s.mean(1), m.squeeze(1)], dim=1)
        return self.out_layer(hidden)


def load_aasist(path: str | Path, config: AasistConfig = AASIST) -> AASISTNetwork:
    """The network with a published (or same-layout) state dict, loaded strictly; a wrong file is refused whole.

    Read with `weights_only` (no arbitrary unpickling) onto the CPU: the authors saved their files from CUDA."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise
    except Exception as exc:  # UnpicklingError, RuntimeError, BadZipFile...: not a torch checkpoint
        raise WeightsFormatError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFormatError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    network = AASISTNetwork(config)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # torch lists every missing, unexpected and misshapen tensor
        raise WeightsFormatError(f"{path}: does not match {type(network).__name__} ({exc})") from None
    return network.eval()


def build_aasist(weights_path: Path, entry: VoiceModelEntry, device: str | torch.device = "cpu") -> TorchVoiceEngine:
    """Registry builder: the entry's configuration (by name) with the file's weights."""
    return TorchVoiceEngine(entry.name, load_aasist(weights_path, CONFIGS[entry.name]), entry.audio, entry.labels,
                            device)


# ---------------------------------------------------------------- registry entries (declared data)

BASE_URL = "https://raw.githubusercontent.com/clovaai/aasist/main/models/weights/"
PAPER = ("Jung et al., 'AASIST: Audio Anti-Spoofing using Integrated Spectro-Temporal Graph Attention Networks', "
         "ICASSP 2022 (github.com/clovaai/aasist)")
TRAINED_ON = "ASVspoof 2019 LA train (2019-era TTS and voice conversion; published EER {eer} on its eval set)"
LICENCE = "MIT (clovaai/aasist, NAVER Corp.)"
AUDIO = AudioSpec(sample_rate=SAMPLE_RATE, samples=WINDOW_SAMPLES, short="repeat")
LABELS = LabelMapping(kind="softmax", fake_index=SPOOF_INDEX, logits=True)


def _entry(name: str, filename: str, sha256: str, what: str, eer: str) -> VoiceModelEntry:
    return VoiceModelEntry(
        name=name,
        builder="engines.architectures.aasist:build_aasist",
        description=f"{what}: sinc front end, residual encoder, spectro-temporal graph attention; 2 logits "
                    "[spoof, bona fide]",
        weights=WeightsSource(filename=filename, url=BASE_URL + filename, sha256=sha256),
        audio=AUDIO,
        labels=LABELS,
        paper=PAPER,
        trained_on=TRAINED_ON.format(eer=eer),
        licence=LICENCE,
        backends=("torch",),
    )


ENTRIES: tuple[VoiceModelEntry, ...] = (
    _entry("aasist", "AASIST.pth", "51d2d9cf0738172f61e2a384ec50a54a55363240f67c971ed55a92435bc1a1c0",
           "AASIST (~297k parameters)", "0.83 %"),
    _entry("aasist-l", "AASIST-L.pth", "814331d088032bb4c3fa61cc014789eadeed464209dd094ab3a2dd6ffbdce27a",
           "AASIST-L (85k parameters)", "0.99 %"),
)
register_voice_models(*ENTRIES)
