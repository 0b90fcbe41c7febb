"""`stage studio`: a browser studio for musicians (Gradio).

Upload a mix, pick the stem, type a prompt, choose the tempo mode (auto: track the mix's beats;
number: a metronome; off: the mix itself is the context, see stage.generate.takes), the number
of takes and the sampling controls. Each take shows its waveform with the beat grid drawn on, two
players (stem, stem + mix) and downloads of both WAVs (with their JSON sidecars on disk).

The handler is a thin wrapper over the same library calls as the CLI (`plan_takes`,
`render_takes`, `write_takes`). Requests go through Gradio's queue; the model itself is used by
one job at a time (a lock), so concurrent users wait their turn instead of sharing its caches.
Server state lives in the `Studio` dataclass, not in module globals.

    studio = Studio.create(StudioConfig(model="stage-drums"))  # or "stage-mini-drums" (bundled)
    studio.launch()
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stage.errors import StageError

if TYPE_CHECKING:
    from stage.model.stage_model import StageModel

MAX_TAKES = 4
BPM_MODES = {
    "auto: follow the mix's beats": "auto",
    "number: a metronome at this BPM": "number",
    "off: the mix is the context": "off",
}
WAVE_WIDTH, WAVE_HEIGHT = 1000, 150
COLORS = {"wave": (52, 101, 164), "beat": (150, 150, 150), "downbeat": (220, 80, 30), "axis": (200, 200, 200),
          "text": (90, 90, 90), "background": (255, 255, 255)}


@dataclass(frozen=True)
class StudioConfig:
    """Server settings. max_upload_mb caps uploads (checked by Gradio and again by the handler);
    max_seconds caps the audio length a request may ask for; concurrency is the queue's
    default_concurrency_limit (jobs that may run at once; the model is still used one at a time)."""

    model: str = "stage-drums"
    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: float = 50.0
    max_seconds: float = 60.0
    concurrency: int = 1
    device: str = "auto"
    work_dir: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0 < self.max_upload_mb <= 2048:
            raise StageError(f"--max-upload-mb must be in (0, 2048], got {self.max_upload_mb}")
        if not 0 < self.max_seconds <= 3600:
            raise StageError(f"--max-seconds must be in (0, 3600], got {self.max_seconds}")
        if not 1 <= self.concurrency <= 64:
            raise StageError(f"--concurrency must be in 1..64, got {self.concurrency}")
        if not 0 <= self.port <= 65535:
            raise StageError(f"--port must be in 0..65535, got {self.port}")


@dataclass
class StudioTake:
    """One take as the page shows it: files on disk and a title."""

    title: str
    stem: Path
    mix: Path
    image: Path
    sidecar: Path


@dataclass
class StudioJob:
    """The result of one request."""

    folder: Path
    input_image: Path
    summary: str
    takes: list[StudioTake]
    input_label: str = "input with beat grid"


# --------------------------------------------------------------------------- waveform pictures


def render_waveform(audio: np.ndarray, sample_rate: int, path: Path, beats=None, downbeats=None, title: str = "",
                    width: int = WAVE_WIDTH, height: int = WAVE_HEIGHT) -> Path:
    """Draw [C, N] audio as a min/max envelope with the beat grid (grey beats, orange downbeats)
    and a seconds axis; write a PNG to `path`."""
    from PIL import Image, ImageDraw

    x = np.asarray(audio, np.float32)
    x = x.mean(axis=0) if x.ndim == 2 else x
    n = len(x)
    seconds = n / sample_rate
    img = Image.new("RGB", (width, height), COLORS["background"])
    draw = ImageDraw.Draw(img)
    top, bottom = 18, height - 14
    mid, half = (top + bottom) / 2, (bottom - top) / 2
    peak = max(float(np.max(np.abs(x))) if n else 0.0, 1e-6)
    scale = half / max(peak, 0.05)  # normalised for display; very quiet audio stays small

    def px(t: float) -> int:
        return int(round(t / seconds * (width - 1))) if seconds > 0 else 0

    step = _tick_step(seconds)
    for t in np.arange(0.0, seconds + 1e-9, step):
        draw.line([(px(t), bottom), (px(t), bottom + 3)], fill=COLORS["axis"])
        draw.text((px(t) + 2, bottom + 1), f"{t:g}s", fill=COLORS["text"])
    draw.line([(0, mid), (width, mid)], fill=COLORS["axis"])
    if n:
        edges = np.linspace(0, n, width + 1).astype(int)
        for col in range(width):
            seg = x[edges[col]:max(edges[col + 1], edges[col] + 1)]
            lo, hi = float(seg.min()), float(seg.max())
            draw.line([(col, mid - hi * scale), (col, mid - lo * scale)], fill=COLORS["wave"])
    # The grid goes over the waveform so it stays visible; downbeats get a marker on top.
    for t in beats if beats is not None else ():
        draw.line([(px(t), top), (px(t), bottom)], fill=COLORS["beat"], width=1)
    for t in downbeats if downbeats is not None else ():
        draw.line([(px(t), top), (px(t), bottom)], fill=COLORS["downbeat"], width=2)
        draw.polygon([(px(t) - 4, top - 5), (px(t) + 4, top - 5), (px(t), top)], fill=COLORS["downbeat"])
    if title:
        draw.text((4, 2), title, fill=COLORS["text"])
    path = Path(path)
    img.save(path, format="PNG")
    return path


def _tick_step(seconds: float) -> float:
    for step in (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300):
        if seconds / step <= 12:
            return float(step)
    return 600.0


# --------------------------------------------------------------------------- the server


@dataclass
class Studio:
    """The studio's state: the loaded model, its settings, the folder holding every job's files,
    and the lock that gives the model to one job at a time."""

    model: StageModel
    config: StudioConfig
    work_dir: Path
    owns_work_dir: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, config: StudioConfig, model=None) -> Studio:
        """Load `config.model` (unless a model is given) and prepare the work folder."""
        if model is None:
            model = load_studio_model(config)
        if config.work_dir:
            work = Path(config.work_dir)
            work.mkdir(parents=True, exist_ok=True)
            owns = False
        else:
            work = Path(tempfile.mkdtemp(prefix="stage-studio-"))
            owns = True
        return cls(model, config, work, owns)

    def close(self) -> None:
        if self.owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    @property
    def stems(self) -> list[str]:
        from stage.model.registry import STEMS

        own = getattr(self.model.config, "stem", None)
        return [own] if own else list(STEMS)

    # ----------------------------------------------------------- one request

    def check_upload(self, path: str | os.PathLike | None) -> Path:
        if path is None or str(path) == "":
            raise StageError("upload a mix first (WAV, FLAC, OGG or MP3)")
        path = Path(path)
        if not path.is_file():
            raise StageError("the upload did not arrive; try again")
        size_mb = path.stat().st_size / 2**20
        if size_mb > self.config.max_upload_mb:
            raise StageError(f"the file is {size_mb:.1f} MB; this studio accepts up to {self.config.max_upload_mb:g} MB "
                             "(use `stage generate` for bigger files)")
        return path

    def run_job(self, upload, stem: str, prompt: str = "", bpm_mode: str = "auto", bpm: float | None = 120.0,
                beats_per_bar: int = 4, offset: float = 0.0, takes: int = 1, cfg: float = 3.0,
                temperature: float = 1.0, top_k: int = 250, top_p: float = 0.0, seed: int | None = None,
                progress=None) -> StudioJob:
        """Generate `takes` takes over the uploaded mix; write files and pictures; return them.
        progress(fraction, desc) is called as the job advances. Raises StageError for bad input."""
        from stage.audio import load_audio
        from stage.generate.params import GenerationParams
        from stage.generate.render import render_takes
        from stage.generate.takefiles import write_takes
        from stage.generate.takes import TakeSettings, plan_takes

        report = progress or (lambda fraction, desc="": None)
        path = self.check_upload(upload)
        mix, sr = load_audio(path, max_seconds=self.config.max_seconds)
        if stem not in self.stems:
            raise StageError(f"this studio's model generates {', '.join(self.stems)}, not {stem!r}")
        mode = BPM_MODES.get(bpm_mode, bpm_mode)
        if mode not in ("auto", "number", "off"):
            raise StageError(f"unknown BPM mode {bpm_mode!r}")
        if mode == "number" and (bpm is None or not np.isfinite(float(bpm))):
            raise StageError("type a BPM, or choose 'auto' or 'off'")
        takes = int(takes)
        if not 1 <= takes <= MAX_TAKES:
            raise StageError(f"takes must be between 1 and {MAX_TAKES}, got {takes}")
        seed = None if seed is None or (isinstance(seed, float) and not np.isfinite(seed)) or int(seed) < 0 else int(seed)
        params = GenerationParams(guidance=float(cfg), temperature=float(temperature), top_k=int(top_k),
                                  top_p=float(top_p), seed=seed)
        bpms: dict[str, float | str | None] = {"auto": "auto", "number": float(bpm or 0), "off": None}
        settings = TakeSettings(
            stem=stem, prompt=prompt or "", variations=takes, params=params,
            bpm=bpms[mode],
            beats_per_bar=int(beats_per_bar) if mode == "number" else None,
            offset=float(offset or 0.0) if mode == "number" else 0.0,
        )
        folder = self.work_dir / f"job-{uuid.uuid4().hex[:10]}"
        folder.mkdir()
        try:
            report(0.0, "tracking beats" if mode == "auto" else "preparing")
            plan = plan_takes(settings, mix, sr, self.model.sample_rate)
            report(0.02, "waiting for the model" if self.lock.locked() else "generating")
            with self.lock:
                takeset = render_takes(self.model, plan, lambda done, total: report(0.02 + 0.93 * done / total, "generating"))
            report(0.96, "writing files")
            written = write_takes(takeset, folder, Path(path).stem[:40] or "mix",
                                  extra={"model": {"source": self.config.model, "name": self.model.config.name},
                                         "input": {"path": Path(path).name, "sample_rate": sr, "channels": int(mix.shape[0])}})
            ctx = takeset.context
            grid = "no beat grid (the mix is the context)" if ctx.beats is None else (
                f"{ctx.bpm:.1f} BPM, {ctx.beats_per_bar} beats per bar" + (f" ({ctx.tracker})" if ctx.tracker else ""))
            assert plan.mix is not None  # the studio always generates over an upload
            input_image = render_waveform(plan.mix, sr, folder / "input.png", ctx.beats, ctx.downbeats)
            shown = []
            for take, w in zip(takeset.takes, written):
                title = f"take {take.index + 1}: {stem}, seed {take.seed}" + (
                    f", {ctx.bpm:.1f} BPM" if ctx.bpm is not None else "")
                image = render_waveform(take.stem, sr, folder / f"{w.name}.png", ctx.beats, ctx.downbeats)
                shown.append(StudioTake(title, w.stem, w.mix, image, w.sidecar))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        seconds = takeset.seconds
        summary = (f"**{len(shown)} take{'s' * (len(shown) > 1)}** of {stem}, {seconds:.1f} s at {sr} Hz, "
                   f"{plan.channels} ch - context: {_context_words(ctx)} - {takeset.timings['total']:.1f} s "
                   f"(real-time factor {takeset.timings['real_time_factor']:.2f})")
        report(1.0, "done")
        return StudioJob(folder, input_image, summary, shown, f"input with beat grid: {grid}")

    # ----------------------------------------------------------- the page

    def build(self):
        """The Gradio Blocks page (not launched)."""
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline studio
        import gradio as gr

        from stage.model.registry import models_table

        model_name = getattr(self.model.config, "name", self.config.model)
        own = getattr(self.model.config, "stem", None)
        # delete_cache: Gradio copies every returned file into its cache; drop copies older than a day.
        with gr.Blocks(title="stage studio", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
            gr.Markdown(f"## stage studio\nUpload a mix and get a **{own or 'stem'}** that fits it. "
                        f"Model: `{self.config.model}` ({model_name}). Uploads up to {self.config.max_upload_mb:g} MB, "
                        f"{self.config.max_seconds:g} s.")
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.Audio(label="mix", type="filepath", sources=["upload"], elem_id="mix-upload")
                    stem = gr.Dropdown(self.stems, value=self.stems[0], label="stem", elem_id="stem")
                    prompt = gr.Textbox(label="prompt", placeholder="Genres: Rock, Punk. Moods: energetic.", elem_id="prompt")
                    bpm_mode = gr.Radio(list(BPM_MODES), value=next(iter(BPM_MODES)), label="tempo", elem_id="bpm-mode")
                    with gr.Row():
                        bpm = gr.Number(120, label="BPM", minimum=20, maximum=400, elem_id="bpm")
                        beats_per_bar = gr.Number(4, label="beats per bar", precision=0, minimum=1, maximum=16)
                        offset = gr.Number(0.0, label="first downbeat (s)")
                    takes = gr.Slider(1, MAX_TAKES, value=1, step=1, label="takes", elem_id="takes")
                    with gr.Accordion("sampling", open=False):
                        cfg = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="guidance (cfg)")
                        temperature = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="temperature")
                        top_k = gr.Slider(0, 2048, value=250, step=1, label="top-k (0 = all)")
                        top_p = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="top-p (0 = off)")
                        seed = gr.Number(-1, label="seed (-1 = random)", precision=0)
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    summary = gr.Markdown(elem_id="summary")
                    input_image = gr.Image(label="input with beat grid", type="filepath", interactive=False,
                                           elem_id="input-wave", format="png")
                    slots = []
                    for i in range(MAX_TAKES):
                        with gr.Column(visible=False, elem_id=f"take-{i}") as col:
                            title = gr.Markdown()
                            image = gr.Image(label=f"take {i + 1}", type="filepath", interactive=False,
                                             elem_id=f"take-{i}-wave", format="png")
                            with gr.Row():
                                stem_audio = gr.Audio(label="stem", type="filepath", interactive=False, elem_id=f"take-{i}-stem")
                                mix_audio = gr.Audio(label="stem + mix", type="filepath", interactive=False,
                                                     elem_id=f"take-{i}-mix")
                            with gr.Row():
                                stem_dl = gr.DownloadButton("Download stem", elem_id=f"take-{i}-stem-download")
                                mix_dl = gr.DownloadButton("Download mix", elem_id=f"take-{i}-mix-download")
                        slots.append((col, title, image, stem_audio, mix_audio, stem_dl, mix_dl))
            with gr.Accordion("models: where to get the weights", open=False):
                gr.Markdown(models_table() + "\n\nThe STAGE-mini models come with stage and work offline "
                            "(`stage studio --model stage-mini-drums`). Put downloaded files in `./checkpoints/`, "
                            "`~/.cache/stage/models/` or a folder named by `$STAGE_MODELS`, then start "
                            "`stage studio --model NAME`.")

            def handle(upload_path, stem_v, prompt_v, mode_v, bpm_v, bpb_v, offset_v, takes_v, cfg_v, temp_v, k_v, p_v,
                       seed_v, progress=gr.Progress()):
                try:
                    job = self.run_job(upload_path, stem_v, prompt_v, mode_v, bpm_v, int(bpb_v or 4), offset_v or 0.0,
                                       takes_v, cfg_v, temp_v, k_v, p_v, seed_v,
                                       progress=lambda fraction, desc="": progress(fraction, desc=desc))
                except StageError as err:
                    raise gr.Error(str(err)) from None
                out = [job.summary, gr.Image(value=str(job.input_image), label=job.input_label)]
                for i in range(MAX_TAKES):
                    if i < len(job.takes):
                        t = job.takes[i]
                        out += [gr.Column(visible=True), f"**{t.title}**", gr.Image(value=str(t.image), label=t.title),
                                str(t.stem), str(t.mix),
                                gr.DownloadButton(value=str(t.stem)), gr.DownloadButton(value=str(t.mix))]
                    else:
                        out += [gr.Column(visible=False), "", None, None, None, gr.DownloadButton(value=None),
                                gr.DownloadButton(value=None)]
                return out

            outputs = [summary, input_image] + [c for slot in slots for c in slot]
            button.click(handle, [upload, stem, prompt, bpm_mode, bpm, beats_per_bar, offset, takes, cfg, temperature,
                                  top_k, top_p, seed], outputs, concurrency_limit="default")
        demo.queue(default_concurrency_limit=self.config.concurrency, max_size=64)
        return demo

    def launch(self, block: bool = True, quiet: bool = False):
        """Start the server (blocking unless block=False, which returns the running Blocks)."""
        import gradio as gr

        demo = self.build()
        # System fonts only: the default theme pulls fonts from Google, which an offline studio cannot reach.
        theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
        demo.launch(server_name=self.config.host, server_port=self.config.port, prevent_thread_lock=not block,
                    max_file_size=int(self.config.max_upload_mb * 2**20), allowed_paths=[str(self.work_dir)], quiet=quiet,
                    theme=theme, show_error=True, ssr_mode=False, inbrowser=False, share=False)
        return demo


def _context_words(ctx) -> str:
    if ctx.mode == "mix":
        return "the mix"
    if ctx.mode == "metronome":
        return f"metronome at {ctx.bpm:g} BPM"
    return f"click on the mix's beats ({ctx.bpm:.1f} BPM)"


def load_studio_model(config: StudioConfig):
    """Load `config.model` on `config.device` (known names resolve through the registry, which
    says where to put missing weights)."""
    from stage.model.checkpoints import load_model

    return load_model(config.model, device=config.device)  # load_model resolves "auto" and checks the name
