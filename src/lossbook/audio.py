"""Audio for the `full` preset of the speaker-verification chapter: a log-mel front end in plain
torch, a reader for VoxCeleb in its usual on-disk layout, and MUSAN/RIR augmentation.

Front end — as the official code of Lepage & Dehak (`theolepage/sslsv` @97915a6,
`sslsv/encoders/_BaseEncoder.py`): pre-emphasis (0.97, reflect-padded), a power mel spectrogram
with n_fft = 512, a 25 ms Hamming window (400 samples), 10 ms hop (160), 40 HTK-scale mel bands
without filter normalisation (torchaudio `MelSpectrogram` defaults otherwise: centred frames,
reflect padding, f_min = 0, f_max = sr/2), then log(x + 1e-6) and instance normalisation per mel
band. Computed with `torch.stft` and our own triangular filterbank (no torchaudio); the tests
compare it with librosa.

Data — VoxCeleb cannot be downloaded by a script (it needs the licence form), so the user places
it under a root folder in the layout the official `prepare_data.py` produces:

    root/voxceleb1/id10001/1zcIwhmdeo4/00001.wav   16 kHz mono 16-bit WAV (dev + test speakers)
    root/voxceleb1_test_O                          trials "1 id10270/x6u…/00001.wav id10270/…"
    root/musan_split/{music,speech,noise}/…/*.wav  MUSAN cut into 8-s pieces
    root/simulated_rirs/…/…/*.wav                  simulated room impulse responses

The training list is every `voxceleb1` file whose speaker does not appear in the trials (official
`create_vox1_train_file`), or the list file `root/voxceleb1_train` ("id10001 voxceleb1/…") when
it exists. WAVs are read with `scipy.io.wavfile`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 512
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 40
PRE_EMPHASIS = 0.97
FRAME_LENGTH = 32000  # official `DataConfig.frame_length`: 2-s training frames
EVAL_FRAMES = 6  # official `EvaluateConfig.num_frames`: 6 × 2-s frames per test utterance
MUSAN_SNR = {"noise": (0, 15), "speech": (13, 20), "music": (5, 15)}  # official WavAugmentConfig


# --- log-mel front end --------------------------------------------------------------------------

def hz_to_mel(f):
    """HTK mel scale: 2595 · log10(1 + f/700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS,
                   sample_rate: int = SAMPLE_RATE, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """[n_freqs, n_mels] triangular filters, equally spaced on the HTK mel scale, peak 1 (no area
    normalisation), linear in Hz between the mel points."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0, sample_rate / 2, n_freqs)
    f_pts = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.as_tensor(np.maximum(0.0, np.minimum(down, up)), dtype=torch.float32)


def pre_emphasis(x: torch.Tensor, coeff: float = PRE_EMPHASIS) -> torch.Tensor:
    """y[t] = x[t] − coeff·x[t−1], with x[−1] := x[1] (reflect padding, official code)."""
    padded = F.pad(x.unsqueeze(1), (1, 0), mode="reflect").squeeze(1)
    return padded[..., 1:] - coeff * padded[..., :-1]


def mel_spectrogram(x: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                    win_length: int = WIN_LENGTH, hop_length: int = HOP_LENGTH,
                    n_mels: int = N_MELS, fbank: torch.Tensor | None = None) -> torch.Tensor:
    """Power mel spectrogram [B, n_mels, frames] of waveforms [B, T] (Hamming, centred, reflect)."""
    window = torch.hamming_window(win_length, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop_length, win_length=win_length, window=window,
                      center=True, pad_mode="reflect", return_complex=True).abs().pow(2)
    if fbank is None:
        fbank = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate)
    return torch.matmul(spec.transpose(-1, -2), fbank.to(spec)).transpose(-1, -2)


def log_mel(x: torch.Tensor, **kw) -> torch.Tensor:
    """log(mel + 1e-6) of pre-emphasised waveforms (before instance normalisation)."""
    return (mel_spectrogram(pre_emphasis(x), **kw) + 1e-6).log()


class LogMelFrontend(nn.Module):
    """Waveform [B, T] → normalised log-mel [B, n_mels, frames], without gradient (official)."""

    def __init__(self, n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        self.n_mels, self.sample_rate = n_mels, sample_rate
        self.register_buffer("fbank", mel_filterbank(N_FFT // 2 + 1, n_mels, sample_rate),
                             persistent=False)
        self.instance_norm = nn.InstanceNorm1d(n_mels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = log_mel(x, sample_rate=self.sample_rate, n_mels=self.n_mels, fbank=self.fbank)
            return self.instance_norm(z)


# --- reading VoxCeleb ---------------------------------------------------------------------------

def read_wav(path: str | Path, rate: int | None = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """(int16 samples, sample rate) of a mono 16-bit PCM WAV file at `rate` Hz (None: any).

    A truncated or unreadable file, or another format or rate, raises ValueError naming it.
    """
    import warnings

    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", wavfile.WavFileWarning)  # e.g. a truncated data chunk
            file_rate, samples = wavfile.read(path)
    except (OSError, ValueError, EOFError, wavfile.WavFileWarning) as err:
        raise ValueError(f"{path}: not a readable WAV file ({err})") from None
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"{path}: expected mono 16-bit PCM, got {samples.dtype} {samples.shape}")
    if rate is not None and int(file_rate) != rate:
        raise ValueError(f"{path}: sample rate {file_rate} Hz, expected {rate} Hz")
    return samples, int(file_rate)


def inside_root(relative: str, where: str) -> str:
    """`relative` if it is a path inside the data root (no absolute path, no `..`)."""
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise ValueError(f"{where}: path {relative!r} escapes the data root (absolute or ..)")
    return relative


def to_float(samples) -> torch.Tensor:
    """int16 → float32 in [−1, 1) (÷ 32768, as soundfile reads 16-bit PCM)."""
    return torch.as_tensor(samples).to(torch.float32) / 32768.0


def read_trials(path: str | Path) -> list[tuple[int, str, str]]:
    """VoxCeleb trial list: lines "label utt_a utt_b" (label 1 = same speaker)."""
    trials = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            fields = line.split()
            if len(fields) != 3 or fields[0] not in ("0", "1"):
                raise ValueError(f"{path}:{number}: expected \"label utt_a utt_b\" with label "
                                 f"0 or 1, got {line.strip()[:80]!r}")
            where = f"{path}:{number}"
            trials.append((int(fields[0]), inside_root(fields[1], where),
                           inside_root(fields[2], where)))
    return trials


def train_list(root: str | Path, trials: str = "voxceleb1_test_O",
               list_name: str = "voxceleb1_train") -> list[tuple[str, str]]:
    """(speaker, path relative to root) of the training utterances, sorted."""
    root = Path(root)
    if (root / list_name).is_file():
        path, entries = root / list_name, []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                fields = line.split()
                if len(fields) != 2:
                    raise ValueError(f"{path}:{number}: expected \"speaker path\", got "
                                     f"{line.strip()[:80]!r}")
                entries.append((fields[0], inside_root(fields[1], f"{path}:{number}")))
        return entries
    test_speakers = {u.split("/")[0] for _, a, b in read_trials(root / trials) for u in (a, b)}
    files = sorted((root / "voxceleb1").glob("*/*/*.wav"))
    if not files:
        raise FileNotFoundError(f"no VoxCeleb1 wav files under {root / 'voxceleb1'}; place the "
                                "licensed data there (see lossbook.audio)")
    return [(f.parts[-3], f.relative_to(root).as_posix()) for f in files
            if f.parts[-3] not in test_speakers]


def fit_length(samples: np.ndarray, length: int, start: int = 0) -> np.ndarray:
    """`length` samples from `start`; shorter signals are first wrap-padded (official)."""
    if len(samples) < length:
        samples = np.pad(samples, (0, length - len(samples) + 1), mode="wrap")
    start = min(start, len(samples) - length)
    return samples[start:start + length]


def load_training_audio(root: str | Path, files: list[str], length: int) -> torch.Tensor:
    """[N, length] int16: the first `length` samples of each training file (wrap-padded)."""
    root = Path(root)
    out = np.empty((len(files), length), dtype=np.int16)
    for i, rel in enumerate(files):
        out[i] = fit_length(read_wav(root / rel)[0], length)
    return torch.from_numpy(out)


def eval_frames(samples: np.ndarray, frame_length: int = FRAME_LENGTH,
                num_frames: int = EVAL_FRAMES) -> np.ndarray:
    """[num_frames, frame_length] evenly spaced frames (official `load_audio` at evaluation)."""
    samples = fit_length(samples, max(frame_length, len(samples)))
    starts = np.linspace(0, len(samples) - frame_length, num=num_frames)
    return np.stack([samples[int(s):int(s) + frame_length] for s in starts])


# --- training views and augmentation ------------------------------------------------------------

def sample_frame_pairs(audio: torch.Tensor, frame_length: int,
                       generator: torch.Generator) -> torch.Tensor:
    """Two frames per utterance [B, 2, frame_length] from [B, T] (official `sample_frames`: a
    random gap d ∈ [0, T − 2L] and a random pivot, frames on either side of it)."""
    b, t = audio.shape
    if t < 2 * frame_length:
        raise ValueError(f"utterances must have at least {2 * frame_length} samples, got {t}")
    device = audio.device
    u = torch.rand(b, 2, generator=generator, device=device)
    dist = (u[:, 0] * (t - 2 * frame_length + 1)).long()
    lower = frame_length + dist // 2
    upper = t - (frame_length + dist // 2)
    pivot = lower + (u[:, 1] * (upper - lower + 1)).long().clamp_max(upper - lower)
    start1 = pivot - dist // 2 - frame_length
    start2 = pivot + dist // 2
    offsets = torch.arange(frame_length, device=device)
    frame1 = audio.gather(1, start1[:, None] + offsets)
    frame2 = audio.gather(1, start2[:, None] + offsets)
    return torch.stack([frame1, frame2], 1)


def fft_convolve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Full linear convolution of each row of x [B, T] with kernel [B, K], truncated to T."""
    n = x.shape[-1] + kernel.shape[-1] - 1
    size = 2 ** math.ceil(math.log2(n))
    y = torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(kernel, size), size)
    return y[..., :x.shape[-1]]


class WaveAugment:
    """MUSAN noise (one of music/speech/noise, SNR uniform in the official range) then a simulated
    RIR (L2-normalised), as `sslsv/data/AudioAugmentation.py`; banks of int16 segments in memory."""

    def __init__(self, musan: dict[str, torch.Tensor], rirs: torch.Tensor):
        self.musan = {k: v for k, v in musan.items() if len(v)}
        self.rirs = rirs

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, t = x.shape
        device = x.device
        out = x.clone()
        if self.musan:
            categories = list(self.musan)
            which = torch.randint(len(categories), (b,), generator=generator, device=device)
            u = torch.rand(b, 2, generator=generator, device=device)
            for k, name in enumerate(categories):
                rows = torch.nonzero(which == k).flatten()
                if not len(rows):
                    continue
                bank = self.musan[name]
                pick = (u[rows, 0] * len(bank)).long().clamp_max(len(bank) - 1)
                noise = to_float(bank[pick.cpu()]).to(device)
                noise = noise[:, :t] if noise.shape[1] >= t else \
                    noise.repeat(1, math.ceil(t / noise.shape[1]))[:, :t]
                lo, hi = MUSAN_SNR[name]
                snr = lo + (hi - lo) * u[rows, 1]
                clean_db = 10 * torch.log10(x[rows].pow(2).mean(1) + 1e-4)
                noise_db = 10 * torch.log10(noise.pow(2).mean(1) + 1e-4)
                scale = torch.sqrt(10 ** ((clean_db - noise_db - snr) / 10))
                out[rows] = x[rows] + scale[:, None] * noise
        if len(self.rirs):
            pick = torch.randint(len(self.rirs), (b,), generator=generator, device=device)
            rir = to_float(self.rirs[pick.cpu()]).to(device)
            rir = rir / rir.norm(dim=1, keepdim=True).clamp_min(1e-8)
            out = fft_convolve(out, rir)
        return out


def load_bank(root: str | Path, pattern: str, length: int, max_files: int, seed: int = 0,
              wrap: bool = True) -> torch.Tensor:
    """[≤ max_files, length] int16 segments of the files matching `pattern` under root
    (shorter files wrap-padded, or zero-padded with `wrap=False`, as impulse responses are)."""
    files = sorted(Path(root).glob(pattern))
    if len(files) > max_files:
        files = [files[i] for i in np.random.default_rng(seed).choice(len(files), max_files,
                                                                       replace=False)]
    if not files:
        return torch.zeros(0, length, dtype=torch.int16)
    def segment(samples):
        if wrap:
            return fit_length(samples, length)
        return np.pad(samples, (0, max(0, length - len(samples))))[:length]

    return torch.from_numpy(np.stack([segment(read_wav(f)[0]) for f in files]))
