"""Where the GUI driver comes from and where it goes: its source file on the host (envs/gui_driver.py,
a standalone script), its path inside a GUI sandbox, and the environment a checker script gets to
call it. Shared by the GUI env (envs/gui.py), which uploads the driver at reset, and the GUI
verifier (envs/verifiers.py), which uploads a fresh copy before the checker runs.

Not guaranteed: that the driver runs in a sandbox (it needs the GUI image's Xvfb, Chromium or AT-SPI).
"""

from __future__ import annotations

from pathlib import Path

DRIVER_SOURCE = Path(__file__).with_name("gui_driver.py")
DRIVER_PATH = "/tmp/.agentsd-gui/driver.py"


def driver_env(answer: str | None = None) -> dict[str, str]:
    """What checker scripts see: $GUI (the driver) and $AGENTSD_ANSWER (the submitted answer)."""
    return {"GUI": DRIVER_PATH, "AGENTSD_ANSWER": answer or ""}
