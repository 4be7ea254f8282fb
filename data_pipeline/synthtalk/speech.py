"""SynthTalk speech: phoneme sequences, a formant synthesiser, and the mouth they imply.

The mouth is a function of *which* phoneme is spoken (a table of openness and width per
phoneme, smoothed over about two frames), never of loudness: every segment's loudness is drawn
independently of its phoneme, and each vowel's filter output is normalised to the same level.
So only the spectral content (formants, noise bands) tells the mouth, as in real speech.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import signal

from pcavs_jax.data.clips import SAMPLE_RATE, SAMPLES_PER_FRAME

VOWELS = ("a", "e", "i", "o", "u")
CONSONANTS = ("m", "p", "t", "k", "s", "sh", "f")
PHONEMES = ("sil",) + VOWELS + CONSONANTS
PHONEME_ID = {p: i for i, p in enumerate(PHONEMES)}

# Textbook formants (Hz) of the cardinal vowels, adult male (Peterson & Barney style); the
# speaker's formant scale stretches them.
FORMANTS = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (270.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
}
F4 = 3400.0
BANDWIDTHS = (80.0, 100.0, 140.0, 200.0)

# (openness, width) in [0, 1] per phoneme: open /a/, spread /i/ and /e/, rounded /o/ and /u/,
# closed lips for /m/ and /p/ and in silence.
MOUTH = {
    "sil": (0.0, 0.4),
    "a": (1.0, 0.55), "e": (0.55, 0.8), "i": (0.22, 1.0), "o": (0.7, 0.18), "u": (0.3, 0.0),
    "m": (0.0, 0.45), "p": (0.0, 0.45), "t": (0.15, 0.55), "k": (0.22, 0.45),
    "s": (0.1, 0.75), "sh": (0.15, 0.2), "f": (0.06, 0.5),
}

# Noise bands (Hz) of fricatives and plosive bursts.
NOISE_BANDS = {"s": (4000, 7800), "sh": (1800, 5000), "f": (1000, 7000),
               "p": (400, 2000), "t": (3000, 7000), "k": (1200, 3200)}


@dataclasses.dataclass
class Segment:
  """One phoneme: its name, first sample and length in samples, and loudness factor."""
  phoneme: str
  start: int
  length: int
  gain: float


def sample_phonemes(rng: np.random.Generator, num_samples: int) -> list[Segment]:
  """A random utterance of (C)V(C) syllables, grouped in words, with silences between.

  Vowels last 80-300 ms, consonants 60-150 ms, silences 100-300 ms; the utterance starts with
  a silence and covers at least `num_samples`.
  """
  ms = lambda lo, hi: int(rng.uniform(lo, hi) * SAMPLE_RATE / 1000)
  segments: list[Segment] = []
  pos = 0

  def add(phoneme: str, length: int):
    nonlocal pos
    gain = 0.0 if phoneme == "sil" else float(rng.uniform(0.55, 1.0))
    segments.append(Segment(phoneme, pos, length, gain))
    pos += length

  add("sil", ms(100, 300))
  while pos < num_samples:
    for _ in range(int(rng.integers(1, 4))):           # syllables in a word
      if rng.uniform() < 0.7:
        add(CONSONANTS[rng.integers(len(CONSONANTS))], ms(60, 150))
      add(VOWELS[rng.integers(len(VOWELS))], ms(80, 300))
      if rng.uniform() < 0.2:
        add(CONSONANTS[rng.integers(len(CONSONANTS))], ms(60, 150))
    if rng.uniform() < 0.6:
      add("sil", ms(100, 300))
  return segments


def phoneme_frames(segments: list[Segment], num_frames: int) -> np.ndarray:
  """(num_frames, len(PHONEMES)) fraction of each frame's 40 ms spent on each phoneme."""
  out = np.zeros((num_frames, len(PHONEMES)), np.float64)
  for seg in segments:
    a, b = seg.start, seg.start + seg.length
    for t in range(a // SAMPLES_PER_FRAME, min(num_frames, -(-b // SAMPLES_PER_FRAME))):
      lo, hi = max(a, t * SAMPLES_PER_FRAME), min(b, (t + 1) * SAMPLES_PER_FRAME)
      out[t, PHONEME_ID[seg.phoneme]] += max(hi - lo, 0) / SAMPLES_PER_FRAME
  return out


def mouth_track(segments: list[Segment], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-frame mouth openness and width from the phonemes.

  Each frame takes the time-weighted table values of the phonemes it overlaps, then a
  [1, 2, 1] / 4 smoothing over neighbouring frames (about two frames of coarticulation).
  Frames inside a silence stay closed.
  """
  table = np.array([MOUTH[p] for p in PHONEMES])
  target = phoneme_frames(segments, num_frames) @ table
  padded = np.concatenate([target[:1], target, target[-1:]])
  smooth = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
  return smooth[:, 0].astype(np.float32), smooth[:, 1].astype(np.float32)


def dominant_phoneme(segments: list[Segment], num_frames: int) -> np.ndarray:
  """(num_frames,) id of the phoneme covering most of each frame."""
  return phoneme_frames(segments, num_frames).argmax(1).astype(np.float32)


def _resonator(freq: float, bandwidth: float) -> tuple[np.ndarray, np.ndarray]:
  """Second-order resonator with unit gain at 0 Hz."""
  r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
  c = 2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE)
  a = np.array([1.0, -c, r * r])
  return np.array([a.sum()]), a


def _formant_filter(x: np.ndarray, freqs, bandwidths) -> np.ndarray:
  for f, bw in zip(freqs, bandwidths):
    b, a = _resonator(min(f, 0.45 * SAMPLE_RATE), bw)
    x = signal.lfilter(b, a, x)
  return x


def _unit_rms(x: np.ndarray) -> np.ndarray:
  return x / max(float(np.sqrt(np.mean(x ** 2))), 1e-12)


def _glottal_source(rng: np.random.Generator, num_samples: int, f0: float,
                    jitter: float) -> np.ndarray:
  """Pulse train with a slow intonation contour, cycle-to-cycle jitter and shimmer, shaped to a
  -6 dB/octave glottal spectrum, plus a little aspiration noise."""
  t = np.arange(num_samples) / SAMPLE_RATE
  contour = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6.3))
                  - 0.05 * t / max(t[-1], 1e-6))
  pulses = np.zeros(num_samples)
  pos = rng.uniform(0, SAMPLE_RATE / f0)
  while pos < num_samples:
    i = int(pos)
    pulses[i] += 1.0 + 0.05 * rng.normal()
    pos += SAMPLE_RATE / contour[i] * (1.0 + jitter * rng.normal())
  src = signal.lfilter([1.0, -1.0], [1.0, -1.9, 0.9025], pulses)
  src = _unit_rms(src) + 0.05 * rng.normal(size=num_samples)
  return src


def _envelopes(segments: list[Segment], num_samples: int, ramp: int) -> dict[int, np.ndarray]:
  """Per-segment amplitude envelopes with raised-cosine edges (cross-fades between segments)."""
  out = {}
  for k, seg in enumerate(segments):
    lo, hi = max(seg.start - ramp // 2, 0), min(seg.start + seg.length + ramp // 2, num_samples)
    if lo >= hi or seg.gain == 0:
      continue
    env = np.ones(hi - lo)
    r = min(ramp, (hi - lo) // 2)
    if r > 0:
      edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)
      env[:r] *= edge
      env[-r:] *= edge[::-1]
    out[k] = (lo, hi, env * seg.gain)
  return out


def synthesize(segments: list[Segment], params: dict[str, np.ndarray], rng: np.random.Generator,
               num_samples: int) -> np.ndarray:
  """Renders the utterance with the speaker's voice.

  Args:
    segments: the phonemes (`sample_phonemes`).
    params: identity parameters (uses f0, jitter, formant_scale).
    rng: the clip's audio random stream.
    num_samples: output length.

  Returns:
    (num_samples,) float32 waveform at 16 kHz, peak 0.7.
  """
  f0 = float(params["f0"][0])
  jitter = float(params["jitter"][0])
  scale = float(params["formant_scale"][0])
  source = _glottal_source(rng, num_samples, f0, jitter)
  voiced = {v: _unit_rms(_formant_filter(source, [f * scale for f in FORMANTS[v]] + [F4 * scale],
                                         BANDWIDTHS)) for v in VOWELS}
  voiced["m"] = 0.35 * _unit_rms(_formant_filter(source, (250.0 * scale, 1100.0 * scale),
                                                 (100.0, 300.0)))
  noise = rng.normal(size=num_samples)
  sos = {k: signal.butter(4, band, btype="bandpass", fs=SAMPLE_RATE, output="sos")
         for k, band in NOISE_BANDS.items()}
  out = 3e-3 * rng.normal(size=num_samples)   # room noise floor
  for k, (lo, hi, env) in _envelopes(segments, num_samples, ramp=160).items():
    seg = segments[k]
    p = seg.phoneme
    if p in voiced:
      out[lo:hi] += env * voiced[p][lo:hi]
    elif p in ("s", "sh", "f"):
      band = _unit_rms(signal.sosfilt(sos[p], noise[lo:hi]))
      out[lo:hi] += env * band * (0.25 if p == "f" else 0.45)
    else:
      # Plosive: closure (silence), then a 15-25 ms burst decaying into aspiration.
      closure = int(0.6 * seg.length)
      b0 = seg.start + closure
      b1 = min(seg.start + seg.length, num_samples)
      if b1 > b0:
        n = b1 - b0
        burst = _unit_rms(signal.sosfilt(sos[p], rng.normal(size=n)))
        decay = np.exp(-np.arange(n) / (rng.uniform(0.015, 0.025) * SAMPLE_RATE / 3))
        out[b0:b1] += 0.8 * seg.gain * burst * (decay + 0.1)
  peak = float(np.abs(out).max())
  return (out * (0.7 / max(peak, 1e-9))).astype(np.float32)
