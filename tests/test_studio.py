"""The web studio: its handler and pictures directly, then the real page in headless Chromium.

The browser test starts the studio with the tiny model on a free port (in this process, Gradio's
own server thread) and drives it with Playwright's sync API through Debian's `/usr/bin/chromium`
(never `playwright install`), launched with the offline-safe flags from ENVIRONMENT.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import threading
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import drum_loop, open_studio, session_files
from stage.app.studio import COLORS, MAX_TAKES, StudioConfig, render_waveform
from stage.errors import Cancelled, StageError

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--autoplay-policy=no-user-gesture-required"]  # the players start without a click
# The browser's multitrack has loaded these lanes (stage/app/studio.js).
LANES_READY = ("(labels) => {const m = window.stageStudio?.multitrack;"
               " return m && m.loaded && JSON.stringify(m.labels) === JSON.stringify(labels)}")
METRONOME = "number: a metronome at this BPM"


@pytest.fixture
def studio(tiny_model, tmp_path):
    s = open_studio(tiny_model, tmp_path, max_upload_mb=1.0, max_seconds=5.0)
    yield s
    s.close()


def write_loop(path: Path, seconds: float, sr: int = 44_100, channels: int = 2) -> Path:
    sf.write(str(path), drum_loop(120.0, seconds, sr, 0.1, channels=channels).T, sr, subtype="PCM_16")
    return path


def test_waveform_picture_marks_beats_and_downbeats(tmp_path):
    sr, seconds = 8_000, 2.0
    audio = 0.5 * np.sin(2 * np.pi * 220 * np.arange(int(sr * seconds)) / sr)[None].astype(np.float32)
    path = render_waveform(audio, sr, tmp_path / "w.png", beats=[0.5, 1.0, 1.5], downbeats=[1.0], width=401, height=100)
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (100, 401, 3)
    row = img[60]  # a row inside the plot, below the title and above the axis

    def is_color(x, name):
        return bool(np.all(np.abs(row[x].astype(int) - COLORS[name]) <= 10))

    assert is_color(200, "downbeat")  # t = 1.0 s -> x = 200
    assert is_color(100, "beat") and is_color(300, "beat")
    assert not is_color(150, "beat") and not is_color(150, "downbeat")
    assert (img[:, 150] == COLORS["wave"]).all(axis=1).any()  # the waveform itself is drawn


def test_a_song_stem_by_stem(studio, tmp_path, capsys):
    """Upload -> two drum takes -> accept one -> bass over the new mix -> export: through the job
    functions, the real tiny model and the real session store (the one `stage session` uses)."""
    from stage.audio import load_audio
    from stage.cli import main

    upload = write_loop(tmp_path / "My Groove.wav", 0.5)
    name = studio.new_session(str(upload))
    assert name == "My-Groove" and studio.workspace.names() == [name]
    folder = studio.workspace.root / name

    drums = studio.generate(name, "drums", "tiny", bpm_mode=METRONOME, bpm=100, takes=2, cfg=1.0, seed=7)
    assert [t.id for t in drums.takes] == ["take001", "take002"] and [t.seed for t in drums.takes] == [7, 8]
    view = studio.view(name, "drums")
    assert view.take_ids == ["take001", "take002"] and view.selected == "take002" and len(view.lanes) == 1
    assert view.take_lane.image.is_file() and "100.0 BPM" in view.summary
    assert main(["session", "show", str(folder)]) == 0  # the CLI reads what the studio wrote
    assert "take002  drums" in capsys.readouterr().out

    version = studio.accept(name, "take002")
    assert version.index == 1 and version.take == "take002"
    studio.reject(name, "take001")
    view = studio.view(name, "drums")
    assert [lane.title.split(":")[0] for lane in view.lanes] == ["song", "drums"]
    assert [row[5] for row in view.rows] == ["rejected", "accepted in v1"] and view.current.startswith("v1")

    # The bass hears the new mix: mix v1 = the upload + the accepted drums.
    bass = studio.generate(name, "bass", "tiny", bpm_mode="off", takes=1, cfg=1.0, seed=3)
    [take] = bass.takes
    assert take.over_mix == 1 and bass.takeset.context.mode == "mix"
    v0, _ = load_audio(folder / "mixes" / "mix_000.wav")
    v1, _ = load_audio(folder / "mixes" / "mix_001.wav")
    np.testing.assert_array_equal(bass.takeset.context.audio, v1)
    assert not np.allclose(v1, v0, atol=1e-3)
    studio.accept(name, take.id, gain_db=-3.0)
    assert main(["session", "show", str(folder)]) == 0
    shown = capsys.readouterr().out
    assert "current mix: mixes/mix_002.wav" in shown and "rejected" in shown

    # Export: the mix and every stem at the upload's rate and length, with the sidecars.
    upload_audio, upload_sr = sf.read(str(upload), always_2d=True)
    with zipfile.ZipFile(studio.export(name)) as z:
        names = z.namelist()
        wavs = [n for n in names if n.endswith(".wav")]
        assert {"mix.wav", "original.wav", "session.json", "README.txt"} <= set(names)
        assert len([n for n in wavs if n.startswith("stems/")]) == 2
        assert len([n for n in names if n.startswith("stems/") and n.endswith(".json")]) == 2
        for member in wavs:
            audio, sr = sf.read(io.BytesIO(z.read(member)), always_2d=True)
            assert sr == upload_sr and audio.shape == upload_audio.shape, member
        assert "reproduce: stage generate" in z.read("README.txt").decode()

    # Back to the drums-only mix: the lanes follow, nothing is deleted.
    studio.use_version(name, "v1: + take002 (drums)")
    view = studio.view(name, "bass")
    assert view.current.startswith("v1") and len(view.lanes) == 2 and len(view.versions) == 3
    assert (folder / "mixes" / "mix_002.wav").is_file()


def test_tempo_and_regenerate(studio, tmp_path):
    """Track the song's beats, type a grid, regenerate a take with its seed (the same audio) or a new one."""
    from stage.audio import load_audio

    name = studio.new_session(str(write_loop(tmp_path / "loop.wav", 2.0, sr=16_000, channels=1)))
    tracked = studio.track(name)
    assert 100 < tracked.bpm < 140 and len(tracked.beats) >= 3
    typed = studio.set_tempo(name, 100, 3, 0.2)
    assert typed.downbeats[0] == pytest.approx(0.2) and "100.0 BPM, 3 beats per bar" in studio.view(name).summary
    first = studio.generate(name, "drums", "tiny", bpm_mode=METRONOME, bpm=100, beats_per_bar=3, offset=0.2, cfg=1.0,
                            seed=11).takes[0]
    form = dict(bpm_mode=METRONOME, bpm=100, beats_per_bar=3, offset=0.2, cfg=1.0)
    same = studio.regenerate(name, first.id, True, "tiny", **form).takes[0]
    other = studio.regenerate(name, first.id, False, "tiny", **form).takes[0]
    assert (same.id, same.seed, other.id) == ("take002", 11, "take003") and other.seed != 11
    folder = studio.workspace.root / name
    np.testing.assert_allclose(load_audio(folder / same.file)[0], load_audio(folder / first.file)[0], atol=1e-3)
    assert "_100bpm_" in same.file


def test_the_studio_opens_cli_sessions(studio, tmp_path, capsys):
    from stage.cli import main

    upload = write_loop(tmp_path / "loop.wav", 0.3)
    assert main(["session", "new", str(studio.workspace.root / "from-cli"), "--mix", str(upload)]) == 0
    assert studio.workspace.names() == ["from-cli"]
    view = studio.view("from-cli", "drums")
    assert view.lanes[0].audio.is_file() and view.take_ids == [] and view.versions == ["v0: start"]


@pytest.mark.parametrize("change, message", [
    (dict(stem="kazoo"), "unknown stem"),
    (dict(bpm_mode="sometimes"), "BPM mode"),
    (dict(bpm_mode=METRONOME, bpm=None), "type a BPM"),
    (dict(takes=MAX_TAKES + 1), "takes"),
    (dict(top_p=2.0), "top_p"),
    (dict(model="/etc/passwd"), "unknown model"),
    (dict(name="../x"), "bad session name"),
    (dict(name="nope"), "no session named"),
])
def test_generate_refuses_bad_requests(studio, tmp_path, change, message):
    name = studio.new_session(str(write_loop(tmp_path / "loop.wav", 0.3)), "song")
    before = session_files(studio.workspace.root)
    request = dict(name=name, stem="drums", model="tiny", bpm_mode="off", takes=1)
    request.update(change)
    with pytest.raises(StageError, match=message):
        studio.generate(**request)
    assert session_files(studio.workspace.root) == before


def test_bad_uploads_and_names_change_nothing(studio, tmp_path):
    """Non-audio, oversized and too long uploads, and tampered session names: each a one-line
    StageError, and the sessions folder stays byte for byte as it was."""
    name = studio.new_session(str(write_loop(tmp_path / "loop.wav", 0.3)), "song")
    outside = tmp_path / "x"
    before = session_files(studio.workspace.root)
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    fake = tmp_path / "fake.wav"
    fake.write_text("RIFF but not really")
    huge = tmp_path / "huge.wav"
    sf.write(str(huge), np.zeros((2, 44_100 * 7), np.float32).T, 44_100, subtype="PCM_16")  # 7 s, 1.2 MB
    long = write_loop(tmp_path / "long.wav", 6.0, sr=8_000, channels=1)  # 6 s, 0.1 MB
    for upload, message in ((None, "upload a mix first"), (text, "notes.txt is not an audio file"),
                            (fake, "fake.wav is not an audio file"),
                            (huge, "the file is 1.2 MB; this studio accepts up to 1 MB"),
                            (long, "long.wav: 6 s is longer than the 5 s limit")):
        with pytest.raises(StageError, match=message):
            studio.new_session(None if upload is None else str(upload))
    with pytest.raises(StageError, match="already exists"):
        studio.workspace.create(name, np.zeros((1, 100), np.float32), 8_000)
    ok = write_loop(tmp_path / "ok.wav", 0.2)
    for bad in ("../x", "..", "a/../../x", "/tmp/x", ".hidden", "x" * 65):
        with pytest.raises(StageError, match="bad session name"):
            studio.new_session(str(ok), bad)
        for job in (studio.view, studio.export, lambda n: studio.accept(n, "take001"), lambda n: studio.reject(n, "1"),
                    lambda n: studio.use_version(n, "v0"), studio.track):
            with pytest.raises(StageError, match="bad session name"):
                job(bad)
    with pytest.raises(StageError, match="choose a session"):
        studio.view("")
    (studio.workspace.root / "link").symlink_to(tmp_path)
    with pytest.raises(StageError, match="outside the sessions folder"):
        studio.view("link")
    (studio.workspace.root / "link").unlink()
    with pytest.raises(StageError, match="no take"):
        studio.accept(name, "take009")
    with pytest.raises(StageError, match="no mix version"):
        studio.use_version(name, "v7")
    assert session_files(studio.workspace.root) == before and not outside.exists()


@pytest.mark.parametrize("field, value", [("mix", "../../secret.wav"), ("mix", "/etc/hostname"),
                                          ("take", "takes/../../../secret.wav"), ("sidecar", "C:/x.json")])
def test_a_tampered_session_file_is_refused(studio, tmp_path, capsys, field, value):
    """A session.json edited to name a file outside its folder (which a view would read and an
    export would copy): every job refuses it with one line, and nothing changes or leaks."""
    from stage.cli import main

    name = studio.new_session(str(write_loop(tmp_path / "loop.wav", 0.3)), "song")
    studio.generate(name, "drums", "tiny", bpm_mode="off", takes=1, cfg=1.0, seed=1)
    write_loop(tmp_path / "secret.wav", 0.3)
    path = studio.workspace.root / name / "session.json"
    state = json.loads(path.read_text())
    if field == "mix":
        state["mixes"][0]["file"] = value
    else:
        state["takes"][0]["file" if field == "take" else "sidecar"] = value
    path.write_text(json.dumps(state))
    before = session_files(studio.workspace.root)
    jobs = [studio.view, studio.export, lambda n: studio.accept(n, "take001"), lambda n: studio.reject(n, "take001"),
            lambda n: studio.use_version(n, "v0"), studio.track,
            lambda n: studio.generate(n, "drums", "tiny", bpm_mode="off", takes=1, cfg=1.0)]
    for job in jobs:
        with pytest.raises(StageError, match="leads outside the session folder"):
            job(name)
    assert main(["session", "show", str(path.parent)]) == 2
    assert "leads outside the session folder" in capsys.readouterr().err
    assert session_files(studio.workspace.root) == before and not (studio.work_dir / "exports").exists()


def test_progress_names_the_takes_and_cancel_stops_them(studio, tmp_path):
    """A generation reports its progress named by the takes it makes; cancelled from its own
    progress after the first decoding steps (the real tiny model and Generator), it stops there
    with a one-line `Cancelled`, writes nothing, and the session's files stay byte for byte."""
    name = studio.new_session(str(write_loop(tmp_path / "loop.wav", 0.5)), "song")
    studio.generate(name, "drums", "tiny", bpm_mode="off", takes=1, cfg=1.0, seed=1)
    before = session_files(studio.workspace.root)
    seen: list[tuple[float, str]] = []

    def progress(fraction, desc=""):
        seen.append((fraction, desc))
        if sum("generating" in d for _, d in seen) == 3:
            assert studio.cancel(name, wait=0) .startswith("cancelling")  # this very job: it cannot wait for itself
            assert [j.cancel.is_set() for j in studio.running(name)] == [True]

    with pytest.raises(Cancelled, match="take cancelled; nothing was written"):
        studio.generate(name, "drums", "tiny", progress, bpm_mode="off", takes=2, cfg=1.0, seed=5)
    steps = [f for f, d in seen if "generating" in d]
    assert len(steps) == 3 and steps == sorted(steps) and steps[-1] < 0.5  # stopped early: 3 of ~28 steps
    assert seen[:2] == [(0.0, "drums: waiting for the model"), (0.0, "drums take002, take003: waiting for the model")]
    assert seen[-1][1] == "drums take002, take003: generating"
    assert session_files(studio.workspace.root) == before and studio.running(name) == []
    assert studio.cancel(name).startswith("nothing to cancel")

    seen.clear()  # the next generation numbers its takes as if nothing had happened, and ends at 1.0
    result = studio.generate(name, "drums", "tiny", progress=lambda f, desc="": seen.append((f, desc)), bpm_mode="off",
                             takes=1, cfg=1.0, seed=5)
    assert [t.id for t in result.takes] == ["take002"] and seen[-1] == (1.0, "drums take002: done")


def test_cancel_from_another_request_while_the_model_is_busy(studio, tmp_path):
    """Cancel from another thread (a second request) while the take waits for the model (held by
    another job): `cancel` says it is cancelling, and the take stops as soon as it gets the
    model, before it runs a single step."""
    from concurrent.futures import ThreadPoolExecutor

    name = studio.new_session(str(write_loop(tmp_path / "loop.wav", 0.3)), "song")
    before = session_files(studio.workspace.root)
    seen: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        with studio.lock:  # another job has the model
            job = pool.submit(studio.generate, name, "drums", "tiny", lambda f, desc="": seen.append(desc),
                              bpm_mode="off", takes=1, cfg=1.0)
            for _ in range(1200):  # until the take is registered and waiting (at most a minute)
                if studio.running(name) or job.done():
                    break
                threading.Event().wait(0.05)
            assert seen == ["drums: waiting for the model"] and not job.done()
            assert studio.cancel(name, wait=0.2).startswith("cancelling: the take stops as soon as the model is free")
        with pytest.raises(Cancelled, match="take cancelled"):
            job.result(timeout=120)
    assert not any("generating" in d for d in seen)
    assert session_files(studio.workspace.root) == before


def test_a_model_for_another_stem_is_refused(studio, tiny_model):
    import copy

    drums_only = copy.copy(tiny_model)
    drums_only.config = tiny_model.config.replace(stem="drums")
    studio.models["drums-only"] = drums_only
    with pytest.raises(StageError, match="generates drums, not bass"):
        studio.model_for("drums-only", "bass")
    assert studio.model_for("drums-only", "drums") is drums_only
    assert {"tiny", "drums-only"} <= set(studio.model_choices())


def test_form_defaults_are_the_generation_options(studio, monkeypatch):
    """The generate form starts at GenerationOptions' defaults, on the page and in
    `take_settings` (derived: other defaults in the dataclass give another form)."""
    from dataclasses import dataclass

    from stage.app.form import form_defaults, take_settings
    from stage.app.page import build_page
    from stage.generate import params

    d = params.GenerationOptions()
    expected = dict(prompt=d.prompt, beats_per_bar=d.beats_per_bar, offset=d.offset, takes=d.variations, cfg=d.guidance,
                    temperature=d.temperature, top_k=d.top_k, top_p=d.top_p)
    assert form_defaults() == expected
    settings = take_settings("drums")
    assert settings.params == d.params and settings.variations == d.variations
    number = take_settings("drums", bpm_mode=METRONOME, bpm=100)
    assert (number.beats_per_bar, number.offset) == (d.beats_per_bar, d.offset)

    page = build_page(studio)
    values = {b.elem_id: b.value for b in page.blocks.values() if getattr(b, "elem_id", None) and hasattr(b, "value")}
    page_ids = dict(cfg="cfg", temperature="temperature", top_k="top-k", top_p="top-p", beats_per_bar="meter",
                    offset="offset")
    assert {key: values[elem] for key, elem in page_ids.items()} == {key: expected[key] for key in page_ids}

    @dataclass(frozen=True)
    class Changed(params.GenerationOptions):
        guidance: float = 5.5
        top_k: int = 17
        beats_per_bar: int = 3

    monkeypatch.setattr(params, "GenerationOptions", Changed)
    assert (form_defaults()["cfg"], form_defaults()["top_k"]) == (5.5, 17)
    changed = take_settings("drums", bpm_mode=METRONOME, bpm=100)
    assert (changed.params.guidance, changed.params.top_k, changed.beats_per_bar) == (5.5, 17, 3)


def test_config_is_validated():
    with pytest.raises(StageError, match="max-upload-mb"):
        StudioConfig(max_upload_mb=0)
    with pytest.raises(StageError, match="concurrency"):
        StudioConfig(concurrency=0)
    with pytest.raises(StageError, match="queue-size"):
        StudioConfig(queue_size=0)


# --------------------------------------------------------------------------- the real page


@pytest.fixture
def patient_launch(monkeypatch):
    """Gradio's launch probes its own page with a 3 s timeout and gives up at the first timeout;
    on a loaded machine (tests run niced next to a training) the first page render takes longer.
    The same probe, with a patient timeout."""
    import httpx
    from gradio import networking

    def url_ok(url: str) -> bool:
        try:
            return httpx.head(url, timeout=120).status_code in (200, 401, 301, 302, 303, 307, 308)
        except (httpx.ConnectError, httpx.TimeoutException):
            return False

    monkeypatch.setattr(networking, "url_ok", url_ok)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_queue_serves_eight_requests_at_once(tiny_model, tmp_path, patient_launch):
    """Eight clients submit at once (four generations, four views): the queue holds them
    (max_size) and runs them (default_concurrency_limit), and every one completes."""
    from concurrent.futures import ThreadPoolExecutor

    client_module = pytest.importorskip("gradio_client")
    port = free_port()
    studio = open_studio(tiny_model, tmp_path, port=port, queue_size=16)
    names = [studio.new_session(str(write_loop(tmp_path / f"loop{i}.wav", 0.2, sr=16_000, channels=1)), f"song{i}")
             for i in range(4)]
    demo = studio.launch(block=False, quiet=True)
    try:
        assert demo._queue.max_size == 16 and demo._queue.default_concurrency_limit == 1
        # The outputs' files stay on the server, and a loaded machine gets patient timeouts.
        client = client_module.Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False,
                                      analytics_enabled=False, httpx_kwargs={"timeout": 120})
        form = ["", "off: the mix is the context", 120, 4, 0, 1, 1.0, 1.0, 250, 0.0, 5]
        jobs = [client.submit(n, "drums", "tiny", *form, api_name="/on_generate") for n in names]
        jobs += [client.submit(n, "drums", api_name="/on_open") for n in names]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda job: job.result(timeout=600), jobs))
        assert len(results) == 8
        for name in names:
            assert [t.seed for t in studio.workspace.open(name).state.takes] == [5]
    finally:
        demo.close()
        studio.close()


@pytest.mark.browser
def test_studio_in_a_browser(tiny_model, tmp_path, patient_launch):
    """The real page: create a session from an upload, generate two drum takes (streamed into a
    player), accept one; solo and mute lanes; cancel a take (nothing written); generate bass over
    the new mix and accept it; export the zip."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from stage.generate.session import Session

    mix = write_loop(tmp_path / "groove.wav", 2.0)  # two 1 s chunks: the take streams into its player
    port = free_port()
    sessions = tmp_path / "sessions"
    studio = open_studio(tiny_model, tmp_path, port=port)
    demo = studio.launch(block=False, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                accept_downloads=True, viewport={"width": 1280, "height": 1400},
            )
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("#create", timeout=60_000)

                # Creating with no upload shows the one-line message.
                page.locator("#create").click()
                page.get_by_text("upload a mix first").first.wait_for(timeout=30_000)
                page.locator("[data-testid=toast-close]").first.click()

                # Upload -> a session named "groove": the song lane appears.
                page.locator("#mix-upload input[type=file]").set_input_files(str(mix))
                page.wait_for_selector("#mix-upload audio", state="attached", timeout=30_000)
                page.locator("#session-name textarea, #session-name input").first.fill("groove")
                page.locator("#create").click()
                page.locator("#status").filter(has_text="groove").wait_for(timeout=30_000)
                page.wait_for_function(LANES_READY, arg=["song"], timeout=120_000)

                # Two drum takes on a 120 BPM metronome.
                page.get_by_label(METRONOME).check()
                page.locator("#prompt textarea, #prompt input").first.fill("Genres: Funk. Moods: groovy.")
                page.locator("#generate").click()
                page.locator("#takes-table").filter(has_text="take002").wait_for(timeout=300_000)
                page.wait_for_function("document.querySelector('#take-wave img')?.naturalWidth > 0", timeout=60_000)
                for player in ("#take-alone", "#take-mix"):
                    page.locator(f"{player} time#duration").filter(has_text="0:02").wait_for(timeout=60_000)

                # Audition take001, accept it: it becomes the drums lane of mix v1.
                page.locator("#take").get_by_label("take001").check()
                page.locator("#take-title").filter(has_text="take001").wait_for(timeout=60_000)
                # The first take streamed into the gapless player while it was generated.
                page.wait_for_function("window.stageStudio.stream?.done", timeout=60_000)
                stream = page.evaluate("window.stageStudio.stream.state()")
                streamed = np.asarray(page.evaluate("window.stageStudio.stream.assembled()"), np.float32).T
                page.locator("#accept").click()
                page.locator("#status").filter(has_text="mix v1").wait_for(timeout=30_000)
                page.wait_for_function(LANES_READY, arg=["song", "drums take001"], timeout=120_000)
                lanes = page.locator("#multitrack")
                assert lanes.locator("[data-label='drums take001']").filter(has_text="seed").count() == 1

                # Play from the start, then click the middle of a lane: it plays from there.
                lanes.locator(".smt-play").click()
                page.wait_for_function("window.stageStudio.multitrack.position() > 0.2", timeout=30_000)
                box = lanes.locator("[data-label=song] .smt-wavebox").bounding_box()
                page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                at = page.evaluate("window.stageStudio.multitrack.state()")
                assert at["playing"] and 0.95 <= at["position"] <= 1.3, at
                lanes.locator(".smt-play").click()  # pause
                assert not page.evaluate("window.stageStudio.multitrack.playing")

                # Solo the drums lane: the browser plays it alone; Bounce writes the same (song muted: mask 01).
                lanes.locator("[data-label='drums take001'] .smt-solo").click()
                solo_played = np.asarray(page.evaluate("window.stageStudio.multitrack.renderMix()"), np.float32).T
                page.locator("#bounce").click()
                page.locator("#bounce-file a[href$='/v1_01.wav']").wait_for(state="attached", timeout=60_000)
                lanes.locator("[data-label='drums take001'] .smt-mute").click()  # the soloed lane muted: silence
                assert not np.any(page.evaluate("window.stageStudio.multitrack.renderMix()"))
                page.locator("#bounce").click()
                page.locator("#bounce-file a[href$='/v1_00.wav']").wait_for(state="attached", timeout=60_000)
                lanes.locator("[data-label='drums take001'] .smt-mute").click()
                lanes.locator("[data-label='drums take001'] .smt-solo").click()
                all_played = np.asarray(page.evaluate("window.stageStudio.multitrack.renderMix()"), np.float32).T

                # Cancel a take while it waits for the model (another job holds it, so the timing is
                # ours): the progress shows on the takes, Cancel stops it, nothing is written.
                folder = sessions / "groove"
                before = session_files(folder)
                with studio.lock:
                    page.locator("#generate").click()
                    page.locator("#takes-table").get_by_text("drums: waiting for the model").wait_for(timeout=60_000)
                    [job] = studio.running("groove")
                    page.locator("#cancel").click()
                    assert job.cancel.wait(60), "the page's Cancel did not reach the job"
                page.get_by_text("take cancelled; nothing was written").first.wait_for(timeout=60_000)
                assert job.done.wait(60) and job.outcome == "cancelled" and session_files(folder) == before
                closes = page.locator("[data-testid=toast-close]")  # two toasts: the job's and Cancel's
                for _ in range(10):  # each closes on a click, or by itself after 10 s
                    if not closes.count():
                        break
                    try:
                        closes.first.click(timeout=5_000)
                    except sync_api.Error:
                        pass  # it went by itself

                # Bass over mix v1 (the upload + the accepted drums), the mix itself as its context.
                page.locator("#stem input").click()
                page.get_by_role("option", name="bass").click()
                page.locator("#take-title").filter(has_text="no takes of this stem yet").wait_for(timeout=60_000)
                page.get_by_label("off: the mix is the context").check()
                page.locator("#generate").click()
                page.locator("#takes-table").filter(has_text="take004").wait_for(timeout=300_000)
                page.locator("#take-title").filter(has_text="take004: bass").wait_for(timeout=60_000)
                page.locator("#accept").click()
                page.locator("#status").filter(has_text="mix v2").wait_for(timeout=30_000)
                page.wait_for_function(LANES_READY, arg=["song", "drums take001", "bass take004"], timeout=120_000)

                # Export: the zip the page hands over.
                page.locator("#export").click()
                link = page.locator("#export-file a").first
                link.wait_for(timeout=120_000)
                with page.expect_download(timeout=60_000) as download:
                    link.click()
                exported = tmp_path / "export.zip"
                download.value.save_as(str(exported))
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "studio.png"), full_page=True)
            except Exception:  # what the page showed when a step timed out, for the report
                with contextlib.suppress(Exception):  # (the page may be gone too)
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "studio-failure.png"), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        demo.close()
        studio.close()
    session = Session.open(sessions / "groove")  # the store `stage session` reads
    assert session.state.current == 2 and [t.id for t in session.accepted_takes()] == ["take001", "take004"]
    assert [t.seed for t in session.state.takes][1] == session.state.takes[0].seed + 1
    assert [t.id for t in session.state.takes] == ["take001", "take002", "take003", "take004"]  # nothing of the cancelled one

    # The bass was generated against mix v1, which holds the accepted drums.
    bass = session.find_take("take004")
    sidecar = json.loads((folder / bass.sidecar).read_text())
    assert (bass.over_mix, bass.context, sidecar["over_mix"], sidecar["context"]["mode"]) == (1, "mix", "mixes/mix_001.wav", "mix")
    v0, v1 = (sf.read(str(folder / f"mixes/mix_00{i}.wav"), always_2d=True)[0] for i in (0, 1))
    drums = sf.read(str(folder / session.find_take("take001").file), always_2d=True)[0]
    np.testing.assert_allclose(v1, session.state.mixes[1].mix_gain * (v0 + drums), atol=3e-4)
    assert np.abs(drums).max() > 1e-3  # the drums are not silence: the bass heard them

    # The solo bounce is the drums as mix v1 holds them, and the browser played the same; with every
    # lane on it played mix v1. (Chromium decodes 16-bit PCM up to one step off soundfile: 3.1e-5.)
    solo = sf.read(str(tmp_path / "work" / "mixer" / "groove" / "v1_01.wav"), always_2d=True)[0]
    np.testing.assert_allclose(solo, session.state.mixes[1].mix_gain * drums, atol=1e-4)
    np.testing.assert_allclose(solo_played, solo, atol=1e-4)
    np.testing.assert_allclose(all_played, v1, atol=1e-4)

    # The stream: pieces back to back, each the new samples of its chunk, the last from take001's
    # own preview, so the stream ends as the take does.
    log, rate = stream["log"], stream["rate"]
    take001 = sf.read(str(folder / session.find_take("take001").mix_file), always_2d=True)[0]
    assert rate == sf.info(str(mix)).samplerate and len(log) >= 2 and stream["have"] == len(take001) == streamed.shape[0]
    assert log[0]["start"] == 0 and all(a["end"] == b["start"] for a, b in zip(log, log[1:]))
    for a, b in zip(log, log[1:]):  # scheduled with no gap (unless the player ran dry and waited)
        assert b["underrun"] or b["when"] == pytest.approx(a["when"] + (a["end"] - a["start"]) / rate, abs=1e-6)
    for piece in log:  # each piece is its chunk file from where the last one ended
        source = sf.read(str(Path(urllib.parse.unquote(piece["url"].split("file=", 1)[1]))), always_2d=True)[0]
        np.testing.assert_allclose(streamed[piece["start"]:piece["end"]], source[piece["from"]:], atol=1e-4)
    assert log[-1]["url"].endswith(urllib.parse.quote(str((folder / session.find_take("take001").mix_file).resolve())))

    # Every WAV in the export is sample-aligned with the upload: its rate, channels and length.
    upload, upload_sr = sf.read(str(mix), always_2d=True)
    with zipfile.ZipFile(exported) as z:
        wavs = sorted(n for n in z.namelist() if n.endswith(".wav"))
        assert [n for n in wavs if n.startswith("stems/")] == sorted(f"stems/{Path(t.file).name}"
                                                                     for t in session.accepted_takes())
        for member in wavs:
            audio, sr = sf.read(io.BytesIO(z.read(member)), always_2d=True)
            assert sr == upload_sr and audio.shape == upload.shape, member
        np.testing.assert_array_equal(sf.read(io.BytesIO(z.read(f"stems/{Path(bass.file).name}")), always_2d=True)[0],
                                      sf.read(str(folder / bass.file), always_2d=True)[0])


@pytest.mark.long
@pytest.mark.slow
@pytest.mark.browser
def test_a_ten_minute_song_in_a_browser(tiny_model, tmp_path, patient_launch):
    """A whole song at the studio's limit: a 10-minute upload becomes a session whose lanes load
    in the browser; a drum take over it is made through the long-form windows, streams into the
    player window by window while it is generated, and is accepted; the new lanes load again."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from stage.generate.session import Session

    seconds, sr = 600.0, 8_000  # 9.6 MB of 16-bit mono: the length at the limit, a small file
    mix = write_loop(tmp_path / "song.wav", seconds, sr=sr, channels=1)
    port = free_port()
    studio = open_studio(tiny_model, tmp_path, port=port, max_upload_mb=20.0, max_seconds=seconds)
    demo = studio.launch(block=False, quiet=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("#create", timeout=60_000)
                page.locator("#mix-upload input[type=file]").set_input_files(str(mix))
                page.wait_for_selector("#mix-upload audio", state="attached", timeout=120_000)
                page.locator("#create").click()
                page.locator("#status").filter(has_text="600.00 s").wait_for(timeout=120_000)
                page.wait_for_function(LANES_READY, arg=["song"], timeout=120_000)
                assert page.evaluate("window.stageStudio.multitrack.state()")["lengths"] == [int(seconds * sr)]

                page.get_by_label("off: the mix is the context").check()
                page.locator("#takes input[type=number]").fill("1")
                page.locator("#takes input[type=number]").press("Enter")
                page.locator("#generate").click()
                # While the model runs, the take streams in, a window at a time.
                page.wait_for_function("(window.stageStudio.stream?.state().log.length || 0) >= 2", timeout=600_000)
                assert not page.evaluate("window.stageStudio.stream.done")
                page.locator("#take").get_by_label("take001").wait_for(timeout=1_800_000)  # the take is written
                page.wait_for_function("window.stageStudio.stream?.done", timeout=120_000)
                stream = page.evaluate("window.stageStudio.stream.state()")
                page.locator("#accept").click()
                page.wait_for_function(LANES_READY, arg=["song", "drums take001"], timeout=300_000)
            finally:
                browser.close()
    finally:
        demo.close()
        studio.close()
    session = Session.open(tmp_path / "sessions" / "song")
    assert session.state.current == 1 and session.state.samples == int(seconds * sr)
    take = session.find_take("take001")
    assert sf.info(str(session.folder / take.file)).frames == int(seconds * sr)
    log = stream["log"]  # back to back, the whole take
    assert stream["have"] == int(seconds * sr) and all(a["end"] == b["start"] for a, b in zip(log, log[1:]))


def test_studio_command_refuses_missing_models(tmp_path, capsys, monkeypatch):
    from stage.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STAGE_MODELS", str(tmp_path / "models"))
    assert main(["studio", "--model", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["studio", "--model", "stage-bass"]) == 2
    err = capsys.readouterr().err
    assert "stage-bass.safetensors" in err and "giorgioskij/stage" in err
    assert main(["studio", "--model", "tiny", "--max-upload-mb", "0"]) == 2
    assert "max-upload-mb" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--sessions", "--work-dir"])
def test_studio_command_refuses_a_file_for_a_folder(tmp_path, capsys, monkeypatch, flag):
    """A file where a folder goes: one line, exit 2, before the model loads, the file untouched."""
    from stage.cli import main

    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "song.wav"
    afile.write_bytes(b"not a folder")
    before = session_files(tmp_path)
    assert main(["studio", "--model", "tiny", flag, str(afile)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and f"{flag} {afile}: exists and is not a folder" in err
    assert session_files(tmp_path) == before
