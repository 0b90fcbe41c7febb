"""Atomic writes keep the old file on failure, leave no temporary file, and use normal permissions;
a held folder lock refuses a second holder."""

from __future__ import annotations

import os

import pytest

from stage.files import atomic_write, atomic_write_text, default_mode, probe_writable


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old\n")

    def boom(f):
        f.write("half a repo")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_written_files_get_umask_permissions_not_0600(tmp_path):
    target = atomic_write(tmp_path / "codes.bin", lambda f: f.write(b"\x00\x01"), binary=True)
    assert target.read_bytes() == b"\x00\x01"
    assert os.stat(target).st_mode & 0o777 == default_mode()


def test_probe_refuses_a_file_as_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        probe_writable(blocker)
    probe_writable(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_reading_the_umask_never_changes_it(tmp_path):
    """The studio writes from worker threads: reading the umask must not flip the process's."""
    import threading

    from stage.files import process_umask

    old = os.umask(0o027)
    try:
        seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                mask = os.umask(0o027)  # set and read back the same value: a flip elsewhere shows
                seen.append(mask)

        t = threading.Thread(target=watch)
        t.start()
        for i in range(300):
            assert process_umask() == 0o027
            atomic_write(tmp_path / f"f{i % 3}.txt", lambda f: f.write("x"))
        stop.set()
        t.join()
        assert set(seen) == {0o027}
        assert os.stat(tmp_path / "f0.txt").st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_a_held_lock_refuses_a_second_holder(tmp_path):
    from stage.errors import StageError
    from stage.files import exclusive_lock

    lock = tmp_path / ".lock"
    with exclusive_lock(lock, "busy"):
        with pytest.raises(StageError, match="busy"):
            with exclusive_lock(lock, "busy"):
                pass
    with exclusive_lock(lock, "busy"):  # released on exit: free again
        pass
