"""The web studio: its handler and pictures directly, then the real page in headless Chromium.

The browser test starts the studio with the tiny model on a free port (in this process, Gradio's
own server thread) and drives it with Playwright's sync API through Debian's `/usr/bin/chromium`
(never `playwright install`), launched with the offline-safe flags from ENVIRONMENT.md.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import drum_loop

from stage.app.studio import COLORS, MAX_TAKES, Studio, StudioConfig, render_waveform
from stage.errors import StageError

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
METRONOME = "number: a metronome at this BPM"


@pytest.fixture
def studio(tiny_model, tmp_path):
    s = Studio.create(StudioConfig(model="tiny", max_upload_mb=1.0, max_seconds=5.0, work_dir=str(tmp_path / "work")),
                      model=tiny_model)
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


def test_job_writes_takes_and_pictures(studio, tmp_path):
    mix = write_loop(tmp_path / "loop.wav", 0.5)
    job = studio.run_job(str(mix), "drums", "tight funk", METRONOME, 100, 4, 0.0, takes=2, cfg=1.0, seed=7)
    assert len(job.takes) == 2 and "metronome at 100 BPM" in job.summary
    for take, seed in zip(job.takes, (7, 8)):
        stem, sr = sf.read(str(take.stem), always_2d=True)
        assert sr == 44_100 and stem.shape == (22_050, 2)
        assert take.mix.is_file() and take.sidecar.is_file() and take.image.is_file()
        assert f"seed {seed}" in take.title and f"_s{seed}" in take.stem.name
    assert job.input_image.is_file() and job.folder.parent == studio.work_dir


@pytest.mark.parametrize("change, message", [
    (dict(upload=None), "upload a mix first"),
    (dict(stem="kazoo"), "generates"),
    (dict(bpm_mode="sometimes"), "BPM mode"),
    (dict(bpm_mode=METRONOME, bpm=None), "type a BPM"),
    (dict(takes=MAX_TAKES + 1), "takes"),
    (dict(top_p=2.0), "top_p"),
])
def test_job_refuses_bad_requests(studio, tmp_path, change, message):
    request = dict(upload=str(write_loop(tmp_path / "loop.wav", 0.3)), stem="drums", bpm_mode="off", takes=1)
    request.update(change)
    with pytest.raises(StageError, match=message):
        studio.run_job(**request)
    assert not any(studio.work_dir.iterdir()), "a refused job left files behind"


def test_upload_limits(studio, tmp_path):
    """Uploads are capped in size (--max-upload-mb, 1 MB here) and length (--max-seconds, 5 s)."""
    huge = tmp_path / "huge.wav"
    sf.write(str(huge), np.zeros((2, 44_100 * 7), np.float32).T, 44_100, subtype="PCM_16")  # 7 s, 1.2 MB
    long = write_loop(tmp_path / "long.wav", 6.0, sr=8_000, channels=1)  # 6 s, 0.1 MB
    with pytest.raises(StageError, match="the file is 1.2 MB; this studio accepts up to 1 MB"):
        studio.run_job(str(huge), "drums", bpm_mode="off")
    with pytest.raises(StageError, match="longer than the 5 s limit"):
        studio.run_job(str(long), "drums", bpm_mode="off")
    assert not any(studio.work_dir.iterdir())


def test_config_is_validated():
    with pytest.raises(StageError, match="max-upload-mb"):
        StudioConfig(max_upload_mb=0)
    with pytest.raises(StageError, match="concurrency"):
        StudioConfig(concurrency=0)


# --------------------------------------------------------------------------- the real page


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.browser
def test_studio_in_a_browser(tiny_model, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    mix = write_loop(tmp_path / "groove.wav", 1.0)
    port = free_port()
    studio = Studio.create(StudioConfig(model="tiny", port=port, work_dir=str(tmp_path / "work")), model=tiny_model)
    demo = studio.launch(block=False, quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                accept_downloads=True, viewport={"width": 1280, "height": 1000},
            )
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("#generate", timeout=60_000)

                # Generating with no upload shows the one-line message.
                page.locator("#generate").click()
                page.get_by_text("upload a mix first").first.wait_for(timeout=30_000)
                page.locator("[data-testid=toast-close]").first.click()

                # Upload, metronome at 120 BPM, one take.
                page.locator("#mix-upload input[type=file]").set_input_files(str(mix))
                page.wait_for_selector("#mix-upload audio", state="attached", timeout=30_000)
                page.get_by_label(METRONOME).check()
                page.locator("#prompt textarea, #prompt input").first.fill("Genres: Funk. Moods: groovy.")
                page.locator("#generate").click()
                page.wait_for_selector("#take-0-wave img", timeout=300_000)
                assert page.locator("#take-0").is_visible()
                assert not page.locator("#take-1").is_visible()
                page.wait_for_function(
                    "document.querySelector('#take-0-wave img').naturalWidth > 0 && "
                    "document.querySelector('#input-wave img').naturalWidth > 0", timeout=30_000)
                # Both players loaded the audio: they show its duration (1 s) next to their controls.
                for player in ("#take-0-stem", "#take-0-mix"):
                    page.locator(f"{player} time#duration").filter(has_text="0:01").wait_for(timeout=60_000)
                    assert page.locator(f"{player} [data-testid=waveform-controls]").is_visible()
                summary = page.locator("#summary").inner_text()
                assert "metronome at 120 BPM" in summary and "1 take" in summary

                with page.expect_download(timeout=60_000) as download:
                    page.locator("#take-0-stem-download").click()
                saved = tmp_path / "downloaded.wav"
                download.value.save_as(saved)
                audio, sr = sf.read(str(saved), always_2d=True)
                assert sr == 44_100 and audio.shape == (44_100, 2)
                assert download.value.suggested_filename.endswith(".wav") and "_120bpm_" in download.value.suggested_filename

                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "studio.png"), full_page=True)

                # Two submissions at once (two users): both go through the queue and complete.
                pages = [browser.new_page(), browser.new_page()]
                for i, other in enumerate(pages):
                    other.goto(url)
                    other.wait_for_selector("#generate", timeout=60_000)
                    other.locator("#mix-upload input[type=file]").set_input_files(str(mix))
                    other.get_by_label("off: the mix is the context").check()
                    other.wait_for_selector("#mix-upload audio", state="attached", timeout=30_000)
                for other in pages:
                    other.locator("#generate").click()
                for other in pages:
                    other.wait_for_selector("#take-0-wave img", timeout=300_000)
                    assert "context: the mix" in other.locator("#summary").inner_text()
                jobs = sorted(d for d in (tmp_path / "work").iterdir() if d.is_dir())
                assert len(jobs) == 3 and all(len(list(d.glob("*.wav"))) == 2 for d in jobs)
            finally:
                browser.close()
    finally:
        demo.close()
        studio.close()


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
