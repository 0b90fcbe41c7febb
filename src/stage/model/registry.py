"""Known models and stems: what `--model stage-drums` means, and where its weights must be.

The STAGE authors released two fine-tuned MusicGen-small checkpoints (docs/method.md §7.1):
`stage-drums.safetensors` (trained to step 30 000) and `stage-bass.safetensors` (step 57 500),
both complete `LightningMusicgen` state_dicts. They are linked from the README of
https://github.com/giorgioskij/stage (hosted on Google Drive, not on the Hugging Face hub), so
stage cannot fetch them itself: the user downloads the file once and puts it in a models folder.
The base `musicgen-small` comes from the hub (facebook/musicgen-small).

STAGE-mini (`stage-mini-drums`, `stage-mini-bass`) is a small STAGE (the `mini` preset, ~8 M
parameters) trained on CPU on stage's synthetic band corpus (`configs/mini-*.yaml`) and shipped
inside the package (`stage/assets/stage-mini-*`: thin fp16 checkpoints whose EnCodec and T5 are
package assets too), so it works offline with no download. It is the default when the authors'
model for a stem is not installed (`default_model`).

A known name resolves to the first match among, in each models folder:
`<name>/` (a folder written by `stage convert`, preferred: it loads with no network) or
`<name>.safetensors` (the authors' file as downloaded); then, for STAGE-mini, the bundled folder.
Models folders, in order: `$STAGE_MODELS` (one or more folders separated by the OS path
separator), `./checkpoints`, `~/.cache/stage/models`.

    resolve_known("stage-drums")  # -> KnownSource(source="checkpoints/stage-drums.safetensors", stem="drums")
    default_model("drums")        # -> DefaultModel(name="stage-mini-drums", note="using stage-mini-drums (bundled); ...")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stage.errors import CheckpointError, StageError

# The instruments STAGE generates (docs/method.md §6.5: drums, bass, guitar, keyboard
# (`other_keys`), piano, strings (`bowed_strings`), other), and the default context stems of
# training (stage.data.samples). Vocals were never a target or a context stem in training, so they
# are not offered. Every one is a canonical stem of the datasets (stage.data.datasets).
STEMS = ("drums", "bass", "guitar", "keyboard", "piano", "strings", "other")

MODELS_ENV = "STAGE_MODELS"
AUTHORS_REPO = "https://github.com/giorgioskij/stage"
# The package's bundled models and frozen parts (stage/assets); a module attribute so tests can
# point it elsewhere.
ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class KnownModel:
    """A model users can name instead of giving a path.

    stem: the instrument it generates (None for a base MusicGen).
    filename: the file the authors publish (looked up in the models folders), or None.
    hub_id: a Hugging Face hub id to fall back to when no local copy exists, or None.
    bundled: the folder name of a stage checkpoint shipped in `stage/assets`, or None.
    provenance: where the weights come from, in words, for error messages and the studio.
    """

    name: str
    stem: str | None
    description: str
    provenance: str
    filename: str | None = None
    hub_id: str | None = None
    bundled: str | None = None


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="stage-drums",
            stem="drums",
            description="STAGE drums: MusicGen-small fine-tuned on MoisesDB (30 000 steps) to add drums to a mix "
            "or a click",
            provenance=f"the STAGE authors' release, linked (Google Drive) from the README of {AUTHORS_REPO}",
            filename="stage-drums.safetensors",
        ),
        KnownModel(
            name="stage-bass",
            stem="bass",
            description="STAGE bass: MusicGen-small fine-tuned on MoisesDB (57 500 steps) to add a bass line to a mix",
            provenance=f"the STAGE authors' release, linked (Google Drive) from the README of {AUTHORS_REPO}",
            filename="stage-bass.safetensors",
        ),
        KnownModel(
            name="stage-mini-drums",
            stem="drums",
            description="STAGE-mini drums: a small STAGE (8 M parameters) trained on CPU on stage's synthetic band "
            "corpus; rough, but offline and fast",
            provenance="bundled with stage (stage/assets/stage-mini-drums; recipe: configs/mini-drums.yaml)",
            bundled="stage-mini-drums",
        ),
        KnownModel(
            name="stage-mini-bass",
            stem="bass",
            description="STAGE-mini bass: a small STAGE (8 M parameters) trained on CPU on stage's synthetic band "
            "corpus; rough, but offline and fast",
            provenance="bundled with stage (stage/assets/stage-mini-bass; recipe: configs/mini-bass.yaml)",
            bundled="stage-mini-bass",
        ),
        KnownModel(
            name="musicgen-small",
            stem=None,
            description="Meta's MusicGen-small base model (text-to-music; not fine-tuned for accompaniment)",
            provenance="the Hugging Face hub (facebook/musicgen-small), downloaded on first use",
            hub_id="facebook/musicgen-small",
        ),
    )
}


@dataclass(frozen=True)
class KnownSource:
    """What a known name resolved to: a `load_model` source and the stem to record."""

    source: str
    stem: str | None


def models_dirs() -> list[Path]:
    """The folders searched for known models, in order (see the module docstring)."""
    dirs = [Path(p).expanduser() for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    dirs += [Path("checkpoints"), Path("~/.cache/stage/models").expanduser()]
    return dirs


def find_local(name: str) -> Path | None:
    """The first local copy of known model `name` (a converted folder or the authors' file in a
    models folder, else its bundled folder)."""
    model = KNOWN_MODELS[name]
    for folder in models_dirs():
        converted = folder / name
        if converted.is_dir():
            return converted
        if model.filename and (folder / model.filename).is_file():
            return folder / model.filename
    return bundled_path(name)


def bundled_path(name: str) -> Path | None:
    """The bundled checkpoint folder of known model `name`, if it has one and this install holds
    its weights."""
    model = KNOWN_MODELS[name]
    if model.bundled is None:
        return None
    folder = ASSETS / model.bundled
    return folder if (folder / "stage.json").is_file() and (folder / "model.safetensors").is_file() else None


def missing_message(name: str) -> str:
    """One line telling the user exactly where to get and put the weights of `name`."""
    model = KNOWN_MODELS[name]
    where = " or ".join(str(d) + "/" for d in models_dirs())
    if model.bundled is not None:
        return (
            f"model {name!r} is not in this install of stage (no trained weights in {ASSETS / model.bundled}/): "
            f"reinstall stage-music, or train it with `stage train --config configs/{name.removeprefix('stage-')}.yaml` "
            f"and pass --model RUN/checkpoints/step-N (or put the folder in {where} as {name}/)"
        )
    return (
        f"model {name!r} is not installed: download {model.filename} ({model.provenance}) and put it in {where} "
        f"(or set {MODELS_ENV}=FOLDER, or pass --model path/to/{model.filename}); optionally convert it once for "
        f"offline loading: stage convert {model.filename} --out checkpoints/{name} --stem {model.stem}"
    )


def resolve_known(source) -> KnownSource | None:
    """Map a known model name to something `load_model` can open.

    Returns None when `source` is not a known name, or is also an existing path (a path wins).
    Raises CheckpointError, with download instructions, when a known model has no local copy and
    no hub fallback.
    """
    text = str(source)
    if text not in KNOWN_MODELS or Path(text).exists():
        return None
    model = KNOWN_MODELS[text]
    local = find_local(text)
    if local is not None:
        return KnownSource(str(local), model.stem)
    if model.hub_id is not None:
        return KnownSource(model.hub_id, model.stem)
    raise CheckpointError(missing_message(text))


@dataclass(frozen=True)
class DefaultModel:
    """The model `stage generate --stem S` uses when no --model is given, and one line that says
    which one and why (printed for the user)."""

    name: str
    note: str


def default_model(stem: str) -> DefaultModel | None:
    """The best installed model for `stem`: the authors' (stage-drums, stage-bass) when its
    weights are found locally, else the bundled STAGE-mini one. None when no known model
    generates `stem`; CheckpointError, saying where to get the weights, when none is installed."""
    authors = [m for m in KNOWN_MODELS.values() if m.stem == stem and m.filename]
    minis = [m for m in KNOWN_MODELS.values() if m.stem == stem and m.bundled]
    for m in authors:
        local = find_local(m.name)
        if local is not None:
            return DefaultModel(m.name, f"using {m.name} ({local})")
    for m in minis:
        local = find_local(m.name)
        if local is not None:
            how = "bundled" if local == bundled_path(m.name) else str(local)
            note = f"using {m.name} ({how})"
            if authors:
                a = authors[0]
                where = " or ".join(str(d) + "/" for d in models_dirs())
                note += f"; the authors' {a.name} is bigger: {a.provenance}; put {a.filename} in {where}"
            return DefaultModel(m.name, note)
    if not authors and not minis:
        return None
    names = " or ".join(m.name for m in authors + minis)
    details = "; ".join(missing_message(m.name) for m in authors + minis)
    raise CheckpointError(f"no {stem} model is installed ({names}): {details}")


def default_model_for(stem: str) -> str | None:
    """The name of `default_model(stem)` (None when no known model generates `stem`)."""
    choice = default_model(stem)
    return None if choice is None else choice.name


def check_stem(stem: str) -> str:
    """Validate a stem name (case-insensitive) -> its canonical spelling."""
    name = str(stem).strip().lower()
    if name not in STEMS:
        raise StageError(f"unknown stem {stem!r}; choose one of: {', '.join(STEMS)}")
    return name


def models_table() -> str:
    """A Markdown table of the known models: name, stem, what it is, where it comes from."""
    rows = ["| model | stem | what | weights |", "|---|---|---|---|"]
    for m in KNOWN_MODELS.values():
        found = find_local(m.name) if m.filename or m.bundled else None
        if m.bundled and found is not None and found == bundled_path(m.name):
            status = f"bundled, installed: `{found}`"
        elif found:
            status = f"installed: `{found}`"
        elif m.bundled:
            status = f"not in this install ({m.provenance})"
        else:
            status = m.provenance
        rows.append(f"| `{m.name}` | {m.stem or '-'} | {m.description} | {status} |")
    return "\n".join(rows)
