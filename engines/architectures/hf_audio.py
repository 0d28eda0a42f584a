"""Hugging Face `transformers` audio-classification checkpoints (wav2vec2, WavLM, HuBERT... fine-tuned real/fake).

Any checkpoint folder that `AutoModelForAudioClassification` loads, with its `preprocessor_config.json`: the
feature extractor is transformers' own (for wav2vec2/WavLM: optional zero-mean unit-variance normalisation of each
window, `do_normalize`), run on each window exactly as `pipeline("audio-classification")` runs it on a clip, and
the logits are softmaxed as the pipeline does. Which output is "fake" is declared in the registry entry
(`LabelMapping.fake_index`) and checked against the checkpoint's `config.id2label` when it names its classes: a
config whose names say otherwise wins (the names are what the authors trained with), and one that names several
fake classes is refused.

Weights come from the hub at a pinned revision (`engines.weights` fetches config.json, preprocessor_config.json and
model.safetensors into one folder), or from `--weights` as a local checkpoint folder or a hub id "owner/name".
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.base import LabelMapping, WeightsFormatError
from engines.voice_base import AudioSpec, TorchVoiceEngine, VoiceModelEntry
from engines.registration import register_voice_models
from engines.weights import WeightsSource, WeightsUnavailable

CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HUB_PATTERNS = [CONFIG_FILE, PROCESSOR_FILE, "model.safetensors", "pytorch_model.bin"]
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# Class names (lower-cased, whole name) that mean synthetic speech, and those that mean genuine speech.
FAKE_NAMES = frozenset({"fake", "spoof", "deepfake", "synthetic", "ai", "generated"})
REAL_NAMES = frozenset({"real", "bonafide", "bona fide", "bona-fide", "genuine", "human"})
# The window these engines score: 4 s at 16 kHz. Trade-off: the wav2vec2 fine-tunes on the hub were trained on
# clips of a few seconds; longer windows give the transformer more context but cost quadratically in attention
# and delay a live verdict, shorter ones leave too few frames (20 ms each) for a stable pooled feature.
HF_WINDOW_SAMPLES = 64000


def resolve_checkpoint(source: Path | str) -> Path:
    """A local checkpoint folder for `source`: a folder, the folder of a weight file, or a hub id's snapshot."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    if path.exists() or not HUB_ID.match(str(source)):
        raise WeightsUnavailable(f"audio-classification weights must be a checkpoint folder ({CONFIG_FILE} + "
                                 f"{PROCESSOR_FILE} + {WEIGHT_FILES[0]}) or a hub id 'owner/name'; {source} is "
                                 "neither")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(source), allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # offline, unknown or gated repo: all mean "not available here"
        raise WeightsUnavailable(f"could not fetch {source} from the Hugging Face hub ({type(exc).__name__}: "
                                 f"{exc}); download it and pass its folder with --weights") from exc


def fake_index(id2label: dict, declared: int) -> int:
    """The output index that is p(fake): the one class the config names fake (or, with two classes, the one not
    named real); the registry's `declared` index when the names say nothing (LABEL_0, LABEL_1)."""
    names = {int(i): str(n).strip().lower() for i, n in id2label.items()}
    fakes = [i for i, n in names.items() if n in FAKE_NAMES]
    reals = [i for i, n in names.items() if n in REAL_NAMES]
    if len(fakes) > 1:
        raise WeightsFormatError(f"config.json id2label {id2label} names several fake classes; p(fake) is ambiguous")
    if fakes:
        return fakes[0]
    if len(names) == 2 and len(reals) == 1:
        return next(i for i in names if i not in reals)
    if declared not in names:
        raise WeightsFormatError(f"config.json id2label {id2label} has no class {declared} (the declared fake index)")
    return declared


class AudioClassifierLogits(nn.Module):
    """(B, samples) feature-extracted windows -> (B, classes) logits; unwraps the HF output for TorchVoiceEngine."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=input_values).logits


class HFAudioEngine(TorchVoiceEngine):
    """A transformers audio classifier behind the voice interface; windows go through its own feature extractor."""

    def __init__(self, name: str, model: nn.Module, extractor, spec: AudioSpec, labels: LabelMapping,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(name, AudioClassifierLogits(model), spec, labels, device)
        self.extractor = extractor

    def preprocess(self, waveforms: np.ndarray) -> torch.Tensor:
        # Every window has the same length, so no padding and an all-ones attention mask: the model then sees
        # what the pipeline gives it for a clip of that length.
        features = self.extractor(list(waveforms), sampling_rate=self.spec.sample_rate, return_tensors="pt")
        return features["input_values"].float().to(self.device)


def load_classifier(folder: Path):
    """Model and feature extractor of a checkpoint folder, loaded strictly (a missing tensor is an error)."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    if not (folder / CONFIG_FILE).is_file() or not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise WeightsFormatError(f"{folder} is not a complete audio-classification checkpoint: it needs "
                                 f"{CONFIG_FILE} and one of {', '.join(WEIGHT_FILES)}")
    if not (folder / PROCESSOR_FILE).is_file():
        raise WeightsFormatError(f"{folder} has no {PROCESSOR_FILE}: its feature extractor (normalisation, "
                                 "sampling rate) would be a guess")
    try:
        model, info = AutoModelForAudioClassification.from_pretrained(folder, local_files_only=True,
                                                                      output_loading_info=True)
        extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # bad JSON, unknown model type, truncated weights...: a corrupt checkpoint
        raise WeightsFormatError(f"{folder}: cannot load as an audio classifier ({type(exc).__name__}: {exc})") \
            from exc
    bad = {k: sorted(map(str, info[k])) for k in ("missing_keys", "mismatched_keys") if info.get(k)}
    if bad:
        raise WeightsFormatError(f"{folder}: weights do not match the model in {CONFIG_FILE}: {bad}")
    return model.float().eval(), extractor


def build_hf_audio(weights_path: Path, entry: VoiceModelEntry, device: str | torch.device = "cpu") -> HFAudioEngine:
    """Registry builder: the checkpoint holding `weights_path` (or a folder / hub id), at the entry's window."""
    folder = resolve_checkpoint(weights_path)
    model, extractor = load_classifier(folder)
    rate = int(getattr(extractor, "sampling_rate", entry.audio.sample_rate))
    if rate != entry.audio.sample_rate:
        raise WeightsFormatError(f"{folder}: its feature extractor expects {rate} Hz, the voice path gives "
                                 f"{entry.audio.sample_rate} Hz")
    labels = LabelMapping(kind="softmax", fake_index=fake_index(model.config.id2label, entry.labels.fake_index),
                          logits=True)
    return HFAudioEngine(entry.name, model, extractor, entry.audio, labels, device)


# ---------------------------------------------------------------- registry entries (declared data)

AUDIO = AudioSpec(samples=HF_WINDOW_SAMPLES, short="repeat")


def hub_entry(name: str, repo: str, revision: str | None, fake: int, description: str, trained_on: str,
              licence: str) -> VoiceModelEntry:
    folder = repo.replace("/", "_")

    def hub(file: str) -> WeightsSource:
        return WeightsSource(filename=f"{folder}/{file}", remote_name=file, hf_repo=repo, revision=revision)

    return VoiceModelEntry(
        name=name,
        builder="engines.architectures.hf_audio:build_hf_audio",
        description=description,
        weights=hub("model.safetensors"),
        companion_files={"config": hub(CONFIG_FILE), "preprocessor": hub(PROCESSOR_FILE)},
        audio=AUDIO,
        labels=LabelMapping(kind="softmax", fake_index=fake, logits=True),
        card=f"huggingface.co/{repo}",
        trained_on=trained_on,
        licence=licence,
        backends=("torch",),
    )


ENTRIES: tuple[VoiceModelEntry, ...] = (
    # A widely used wav2vec2-base fine-tune (Apache-2.0). Pinned at the revision whose commit list the hub shows
    # last ("Training in progress, epoch 5"); the safetensors' sha256 is not published where it could be read
    # here, so the file is unverified. Its id2label could not be read here either: fake index 0 is declared
    # (third-party code reads the labels "fake" and "real"), and the config's own names override it at load.
    hub_entry("w2v2-deepfake-v2", "MelodyMachine/Deepfake-audio-detection-V2",
              "566bf6d81f4eaf2452d1af41da0f59124ab16a59", 0,
              "wav2vec2-base fine-tuned for real/fake speech (audio-classification head), 4 s windows",
              "not documented by the model card (an 'audiofolder' of real and fake speech)",
              "Apache-2.0 (model card)"),
    # Any other checkpoint, by hub id or folder: `--model hf-audio --weights owner/name`. Fake index 1 (the
    # project's label convention) unless the checkpoint's id2label names its classes.
    VoiceModelEntry(
        name="hf-audio",
        builder="engines.architectures.hf_audio:build_hf_audio",
        description="any transformers audio-classification checkpoint (wav2vec2, WavLM, HuBERT...), 4 s windows",
        weights=WeightsSource(filename="hf-audio", hint="Pass a transformers audio-classification checkpoint "
                              "folder, or its hub id 'owner/name', with --weights."),
        audio=AUDIO,
        labels=LabelMapping(kind="softmax", fake_index=1, logits=True),
        card="the checkpoint's own model card (huggingface.co/OWNER/NAME or its folder's README)",
        trained_on="whatever the checkpoint was trained on",
        licence="the checkpoint's own",
        backends=("torch",),
    ),
)
register_voice_models(*ENTRIES)
