"""Record and replay (autograder/watch/record.py): a check recorded in one process passes again in another
on the recordings alone, and fails there when a recording is missing or was changed. Runs on the
machine's tier (the GPU tier records CUDA tensors)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

RECORD = """
import autograder
from solutions.p5_grouped_query_attention import flash_attention_forward
autograder.check(5, flash_attention_forward, verbose=False)
from autograder.triton_basics import check_2b
from solutions.p2_triton_basics import row_logsumexp
check_2b(row_logsumexp, verbose=False)
"""

REPLAY = """
import autograder
from autograder.record import Replayed
autograder.check(5, Replayed("flash_attention_forward"), verbose=False)
from autograder.triton_basics import check_2b
check_2b(Replayed("row_logsumexp"), verbose=False)
print("REPLAY PASSED")
"""


def _python(code, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("AUTOGRADER_RECORD", "AUTOGRADER_REPLAY")}
    full.update(TQDM_DISABLE="1", **env)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("records")
    out = _python(RECORD, AUTOGRADER_RECORD=str(d))
    assert out.returncode == 0, out.stderr[-2000:]
    return d


def test_replay_of_a_recorded_check_passes(recordings):
    out = _python(REPLAY, AUTOGRADER_REPLAY=str(recordings))
    assert out.returncode == 0 and "REPLAY PASSED" in out.stdout, out.stderr[-2000:]


def test_replay_without_recordings_fails(tmp_path):
    out = _python(REPLAY, AUTOGRADER_REPLAY=str(tmp_path))
    assert out.returncode != 0 and "NotRecorded" in out.stderr and "was not made while your notebook ran" in out.stderr


def test_replay_of_a_changed_recording_fails(recordings, tmp_path):
    import shutil

    import torch
    changed = tmp_path / "changed"
    shutil.copytree(recordings, changed)
    # a forged output: the right shape and dtype, the values off
    for f in sorted(changed.glob("*.pt")):
        rec = torch.load(f, weights_only=True)
        if isinstance(rec["out"], torch.Tensor) and rec["out"].dim() == 4:
            rec["out"] = rec["out"] + 1
            torch.save(rec, f)
    out = _python(REPLAY, AUTOGRADER_REPLAY=str(changed))
    assert out.returncode != 0 and "differ from the reference" in out.stderr, out.stderr[-2000:]
    # a recording that is a link to somewhere else is not read
    linked = tmp_path / "linked"
    linked.mkdir()
    for f in recordings.glob("*.pt"):
        (linked / f.name).symlink_to(f)
    out = _python(REPLAY, AUTOGRADER_REPLAY=str(linked))
    assert out.returncode != 0 and "not a plain file" in out.stderr, out.stderr[-2000:]
