"""A live window of the front camera while the demo runs, where a display and Tk exist."""
from __future__ import annotations

import os

import numpy as np


class FrontCameraViewer:
    """A matplotlib window of the front camera, where a display and an interactive backend exist."""

    def __init__(self):
        import matplotlib.pyplot as plt

        self.plt = plt
        self.fig, self.ax = plt.subplots(num="hybridvla demo: front camera")
        self.image = None

    def show(self, frame: np.ndarray | None, title: str) -> None:
        if frame is None:
            return
        if self.image is None:
            self.image = self.ax.imshow(frame)
            self.ax.axis("off")
        else:
            self.image.set_data(frame)
        self.ax.set_title(title, fontsize=9)
        self.plt.pause(0.001)


def viewer_possible() -> bool:
    if not os.environ.get("DISPLAY"):
        return False
    try:
        import matplotlib

        matplotlib.use("TkAgg")
        import matplotlib.pyplot  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - no Tk: no viewer, silently
        return False
