"""The studio's multitrack lanes and stream player, played in the browser (stage/app/studio.js).

Gradio has no multitrack component, so the page carries two specs in gr.HTML components and our
own script (studio.js, on the Web Audio API, inlined into the page's head: no library, no CDN,
works offline) draws and plays them:

- `multitrack_html`: the lanes of the current mix, from `lane_factors` (the starting mix and each
  accepted stem, each with the factor it enters the mix with), with the beat grid. The browser
  decodes each lane at the session's own rate and starts them all at one instant, so they stay
  sample-locked; mute and solo set each lane's gain to its factor or 0, as `mixer.audible`, so
  all lanes heard play exactly the current mix and any selection plays what `mixer.mix_lanes`
  writes (tests/test_studio.py renders both and compares them).
- `stream_html`: the take being generated, as the WAVs of its new samples over the mix so far
  (`StreamChunk`s); the player schedules each right after the previous one, so the stream plays
  gaplessly while the model runs.

Files are served by Gradio's file route from the sessions and work folders (`allowed_paths`);
nothing else is reachable through it.
"""

from __future__ import annotations

import html
import json
import urllib.parse
from pathlib import Path

from stage.app.mixer import lane_factors
from stage.data.beats import BeatGrid
from stage.generate.session import Session

SCRIPT = Path(__file__).with_name("studio.js")

CSS = """
.stage-mt { border: 1px solid #ddd; border-radius: 6px; padding: 6px; outline: none; }
.stage-mt:focus { border-color: #3465a4; }
.smt-bar { display: flex; gap: 8px; align-items: center; margin-bottom: 6px; }
.smt-bar button, .smt-controls button { min-width: 32px; padding: 2px 8px; border: 1px solid #bbb; border-radius: 4px;
  background: #f6f6f6; cursor: pointer; }
.smt-controls button[aria-pressed=true].smt-mute { background: #e8a33d; color: #fff; }
.smt-controls button[aria-pressed=true].smt-solo { background: #3465a4; color: #fff; }
.smt-time { font-family: ui-monospace, monospace; }
.smt-status { color: #a33; }
.smt-lane { display: grid; grid-template-columns: 170px 1fr; gap: 6px; align-items: center; margin: 3px 0; }
.smt-controls { display: flex; justify-content: space-between; align-items: center; gap: 4px; }
.smt-name { display: flex; flex-direction: column; overflow: hidden; }
.smt-name small { color: #777; white-space: nowrap; text-overflow: ellipsis; overflow: hidden; }
.smt-wavebox { position: relative; height: 72px; background: #fff; border: 1px solid #eee; cursor: pointer; }
.smt-wave { width: 100%; height: 72px; display: block; }
.smt-head { position: absolute; top: 0; bottom: 0; left: 0; width: 2px; background: #111; pointer-events: none; }
.smt-foot { color: #777; font-size: 0.85em; margin-top: 4px; }
.stage-stream { color: #555; font-family: ui-monospace, monospace; }
"""


def file_url(path: Path) -> str:
    """The URL Gradio serves `path` under (it must lie in the launch's `allowed_paths`)."""
    return "/gradio_api/file=" + urllib.parse.quote(str(Path(path).resolve()))


def head() -> str:
    """The page's <head> additions: the players' style and script, inline."""
    return f"<style>{CSS}</style>\n<script>\n{SCRIPT.read_text()}\n</script>"


def lanes_spec(session: Session, grid: BeatGrid | None) -> dict:
    """The multitrack's spec: the session's format, each lane (label, caption, URL, factor) and the
    beat grid (seconds)."""
    s = session.state
    lanes = []
    for lane in lane_factors(session):
        path = session.folder / lane.file
        caption = "the upload" if lane.take is None else _caption(session, lane.take)
        # The file's change time in the URL: a lane rewritten under the same name is fetched again.
        lanes.append({"label": lane.label, "caption": caption, "factor": lane.factor,
                      "url": f"{file_url(path)}?t={path.stat().st_mtime_ns}"})
    return {"session": session.folder.name, "version": s.current, "rate": s.sample_rate, "channels": s.channels,
            "samples": s.samples, "lanes": lanes,
            "beats": [round(float(t), 4) for t in grid.beats] if grid else [],
            "downbeats": [round(float(t), 4) for t in grid.downbeats] if grid else [],
            "grid": grid.describe() if grid else ""}


def _caption(session: Session, take_id: str) -> str:
    take = session.find_take(take_id)
    return f"seed {take.seed}, over mix v{take.over_mix}"


def multitrack_html(spec: dict | None) -> str:
    """The element studio.js turns into the lanes (empty when no session is open)."""
    if spec is None:
        return "<div class='stage-mt-empty'>Open or create a session to see its lanes.</div>"
    payload = html.escape(json.dumps(spec, separators=(",", ":")), quote=True)
    return f"<div class='stage-mt' data-stage-multitrack=\"{payload}\">loading the lanes…</div>"


def stream_html(chunks: list | None, done: Path | None = None) -> str:
    """The element studio.js plays as a gapless stream: `chunks` (`StreamChunk`s of one take, in
    order) each hold the take over the mix from its `start` sample on; `done`, the take's own
    preview once it is written, ends the stream (the player takes what it lacks from it)."""
    if not chunks:
        return "<div class='stage-stream'>A take streams here while it is generated.</div>"
    parts = [{"url": file_url(c.path), "start": c.start} for c in chunks]
    if done is not None:
        parts.append({"url": file_url(done), "start": 0})
    spec = {"id": chunks[0].stream, "rate": chunks[0].rate, "chunks": parts, "done": done is not None}
    payload = html.escape(json.dumps(spec, separators=(",", ":")), quote=True)
    return (f"<div class='stage-stream' data-stage-stream=\"{payload}\">"
            f"<span class='sst-status'>streaming…</span></div>")
