"""`stage studio`: a browser studio for musicians (Gradio), a workspace over session folders.

A song is a `stage session` folder (stage.generate.session) in the sessions folder (`--sessions`):
create one from an upload, or open one made here or by `stage session new`. The page
(stage.app.page) shows the upload and every accepted stem as lanes of a multitrack played in the
browser (waveforms with the beat grid, transport, mute and solo: stage.app.multitrack), lists
the takes of the chosen stem for audition (alone, or over the mix), and accepts (a new mix
version), rejects or regenerates them; any earlier mix version can be made current again, and
the whole song exports as a zip of WAVs plus the sidecars. A generation shows
its progress on the takes it is making (`Job`: "drums take003, take004: generating", a bar) and
Cancel stops it at the next decoding step, writing nothing (stage.generate.cancel); while it
runs, the first take streams into a player (`generate(stream=...)`, window by window past one
model window).

The job functions here (`new_session`, `generate`, `accept`, ...) are thin wrappers over
`Session`, the same calls as the CLI. Requests go through Gradio's queue; a model is used by one
job at a time (a lock), and a session by one request at a time (`Workspace.locked`). Server state
lives in the `Studio` dataclass, not in module globals.

    studio = Studio.create(StudioConfig(model="stage-mini-drums", sessions="stage-sessions"))
    studio.launch()
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stage.app.form import BPM_MODES, MAX_TAKES, take_settings  # noqa: F401  (BPM_MODES, MAX_TAKES: re-exported)
from stage.app.mixer import audible, lane_factors, render_lanes
from stage.app.multitrack import lanes_spec
from stage.app.uploads import load_upload
from stage.app.waveform import COLORS, render_waveform  # noqa: F401  (re-exported: the studio's pictures)
from stage.app.workspace import Workspace, export_zip, name_from_file
from stage.audio import MAX_SECONDS
from stage.data.beats import BeatGrid
from stage.data.metronome import DEFAULT_BEATS_PER_BAR
from stage.errors import Cancelled, StageError
from stage.files import ensure_writable_dir
from stage.generate.naming import numbered_take_id


@dataclass(frozen=True)
class StudioConfig:
    """Server settings. model: the model loaded at start (a name or a path; the page offers it,
    tiny and the known models installed here). sessions: the sessions folder. max_upload_mb caps
    uploads (checked by Gradio and again by the handler); max_seconds caps a song's length;
    concurrency is the queue's default_concurrency_limit (jobs at once; each model still serves
    one at a time) and queue_size its max_size (requests waiting; more are turned away)."""

    model: str = "stage-drums"
    sessions: str = "stage-sessions"
    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: float = 200.0  # a 10-minute 44.1 kHz stereo 16-bit WAV is ~106 MB
    max_seconds: float = 600.0  # whole songs of up to 10 minutes, through the long-form windows
    concurrency: int = 1
    queue_size: int = 64
    device: str = "auto"
    work_dir: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0 < self.max_upload_mb <= 2048:
            raise StageError(f"--max-upload-mb must be in (0, 2048], got {self.max_upload_mb}")
        if not 0 < self.max_seconds <= MAX_SECONDS:
            raise StageError(f"--max-seconds must be in (0, {MAX_SECONDS:g}], got {self.max_seconds}")
        if not 1 <= self.concurrency <= 64:
            raise StageError(f"--concurrency must be in 1..64, got {self.concurrency}")
        if not 1 <= self.queue_size <= 10_000:
            raise StageError(f"--queue-size must be in 1..10000, got {self.queue_size}")
        if not 0 <= self.port <= 65535:
            raise StageError(f"--port must be in 0..65535, got {self.port}")
        for flag, folder in (("--sessions", self.sessions), ("--work-dir", self.work_dir)):
            if folder and Path(folder).exists() and not Path(folder).is_dir():  # before the model loads
                raise StageError(f"{flag} {folder}: exists and is not a folder")


@dataclass
class Lane:
    """One lane: a title, the WAV to play and its waveform picture (drawn for the take under
    audition; the multitrack lanes are drawn in the browser, stage.app.multitrack)."""

    title: str
    audio: Path
    image: Path | None = None


@dataclass
class SessionView:
    """What the page shows of a session: the lanes (current mix first, then each accepted stem),
    the takes of the chosen stem (rows for a table), the selected take, the mix versions, the
    labels of the lanes that can be muted or soloed (stage.app.mixer: the starting mix, each stem)
    and the browser multitrack's spec (stage.app.multitrack.lanes_spec)."""

    name: str
    summary: str
    lanes: list[Lane]
    rows: list[list]
    take_ids: list[str]
    selected: str | None
    take_lane: Lane | None
    take_mix: Path | None
    versions: list[str]
    current: str
    mixer: list[str] = field(default_factory=list)
    multitrack: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StreamChunk:
    """A piece of the take being generated, for a streaming player: `path` (a WAV at the
    session's `rate` and channels) holds the first take over the mix from sample `start` on;
    `stream` names the take's stream (its chunks follow each other with no gap or overlap)."""

    path: Path
    start: int
    stream: str
    rate: int


@dataclass
class Job:
    """A generation in progress: its session and stem, the takes it is making (known once it has
    the session), how far it is (fraction, desc), the event that cancels it and the one set when
    it ends, with its outcome ("written", "cancelled" or "failed: ...")."""

    session: str
    stem: str
    progress: Callable[..., None] | None = None
    takes: list[str] = field(default_factory=list)
    fraction: float = 0.0
    desc: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: str = ""

    def report(self, fraction: float, what: str) -> None:
        """Record and pass on progress; the desc names the takes ("drums take003, take004: generating")."""
        self.fraction = fraction
        self.desc = f"{self.stem} {', '.join(self.takes)}: {what}" if self.takes else f"{self.stem}: {what}"
        if self.progress is not None:
            self.progress(fraction, desc=self.desc)


@dataclass
class Studio:
    """The studio's state: the sessions workspace, the loaded models, the folder holding
    pictures and exports, the tempo grids set per session, and the lock that gives a model to
    one job at a time."""

    config: StudioConfig
    workspace: Workspace
    work_dir: Path
    models: dict = field(default_factory=dict)
    owns_work_dir: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    grids: dict[str, BeatGrid] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    jobs_guard: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, config: StudioConfig, model=None) -> Studio:
        """Load `config.model` (unless a model is given) and prepare the folders."""
        if model is None:
            model = load_studio_model(config.model, config.device)
        if config.work_dir:
            work = Path(config.work_dir)
            ensure_writable_dir(work)
            owns = False
        else:
            work = Path(tempfile.mkdtemp(prefix="stage-studio-"))
            owns = True
        workspace = Workspace(Path(config.sessions))
        ensure_writable_dir(workspace.root)
        return cls(config, workspace, work, {config.model: model}, owns)

    def close(self) -> None:
        if self.owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # ----------------------------------------------------------- models

    def model_choices(self) -> list[str]:
        """The startup model, tiny, and every known model installed here."""
        from stage.model.registry import KNOWN_MODELS, find_local

        found = [m.name for m in KNOWN_MODELS.values() if (m.filename or m.bundled) and find_local(m.name) is not None]
        return list(dict.fromkeys([self.config.model, *self.models, *found, "tiny"]))

    def model_for(self, name: str | None, stem: str):
        """The model called `name` (loaded once), checked to generate `stem`."""
        name = name or self.config.model
        if name not in self.model_choices():  # a request never names a path: only what is offered
            raise StageError(f"unknown model {name!r}; choose one of: {', '.join(self.model_choices())}")
        with self.lock:
            if name not in self.models:
                self.models[name] = load_studio_model(name, self.config.device)
            model = self.models[name]
        own = model.config.stem
        if own is not None and own != stem:
            raise StageError(f"model {name!r} generates {own}, not {stem}; choose a {stem} model (or tiny)")
        return model

    # ----------------------------------------------------------- sessions

    def new_session(self, upload, name: str | None = "") -> str:
        """Check and decode an upload, start a session from it; returns the session's name."""
        mix, sr, path = load_upload(upload, self.config.max_upload_mb, self.config.max_seconds)
        name = self.workspace.free_name(name.strip() if name and name.strip() else name_from_file(path))
        self.workspace.create(name, mix, sr, source=path.name)
        return name

    def generate(self, name: str, stem: str, model: str | None = None, progress=None,
                 stream: Callable[[StreamChunk], None] | None = None, cancel: threading.Event | None = None, **form):
        """Generate takes of `stem` over the session's current mix (form: see `take_settings`).
        Returns the store's `SessionTakes`; progress(fraction, desc) follows the job, its desc
        naming the takes ("drums take003, take004: generating"). `cancel(name)` from another
        request stops it: `Cancelled`, and the session folder stays as it was.
        stream(chunk): while the model runs, the first take over the mix as it grows, a
        `StreamChunk` (a WAV of the new samples in the work folder) about once a second of stem, or
        after each long-form window past one model window. cancel: an event of the caller's that
        stops this job too (the page sets it when the request is closed early)."""
        settings = take_settings(stem, **form)  # every option is checked before the model loads
        with self.job(name, settings.stem, progress, cancel) as job:  # cancellable from here on
            job.report(0.0, "waiting for the model")
            chosen = self.model_for(model, settings.stem)  # (waits while another job has the model)
            meta = {"model": {"source": model or self.config.model, "name": chosen.config.name,
                              "stem": chosen.config.stem}}
            with self.workspace.locked(name) as session:
                first = session.state.next_take
                job.takes = [numbered_take_id(first + i) for i in range(settings.variations)]
                job.report(0.0, "tracking beats" if settings.context_mode == "beats" else "waiting for the model")
                on_partial = self._streamer(session, stream) if stream is not None else None
                with self.lock:
                    result = session.add_takes(chosen, settings, lambda done, total: job.report(
                        0.02 + 0.96 * done / total, "generating"), extra=meta, cancel=job.cancel,
                        on_partial=on_partial)
            job.report(1.0, "done")
        ctx = result.takeset.context
        if ctx.beats is not None:
            assert ctx.bpm is not None and ctx.beats_per_bar is not None and ctx.downbeats is not None  # a grid has all three
            self.grids[session.folder.name] = BeatGrid(ctx.beats, ctx.downbeats, float(ctx.bpm), int(ctx.beats_per_bar),
                                                       ctx.tracker or "metronome")
        return result

    def _streamer(self, session, stream: Callable[[StreamChunk], None]) -> Callable[[np.ndarray], None]:
        """The `on_partial` for `Session.add_takes` that hands `stream` the first take over the
        session's mix as it grows: each `StreamChunk` a WAV of the samples new since the last one
        (written whole, then renamed: a player never reads half a file). A song longer than one
        model window streams window by window (each chunk is the stem up to the next window's
        crossfade, stage.generate.longform)."""
        from stage.audio import save_audio
        from stage.generate.render import mix_with_headroom

        s = session.state
        mix = session.load_current_mix()
        folder = self.work_dir / "stream" / session.folder.name
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}"  # this take's stream: every chunk's file starts with it
        sent = chunks = 0  # samples handed out, chunk files written

        def on_partial(stems: np.ndarray) -> None:  # [B, C, m], m <= N
            nonlocal sent, chunks
            m = stems.shape[-1]
            if m <= sent:
                return
            preview, _ = mix_with_headroom(mix[:, :m], stems[0])
            chunks += 1
            out = save_audio(folder / f"{name}_{chunks:04d}.wav", preview[:, sent:], s.sample_rate, overwrite=True)
            stream(StreamChunk(out, sent, name, s.sample_rate))
            sent = m

        return on_partial

    @contextlib.contextmanager
    def job(self, name: str, stem: str, progress=None, cancel: threading.Event | None = None) -> Iterator[Job]:
        """Register a generation for session `name` (so `cancel` finds it) while it runs;
        `cancel`, when given, is the job's cancel event."""
        job = Job(self.workspace.path(name).name, stem, progress)
        if cancel is not None:
            job.cancel = cancel
        with self.jobs_guard:
            self.jobs.append(job)
        try:
            yield job
            job.outcome = "written"
        except Cancelled:
            job.outcome = "cancelled"
            raise
        except BaseException as err:
            job.outcome = f"failed: {err}"
            raise
        finally:
            with self.jobs_guard:
                self.jobs.remove(job)
            job.done.set()

    def running(self, name: str) -> list[Job]:
        """The generations of session `name` in progress (or waiting for the session or the model)."""
        folder = self.workspace.path(name).name
        with self.jobs_guard:
            return [j for j in self.jobs if j.session == folder]

    def cancel(self, name: str, wait: float = 10.0) -> str:
        """Stop every take of session `name` being generated; wait up to `wait` seconds for them
        to stop and say what happened (one line). The takes stop at their next decoding step;
        one still waiting for the model stops as soon as it gets it. Nothing is written."""
        jobs = self.running(name)
        if not jobs:
            return f"nothing to cancel: no take is being generated in {self.workspace.path(name).name}"
        for j in jobs:
            j.cancel.set()
        for j in jobs:
            j.done.wait(max(0.0, wait))
        if not all(j.done.is_set() for j in jobs):
            return "cancelling: the take stops as soon as the model is free; nothing will be written"
        written = [t for j in jobs if j.outcome == "written" for t in j.takes]
        if written:
            return f"too late to cancel: {', '.join(written)} had been written"
        failed = [j.outcome for j in jobs if j.outcome.startswith("failed")]
        return f"the take stopped ({failed[0]})" if failed else "take cancelled; nothing was written"

    def regenerate(self, name: str, take_id: str, same_seed: bool = True, model: str | None = None, progress=None,
                   **form):
        """One new take of the same stem as `take_id`, over the current mix, with the form's
        settings and the take's seed (same_seed) or a fresh one."""
        take = self.workspace.open(name).find_take(take_id)
        form.update(takes=1, seed=take.seed if same_seed else None)
        return self.generate(name, take.stem, model, progress, **form)

    def accept(self, name: str, take_id: str, gain_db: float = 0.0):
        with self.workspace.locked(name) as session:
            return session.accept(take_id, float(gain_db or 0.0))

    def reject(self, name: str, take_id: str):
        with self.workspace.locked(name) as session:
            return session.reject(take_id)

    def use_version(self, name: str, version):
        with self.workspace.locked(name) as session:
            return session.use_version(str(version).split(":")[0])

    def track(self, name: str, beats_per_bar: int | None = None) -> BeatGrid:
        """Track the beats of the session's current mix; the grid is drawn on the lanes."""
        from stage.data.beats import track_beats

        session = self.workspace.open(name)
        meters = (int(beats_per_bar),) if beats_per_bar else (3, 4)
        grid = track_beats(session.load_current_mix(), session.state.sample_rate, beats_per_bar=meters)
        self.grids[session.folder.name] = grid
        return grid

    def set_tempo(self, name: str, bpm: float, beats_per_bar: int = DEFAULT_BEATS_PER_BAR, offset: float = 0.0) -> BeatGrid:
        """Use a typed metronome grid for the session's lanes."""
        from stage.data.metronome import metronome_times

        session = self.workspace.open(name)
        if bpm is None or not np.isfinite(float(bpm)):
            raise StageError("type a BPM")
        bpb, offset = int(beats_per_bar or DEFAULT_BEATS_PER_BAR), float(offset or 0.0)
        beats, downbeats = metronome_times(float(bpm), bpb, session.state.samples / session.state.sample_rate, offset)
        tempo = BeatGrid(beats, downbeats, float(bpm), bpb, "typed")
        self.grids[session.folder.name] = tempo
        return tempo

    def export(self, name: str) -> Path:
        """The session's zip (see `export_zip`), in the work folder."""
        with self.workspace.locked(name) as session:
            out = self.work_dir / "exports" / f"{session.folder.name}_v{session.state.current}.zip"
            return export_zip(session, out)

    def mix_lanes(self, name: str, muted: list[str] | None = None, soloed: list[str] | None = None) -> Path:
        """The current mix with only the lanes heard (mute / solo, see stage.app.mixer), as a WAV
        in the work folder (one file per selection and mix version, reused)."""
        session = self.workspace.open(name)
        lanes = [lane.label for lane in lane_factors(session)]
        heard = audible(lanes, muted, soloed)
        mask = "".join("1" if x in heard else "0" for x in lanes)
        out = self.work_dir / "mixer" / session.folder.name / f"v{session.state.current}_{mask}.wav"
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        return render_lanes(session, out, muted, soloed)

    # ----------------------------------------------------------- the view

    def view(self, name: str, stem: str | None = None, selected: str | None = None) -> SessionView:
        """Pictures and tables for the page (reads the store; writes only pictures)."""
        from stage.audio import load_audio

        session = self.workspace.open(name)
        s, folder = session.state, session.folder
        pictures = self.work_dir / "pictures" / folder.name
        pictures.mkdir(parents=True, exist_ok=True)
        tempo = self.grids.get(folder.name)

        def lane(title: str, rel: str) -> Lane:  # the take under audition, with its picture
            audio, sr = load_audio(folder / rel)
            grid = take_grid(folder, rel) or tempo  # a take's own grid, else the song's
            marks = (grid.beats, grid.downbeats) if grid else (None, None)
            image = render_waveform(audio, sr, pictures / f"{Path(rel).stem}.png", *marks)
            return Lane(title, folder / rel, image)

        stems = session.accepted_takes()
        if tempo is None:  # no grid set in this server: the one the latest stem was generated against
            grids = [g for g in (take_grid(folder, t.file) for t in stems) if g is not None]
            tempo = grids[-1] if grids else None
        lanes = [Lane(f"song: mix v{s.current}", folder / session.current_mix.file)]
        lanes += [Lane(f"{take.stem}: {take.id}, seed {take.seed}", folder / take.file) for take in stems]
        takes = [t for t in s.takes if stem is None or t.stem == stem]
        rows = [[t.id, t.stem, t.seed, "" if t.bpm is None else f"{t.bpm:g} ({t.context})", f"v{t.over_mix}",
                 _status(t), t.prompt] for t in takes]
        ids = [t.id for t in takes]
        if selected not in ids:
            fresh = [t.id for t in takes if not t.rejected and t.accepted_in is None]
            selected = fresh[-1] if fresh else (ids[-1] if ids else None)
        take_lane = take_mix = None
        if selected is not None:
            t = session.find_take(selected)
            take_lane = lane(f"{t.id}: {t.stem}, seed {t.seed}, over mix v{t.over_mix} ({_status(t)})", t.file)
            take_mix = folder / t.mix_file
        versions = [f"v{m.index}: " + (f"+ {m.take} ({session.find_take(m.take).stem})" if m.take else "start")
                    for m in s.mixes]
        summary = (f"**{folder.name}**: {s.sample_rate} Hz, {s.channels} ch, {s.samples / s.sample_rate:.2f} s; "
                   f"mix v{s.current} with {len(lanes) - 1} stem{'s' * (len(lanes) != 2)}; {len(s.takes)} takes"
                   + (f"; beat grid: {tempo.describe()}" if tempo else ""))
        multitrack = lanes_spec(session, tempo)
        mixer = [lane["label"] for lane in multitrack["lanes"]]  # (lane_factors' labels, in order)
        return SessionView(folder.name, summary, lanes, rows, ids, selected, take_lane, take_mix, versions,
                           versions[s.current], mixer, multitrack)


    # ----------------------------------------------------------- the server

    def launch(self, block: bool = True, quiet: bool = False):
        """Start the server (blocking unless block=False, which returns the running Blocks)."""
        import gradio as gr

        from stage.app.multitrack import head
        from stage.app.page import build_page

        demo = build_page(self)
        # System fonts only: the default theme pulls fonts from Google, which an offline studio cannot reach.
        theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
        c = self.config
        demo.launch(server_name=c.host, server_port=c.port, prevent_thread_lock=not block,
                    max_file_size=int(c.max_upload_mb * 2**20), allowed_paths=[str(self.work_dir), str(self.workspace.root)],
                    quiet=quiet, theme=theme, head=head(), show_error=True, ssr_mode=False, inbrowser=False, share=False)
        return demo


def _status(take) -> str:
    if take.rejected:
        return "rejected"
    return "not accepted" if take.accepted_in is None else f"accepted in v{take.accepted_in}"


def take_grid(folder: Path, rel: str) -> BeatGrid | None:
    """The beat grid a take was generated against (from its sidecar), or None (mix context, or
    not a take)."""
    import json

    sidecar = (folder / rel).with_suffix(".json")
    try:
        ctx = json.loads(sidecar.read_text()).get("context", {}) if sidecar.is_file() else {}
    except (OSError, ValueError):
        return None
    if "beats" not in ctx:
        return None
    return BeatGrid(np.asarray(ctx["beats"], float), np.asarray(ctx.get("downbeats", []), float), float(ctx.get("bpm", 0.0)),
                    int(ctx.get("beats_per_bar") or DEFAULT_BEATS_PER_BAR), ctx.get("tracker") or ctx.get("mode", "take"))


def load_studio_model(source: str, device: str = "auto"):
    """Load model `source` on `device` (known names resolve through the registry, which says
    where to put missing weights)."""
    from stage.model.checkpoints import load_model

    return load_model(source, device=device)  # load_model resolves "auto" and checks the name
