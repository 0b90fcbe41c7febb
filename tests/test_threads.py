"""`--threads` and the OpenMP wait policy (stage/threads.py): the thread count generation runs
with (read off the real codec call inside the take pipeline), the one-line refusal of a bad
count, the default rule, and that the `stage` command makes idle OpenMP threads sleep before
torch loads (libgomp's own report of its settings, OMP_DISPLAY_ENV)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from helpers import drum_loop

from stage.cli import main
from stage.threads import SMALL_MODEL_PARAMETERS, default_threads, generation_threads, physical_cores

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def threads_seen(monkeypatch):
    """torch's thread count at every codec encode (the mix, inside the generation call)."""
    from stage.tokens.codec import Codec

    seen = []
    original = Codec.encode

    def record(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Codec, "encode", record)
    return seen


def _mix(tmp_path: Path) -> Path:
    path = tmp_path / "loop.wav"
    sf.write(str(path), drum_loop(120.0, 0.3, 32_000, 0.05).T, 32_000)
    return path


@pytest.mark.parametrize("threads", [1, 2])
def test_generate_runs_with_the_given_threads_and_restores_them(tmp_path, capsys, threads_seen, threads):
    before = torch.get_num_threads()
    out = tmp_path / "takes"
    rc = main(["generate", str(_mix(tmp_path)), "--model", "tiny", "--stem", "drums", "--cfg", "1", "--seconds", "0.2",
               "--seed", "0", "--quiet", "--out", str(out), "--threads", str(threads)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".wav", ".wav"]
    assert threads_seen == [threads]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("value", ["0", "-2"])
@pytest.mark.parametrize("command", ["generate", "session"])
def test_bad_threads_is_one_line_and_writes_nothing(tmp_path, capsys, value, command):
    out = tmp_path / "takes"
    take = ["--model", "tiny", "--stem", "drums", "--threads", value]
    if command == "generate":
        argv = ["generate", str(_mix(tmp_path)), "--seconds", "0.2", "--out", str(out), *take]
    else:
        assert main(["session", "new", str(out), "--seconds", "0.5"]) == 0
        capsys.readouterr()
        argv = ["session", "generate", str(out), *take]
    before = sorted(p.name for p in out.iterdir()) if out.exists() else []
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == f"error: --threads must be a whole number >= 1, got {int(value)}"
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else []) == before


def test_default_threads_rule(monkeypatch):
    assert default_threads(1_100_000) == 1  # tiny
    assert default_threads(SMALL_MODEL_PARAMETERS) == max(1, physical_cores() - 1)  # musicgen-small and up: one core free
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with generation_threads(None, 1_100_000) as used:
        assert used == torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))  # the user's setting is kept as the default
    with generation_threads(None, 1_100_000) as used:
        assert used == torch.get_num_threads() == before
    assert torch.get_num_threads() == before


def _gomp_spincount(code: str, **env: str) -> int:
    """libgomp's spin count in a fresh interpreter running `code` (OMP_DISPLAY_ENV=VERBOSE)."""
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    base.update(PYTHONPATH=str(ROOT / "src"), OMP_DISPLAY_ENV="VERBOSE", OMP_NUM_THREADS="1", **env)
    done = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=120)
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    if found is None:
        pytest.skip("torch's OpenMP runtime is not libgomp (no GOMP_SPINCOUNT report)")
    return int(found.group(1))


def test_stage_command_makes_idle_threads_sleep_before_torch_loads():
    code = "from stage.cli import main; main([]); import torch"
    assert _gomp_spincount(code) == 0  # PASSIVE: no spinning
    assert _gomp_spincount(code, OMP_WAIT_POLICY="ACTIVE") > 0  # a user's own policy is kept
