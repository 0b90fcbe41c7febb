"""The studio's page (Gradio Blocks): plain components wired to the `Studio` job functions.

Layout: a left column for the session (pick one from the sessions folder or create one from an
upload, the mix versions, export) and the multitrack on the right: the lanes of the current mix
(the upload and each accepted stem) with the beat grid, transport, play from any point, mute and
solo per lane, drawn and played sample-locked in the browser (stage.app.multitrack, studio.js);
"Bounce" writes what you hear as a WAV (the server's mixer, the same factors). Below: the generate
form (stem, model, prompt, tempo with beat tracking, takes, sampling) and the takes of the chosen
stem (a table, a picker, the take's waveform, players alone and over the mix, accept / reject /
regenerate). A generation's progress bar shows on the takes panel, named by the takes it makes;
the first take streams into a gapless player as it grows (a new WAV about every second of stem,
of which the browser schedules only the new samples, right after the last); Cancel stops it.

Why our own script over Gradio components: Gradio has every part but a sample-locked
multi-player. studio.js is a few hundred lines on the Web Audio API, inlined into the page, so
there is no library to build or vendor and nothing to fetch from a CDN (the studio works offline).

Handlers turn every StageError into a one-line gr.Error; the state of a session is re-read from
its folder on every request, so the page holds nothing but the names it shows.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import queue
import threading
from typing import TYPE_CHECKING, Any

from stage.app.form import BPM_MODES, MAX_TAKES, form_defaults
from stage.app.multitrack import multitrack_html, stream_html
from stage.data.metronome import MAX_BEATS_PER_BAR, MAX_BPM, MIN_BPM
from stage.errors import Cancelled, StageError

if TYPE_CHECKING:  # the studio imports this page; the page only needs its type
    from stage.app.studio import SessionView, Studio

# The browser's mute / solo for a request: (session, heard) -> the same, heard filled in by studio.js.
HEARD_JS = ("(name, heard) => [name, JSON.stringify(window.stageStudio && window.stageStudio.multitrack"
            " ? window.stageStudio.multitrack.selection() : {muted: [], soloed: []})]")
TAKE_COLUMNS = ["take", "stem", "seed", "tempo", "over mix", "status", "prompt"]


def build_page(studio: Studio):
    """The Gradio Blocks page for `studio` (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline studio
    import gradio as gr

    from stage.model.registry import STEMS, models_table

    c = studio.config
    d = form_defaults()  # the generate form's starting values: GenerationOptions' defaults, as in `stage generate`

    def guard(fn):
        """Run a handler; a user mistake (StageError) becomes a one-line message on the page.
        functools.wraps keeps the handler's signature, where Gradio finds its gr.Progress."""
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Cancelled as err:  # asked for, not a mistake: the same one line, titled so
                raise gr.Error(str(err), title="Cancelled") from None
            except StageError as err:
                raise gr.Error(str(err)) from None
        return run

    def guard_stream(fn):
        """`guard` for a generator handler (the errors come while it is iterated)."""
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Cancelled as err:
                raise gr.Error(str(err), title="Cancelled") from None
            except StageError as err:
                raise gr.Error(str(err)) from None
        return run

    # delete_cache: Gradio copies every returned file into its cache; drop copies older than a day.
    with gr.Blocks(title="stage studio", analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(f"## stage studio\nBuild a song stem by stem: upload a mix, generate takes of a stem that fits it, "
                    f"accept the best one into the mix, then the next stem. Sessions live in `{studio.workspace.root}` "
                    f"(the same folders as `stage session`). Uploads up to {c.max_upload_mb:g} MB, {c.max_seconds:g} s.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                session = gr.Dropdown(studio.workspace.names(), value=None, label="session", elem_id="session")
                with gr.Accordion("new session from an upload", open=True):
                    upload = gr.Audio(label="mix", type="filepath", sources=["upload"], elem_id="mix-upload")
                    new_name = gr.Textbox(label="name (default: from the file name)", elem_id="session-name")
                    create = gr.Button("Create session", variant="primary", elem_id="create")
                status = gr.Markdown(elem_id="status")
                version = gr.Dropdown([], label="mix versions", elem_id="version")
                use = gr.Button("Go to this mix version", elem_id="use-version")
                export = gr.Button("Export stems + mix (zip)", elem_id="export")
                export_file = gr.File(label="export", interactive=False, height=90, elem_id="export-file")
            with gr.Column(scale=3):
                # The lanes, drawn and played in the browser (stage.app.multitrack, studio.js).
                multitrack = gr.HTML(multitrack_html(None), elem_id="multitrack", js_on_load=None)
                with gr.Row():
                    bounce = gr.Button("Bounce the lanes you hear (WAV)", size="sm", elem_id="bounce")
                    bounce_file = gr.File(label="bounce", interactive=False, height=60, elem_id="bounce-file")
                heard = gr.Textbox(visible=False, elem_id="heard")  # the page's mute / solo, as JSON
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                stem = gr.Dropdown(list(STEMS), value=STEMS[0], label="stem", elem_id="stem")
                choices = studio.model_choices()
                model = gr.Dropdown(choices, value=choices[0], label="model", elem_id="model")
                prompt = gr.Textbox(label="prompt", placeholder="Genres: Rock, Punk. Moods: energetic.", elem_id="prompt")
                bpm_mode = gr.Radio(list(BPM_MODES), value=list(BPM_MODES)[2], label="tempo", elem_id="bpm-mode")
                with gr.Row():
                    bpm = gr.Number(120, label="BPM", minimum=MIN_BPM, maximum=MAX_BPM, elem_id="bpm")
                    beats_per_bar = gr.Number(d["beats_per_bar"], label="beats per bar", precision=0, minimum=1, maximum=MAX_BEATS_PER_BAR,
                                              elem_id="meter")
                    offset = gr.Number(d["offset"], label="first downbeat (s)", elem_id="offset")
                with gr.Row():
                    track = gr.Button("Track beats", size="sm", elem_id="track")
                    show_grid = gr.Button("Show this grid", size="sm", elem_id="show-grid")
                tempo_info = gr.Markdown(elem_id="tempo")
                takes = gr.Slider(1, MAX_TAKES, value=2, step=1, label="takes", elem_id="takes")
                with gr.Accordion("sampling", open=False):
                    cfg = gr.Slider(1.0, 10.0, value=d["cfg"], step=0.5, label="guidance (cfg)", elem_id="cfg")
                    temperature = gr.Slider(0.0, 2.0, value=d["temperature"], step=0.05, label="temperature", elem_id="temperature")
                    top_k = gr.Slider(0, 2048, value=d["top_k"], step=1, label="top-k (0 = all)", elem_id="top-k")
                    top_p = gr.Slider(0.0, 1.0, value=d["top_p"], step=0.01, label="top-p (0 = off)", elem_id="top-p")
                    seed = gr.Number(-1, label="seed (-1 = random)", precision=0, elem_id="seed")
                with gr.Row():
                    generate = gr.Button("Generate takes", variant="primary", elem_id="generate")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=3):
                table = gr.Dataframe(headers=TAKE_COLUMNS, value=None, interactive=False, label="takes of this stem",
                                     elem_id="takes-table")
                take = gr.Radio([], label="take", elem_id="take")
                take_title = gr.Markdown(elem_id="take-title")
                take_image = gr.Image(type="filepath", interactive=False, show_label=False, format="png",
                                      elem_id="take-wave")
                with gr.Row():
                    take_alone = gr.Audio(label="take alone", type="filepath", interactive=False, elem_id="take-alone")
                    take_mix = gr.Audio(label="take over the mix", type="filepath", interactive=False, elem_id="take-mix")
                gr.Markdown("the take as it is generated (the first take over the mix), played as it comes:")
                take_stream = gr.HTML(stream_html(None), elem_id="take-stream", js_on_load=None)
                gain = gr.Slider(-24.0, 12.0, value=0.0, step=0.5, label="gain when accepted (dB)", elem_id="gain")
                with gr.Row():
                    accept = gr.Button("Accept into the mix", variant="primary", elem_id="accept")
                    reject = gr.Button("Reject", elem_id="reject")
                    same = gr.Button("Regenerate (same seed)", elem_id="regenerate-same")
                    fresh = gr.Button("Regenerate (new seed)", elem_id="regenerate-new")
        with gr.Accordion("models: where to get the weights", open=False):
            gr.Markdown(models_table() + "\n\nThe STAGE-mini models come with stage and work offline. Put downloaded "
                        "files in `./checkpoints/`, `~/.cache/stage/models/` or a folder named by `$STAGE_MODELS`, "
                        "then start `stage studio --model NAME` (or a path).")

        view_outputs = [status, version, multitrack, table, take, take_title, take_image, take_alone, take_mix]
        # the generate form: `take_settings` keyword -> its component (the handlers get the values in this order)
        fields = dict(prompt=prompt, bpm_mode=bpm_mode, bpm=bpm, beats_per_bar=beats_per_bar, offset=offset, takes=takes,
                      cfg=cfg, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        form = list(fields.values())

        def show(view: SessionView | None) -> list:
            if view is None:
                return ["", gr.Dropdown(choices=[], value=None), multitrack_html(None),
                        None, gr.Radio(choices=[], value=None), "", None, None, None]
            out = [view.summary, gr.Dropdown(choices=view.versions, value=view.current), multitrack_html(view.multitrack)]
            t = view.take_lane
            out += [view.rows or None, gr.Radio(choices=view.take_ids, value=view.selected),
                    f"**{t.title}**" if t else "no takes of this stem yet", str(t.image) if t else None,
                    str(t.audio) if t else None, str(view.take_mix) if view.take_mix else None]
            return out

        def refresh(name, stem_v, selected=None) -> list:
            return show(studio.view(name, stem_v, selected) if name else None)

        def form_values(values) -> dict:
            return dict(zip(fields, values))

        @guard
        def on_create(upload_v, name_v, stem_v):
            name = studio.new_session(upload_v, name_v)
            return [gr.Dropdown(choices=studio.workspace.names(), value=name), *refresh(name, stem_v)]

        @guard
        def on_open(name, stem_v):
            return refresh(name, stem_v)

        @guard
        def on_pick(name, stem_v, take_v):
            return refresh(name, stem_v, take_v)

        def streamed(name, stem_v, progress, start):
            """Run a generation, start(progress, stream, cancel) -> SessionTakes, in a worker thread
            with this request's context (where Gradio keeps its progress bar), and yield the take so
            far into the stream player as it grows (only the latest when several are waiting), then
            the session's view with the new takes. A request closed early (Gradio's cancel, a closed
            tab) cancels its take."""
            chunks: queue.Queue = queue.Queue()
            outcome: dict[str, Any] = {}
            stop = threading.Event()

            def work():
                try:
                    outcome["result"] = start(lambda f, desc="": progress(f, desc=desc), chunks.put, stop)
                except BaseException as err:  # handed to the request's thread, which raises it
                    outcome["error"] = err
                finally:
                    chunks.put(None)

            worker = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True)
            worker.start()
            keep = [gr.skip()] * len(view_outputs)
            sent: list = []  # this take's StreamChunks: the player fetches the ones it lacks
            try:
                while True:
                    item = chunks.get()
                    while item is not None and not chunks.empty():
                        sent.append(item)
                        item = chunks.get()
                    if item is None:
                        break
                    sent.append(item)
                    yield [*keep, stream_html(sent)]
                worker.join()
            finally:
                if worker.is_alive():
                    stop.set()
            if "error" in outcome:
                raise outcome["error"]
            result = outcome["result"]
            # The stream ends on the first take's own preview, so its player gets the whole take.
            end = stream_html(sent, studio.workspace.path(name) / result.takes[0].mix_file) if sent else gr.skip()
            yield [*refresh(name, stem_v, result.takes[-1].id), end]

        @guard_stream
        def on_generate(name, stem_v, model_v, *values, progress=gr.Progress()):
            yield from streamed(name, stem_v, progress, lambda report, stream, stop: studio.generate(
                name, stem_v, model_v, report, stream=stream, cancel=stop, **form_values(values)))

        def regenerate(same_seed: bool):
            @guard_stream
            def on_regenerate(name, stem_v, take_v, model_v, *values, progress=gr.Progress()):
                if not take_v:
                    raise StageError("pick a take to regenerate")
                yield from streamed(name, stem_v, progress, lambda report, stream, stop: studio.regenerate(
                    name, take_v, same_seed, model_v, report, stream=stream, cancel=stop, **form_values(values)))
            return on_regenerate

        @guard
        def on_cancel(name, stem_v):
            gr.Info(studio.cancel(name))
            return refresh(name, stem_v)

        @guard
        def on_accept(name, stem_v, take_v, gain_v):
            if not take_v:
                raise StageError("pick a take to accept")
            studio.accept(name, take_v, gain_v)
            return refresh(name, stem_v, take_v)

        @guard
        def on_reject(name, stem_v, take_v):
            if not take_v:
                raise StageError("pick a take to reject")
            studio.reject(name, take_v)
            return refresh(name, stem_v)

        @guard
        def on_use(name, stem_v, version_v):
            if not version_v:
                raise StageError("pick a mix version")
            studio.use_version(name, version_v)
            return refresh(name, stem_v)

        @guard
        def on_track(name, stem_v):
            tempo = studio.track(name)
            return [round(tempo.bpm, 2), tempo.beats_per_bar, round(tempo.offset, 3),
                    f"tracked: {tempo.describe()}. Correct the numbers and choose 'number' to generate on your grid.",
                    *refresh(name, stem_v)]

        @guard
        def on_show_grid(name, bpm_v, meter_v, offset_v, stem_v):
            tempo = studio.set_tempo(name, bpm_v, meter_v, offset_v)
            return [f"grid: {tempo.describe()}", *refresh(name, stem_v)]

        @guard
        def on_bounce(name, heard_v):
            if not name:
                raise StageError("open a session first")
            try:
                chosen = json.loads(heard_v or "{}")
                muted, soloed = list(chosen.get("muted", [])), list(chosen.get("soloed", []))
            except (ValueError, TypeError, AttributeError):
                raise StageError("the page sent no mute / solo selection; reload it") from None
            return str(studio.mix_lanes(name, muted, soloed))

        @guard
        def on_export(name):
            return str(studio.export(name))

        # Generation holds the model: the queue's default limit (--concurrency). Session edits and
        # views are quick and share a wider limit, so they never wait behind a long generation.
        heavy: dict[str, Any] = dict(concurrency_limit="default")
        light: dict[str, Any] = dict(concurrency_limit=max(4, c.concurrency), concurrency_id="session")
        create.click(on_create, [upload, new_name, stem], [session, *view_outputs], **light)
        session.input(on_open, [session, stem], view_outputs, **light)
        stem.input(on_open, [session, stem], view_outputs, **light)
        take.input(on_pick, [session, stem, take], view_outputs, **light)
        # A generation's progress bar sits on the takes it is making (the table and the take's view).
        on_takes: dict[str, Any] = dict(show_progress_on=[table, take_image])
        streaming = [*view_outputs, take_stream]
        generating: list[Any] = [generate.click(on_generate, [session, stem, model, *form], streaming, **heavy, **on_takes),
                                 same.click(regenerate(True), [session, stem, take, model, *form], streaming, **heavy, **on_takes),
                                 fresh.click(regenerate(False), [session, stem, take, model, *form], streaming, **heavy, **on_takes)]
        # Cancel: Gradio drops this page's queued generations (`cancels`); `Studio.cancel` stops the
        # running one at its next decoding step (a running thread cannot be stopped from outside)
        # and reports once it has stopped.
        cancel.click(on_cancel, [session, stem], view_outputs, cancels=generating, **light)
        accept.click(on_accept, [session, stem, take, gain], view_outputs, **light)
        reject.click(on_reject, [session, stem, take], view_outputs, **light)
        use.click(on_use, [session, stem, version], view_outputs, **light)
        track.click(on_track, [session, stem], [bpm, beats_per_bar, offset, tempo_info, *view_outputs], **heavy)
        show_grid.click(on_show_grid, [session, bpm, beats_per_bar, offset, stem], [tempo_info, *view_outputs], **light)
        export.click(on_export, [session], [export_file], **light)
        # Bounce: the browser's mute / solo goes along with the request (studio.js), the server mixes.
        bounce.click(on_bounce, [session, heard], [bounce_file], js=HEARD_JS, **light)
        # Each visit lists the sessions there are now (made here, by another visitor or by the CLI).
        demo.load(lambda: gr.Dropdown(choices=studio.workspace.names()), None, [session], **light)
    demo.queue(default_concurrency_limit=c.concurrency, max_size=c.queue_size)
    return demo
