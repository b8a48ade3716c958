"""The sweep report as a user sees it: opened in a real headless browser (Debian's
chromium, which scripts/setup_env.sh installs as root; skipped without it, failed under
CI=true), the page is drawn, and its timeline holds one bar per trial."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from raysweep.cli import main

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(BROWSER is None and not os.environ.get("CI"), reason="no chromium")


def _bars(image: np.ndarray) -> int:
    """Bars in a timeline drawing: connected areas of the outcome colours (each bar has
    a black edge, so bars side by side stay apart), ignoring specks (the legend's
    patches are empty, its text is black)."""
    from matplotlib import colors
    from scipy import ndimage

    from raysweep.tracking.html_report import STATE_COLORS

    rgb = image[..., :3]
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    for color in STATE_COLORS.values():
        mask |= np.abs(rgb - np.array(colors.to_rgb(color))).max(axis=-1) < 0.02
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, range(1, count + 1))
    return int((sizes > 150).sum())


def test_the_report_opens_in_a_browser_with_one_bar_per_trial(ray_cluster, mlflow_uri, write_spec, tmp_path):
    from matplotlib import image as mpimg

    assert BROWSER is not None, "CI=true and no chromium: scripts/setup_env.sh installs it as root"
    spec = write_spec(budget={"num_trials": 3, "max_concurrent_trials": 2},
                      scheduler={"type": "fifo", "metric": "val_loss", "mode": "min", "max_epochs": 2})
    assert main(["tune", str(spec)]) == 0
    (sweep_dir,) = [p for p in (tmp_path / "results" / "probe").iterdir() if p.is_dir()]
    page = sweep_dir / "report" / "report.html"
    html = page.read_text()
    assert '<img src="timeline.png"' in html
    # The same page without its timeline, beside it: what the browser drew of the timeline
    # is the difference (the other plots have bars of these colours too).
    bare = page.with_name("without-timeline.html")
    bare.write_text(html.replace('<img src="timeline.png"', '<img hidden src="timeline.png"'))
    drawn, without = (_screenshot(p, tmp_path) for p in (page, bare))
    assert drawn.shape[0] >= 2000 and drawn[..., :3].std() > 0.05, "a blank page"
    timeline = mpimg.imread(sweep_dir / "report" / "timeline.png")
    assert _bars(timeline) == 3  # (one per trial)
    assert _bars(drawn) - _bars(without) == 3, "the timeline's bars are not on the rendered page"


def _screenshot(page: Path, tmp_path: Path) -> np.ndarray:
    from matplotlib import image as mpimg

    shot = tmp_path / f"{page.stem}.png"
    done = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'browser'}", "--window-size=1100,2600",
                           f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    return mpimg.imread(shot)
