"""Section references in the code ("docs/method.md \u00a73.1", or a bare "\u00a73.1") land on a heading
of docs/method.md, and nothing cites the old, external spec any more. Text files only; no imports
of stage."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "method.md"
SCANNED = ("src", "benchmarks", "scripts", "configs", "tests")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt", ".cfg"}
SKIP_DIRS = {"__pycache__", ".pytest_cache"}
OLD_SPEC = "STAGE_" + "METHOD"  # split so that this file does not cite it either

SECTION = "\u00a7"
# "\u00a76.5", "\u00a7 6.5", and the end of a range: "\u00a78-9", "\u00a77.2-\u00a77.4".
REF = re.compile(SECTION + r"\s?(\d+(?:\.\d+)*)(?:-" + SECTION + r"?(\d+(?:\.\d+)*))?")
# Sections of other papers name the paper right before the sign: "EnCodec \u00a73.4", "DAC \u00a73.4".
EXTERNAL = re.compile(r"\b(EnCodec|DAC)\s+\(?$")
HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.MULTILINE)


def scanned_files() -> list[Path]:
    files = [ROOT / "README.md", DOC]
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if parts & SKIP_DIRS or any(p.endswith(".egg-info") for p in parts):
                continue
            if path.is_file() and path.suffix in SUFFIXES:
                files.append(path)
    return [f for f in files if f.is_file()]


def references(text: str) -> list[str]:
    """Section numbers cited in `text` (both ends of a range), other papers' sections left out."""
    found = []
    for m in REF.finditer(text):
        if EXTERNAL.search(text[max(0, m.start() - 12) : m.start()]):
            continue
        found.extend(n for n in m.groups() if n)
    return found


def test_method_doc_exists():
    assert DOC.is_file(), "docs/method.md is missing"
    assert HEADING.findall(DOC.read_text(encoding="utf-8")), "docs/method.md has no numbered headings"


def test_every_section_reference_has_a_heading():
    sections = set(HEADING.findall(DOC.read_text(encoding="utf-8")))
    missing = []
    for path in scanned_files():
        for number, line in _refs_with_lines(path):
            if number not in sections:
                missing.append(f"{path.relative_to(ROOT)}:{line}: {SECTION}{number}")
    assert not missing, "references to sections docs/method.md does not have:\n" + "\n".join(missing)


def test_no_file_cites_the_old_spec():
    offenders = [
        str(path.relative_to(ROOT))
        for path in scanned_files()
        if OLD_SPEC in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert not offenders, f"still citing {OLD_SPEC}.md (use docs/method.md): {offenders}"


def test_reference_parser():
    assert references("see \u00a73.1 step 4, \u00a77.2-\u00a77.4 and \u00a78-9") == ["3.1", "7.2", "7.4", "8", "9"]
    assert references("(EnCodec \u00a73.4) and (DAC \u00a73.4) but \u00a76.2") == ["6.2"]


def _refs_with_lines(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line_no in ((n, i + 1) for i, line in enumerate(text.splitlines()) for n in references(line)):
        yield number, line_no
