"""A process SIGKILLed while it writes checkpoints back to back never leaves a torn
one that loads (raysweep.worker.checkpoint; the other checkpoint cases:
tests/unit/test_trainer.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import torch

from raysweep.worker.checkpoint import CorruptCheckpointError, load_state

SAVE_LOOP = """
import os, sys, torch
from raysweep.worker.checkpoint import save_state
for i in range(1, 100000):
    os.makedirs(f"{sys.argv[1]}/{i:05d}")
    save_state({"version": i, "w": torch.full((1 << 20,), float(i))}, f"{sys.argv[1]}/{i:05d}")
    print(i, flush=True)
"""


def test_sigkill_during_checkpoint_writes_never_leaves_a_torn_checkpoint(tmp_path, fault_figures) -> None:
    """Case 6 (file level): SIGKILL a process that writes checkpoints (4 MiB, each in
    its own directory, as Ray Train's are) back to back, several times. Every
    checkpoint it finished loads whole and consistent; the one it was writing is
    either complete or refused as incomplete, never loaded torn."""
    loaded, refused, kills = [], [], 0
    torn_loaded, finished_refused, survived = [], [], 0
    for attempt in range(5):
        folder = tmp_path / f"run-{attempt}"
        folder.mkdir()
        writer = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(folder)], stdout=subprocess.PIPE, text=True)
        for _ in range(3 + attempt):  # let it finish a few, then kill it mid-write
            finished = int(writer.stdout.readline())
        time.sleep(0.004 * attempt)
        writer.send_signal(signal.SIGKILL)
        kills += writer.wait() == -signal.SIGKILL
        bad_before = len(torn_loaded) + len(finished_refused)
        for checkpoint in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                state = load_state(checkpoint)
            except CorruptCheckpointError:
                refused.append(checkpoint)
                if int(checkpoint.name) <= finished:
                    finished_refused.append(checkpoint)
                continue
            loaded.append(checkpoint)
            if not (torch.equal(state["w"], torch.full((1 << 20,), float(state["version"])))
                    and state["version"] == int(checkpoint.name)):
                torn_loaded.append(checkpoint)
        survived += len(torn_loaded) + len(finished_refused) == bad_before
    fault_figures(faults_injected=kills, faults_survived=survived, torn_checkpoints_loaded=len(torn_loaded),
                  checkpoints_lost=len(finished_refused), checkpoints_refused=len(refused),
                  checkpoints_loaded=len(loaded))
    assert not finished_refused, f"finished checkpoints refused: {finished_refused}"
    assert not torn_loaded, f"torn state loaded: {torn_loaded}"
