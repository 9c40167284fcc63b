#!/usr/bin/env python3
"""The GUI driver that runs *inside* a GUI sandbox (stdlib only; pyatspi from the system for desktops).

The GUI env (envs/gui.py) uploads this file and calls it once per step; it never imports agentsd.

    driver.py start '{"kind": "desktop"|"web", "command": [...], "url": ..., ...}'
    driver.py observe            -> JSON {"tree", "title", "screenshot"}
    driver.py step '<action>'    -> the action, a settle pause, then the observation, as JSON
    driver.py eval '<js>'        -> (web) the JSON value of a page expression, for checkers
    driver.py text ROLE [NAME]   -> (desktop) the text of the first showing element that matches

`start` brings up Xvfb, a window manager (openbox), a D-Bus session with the accessibility bus, and
the application: a desktop program (its AT-SPI tree is read through pyatspi) or Chromium on a URL
(its accessibility tree, the ARIA roles and names, is read over the DevTools protocol on loopback).
Element ids are stable for an element's life: desktop ids are kept per accessibility path in the
state file, web ids are Chromium's backend DOM node ids. Screenshots are the whole X screen as PNG.

Not guaranteed: desktop ids of elements after siblings of the same role are inserted before them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

STATE_DIR = os.environ.get("AGENTSD_GUI_STATE", "/tmp/.agentsd-gui")
STATE_FILE = os.path.join(STATE_DIR, "state.json")
SCREENSHOT = os.path.join(STATE_DIR, "screen.png")
DISPLAY = ":99"
CDP_PORT = 9222
MAX_NODES = 1500
KEY_SEP = "/"  # joins the role:k segments of an element's path
MAX_TEXT = 300
START_TIMEOUT_S = 60.0
# Roles shown even without a name: the ones an agent acts on or reads.
DESKTOP_ROLES = {
    "push button",
    "toggle button",
    "check box",
    "radio button",
    "text",
    "entry",
    "password text",
    "combo box",
    "spin button",
    "slider",
    "menu item",
    "check menu item",
    "radio menu item",
    "menu",
    "page tab",
    "list item",
    "table cell",
    "link",
    "terminal",
    "document text",
    "paragraph",
}
WEB_FLATTEN = {"generic", "none", "group", "LayoutTable", "LayoutTableRow", "LayoutTableCell", "Section"}
WEB_SKIP = {"InlineTextBox", "LineBreak"}


class DriverError(Exception):
    pass


# ---------------------------------------------------------------------------------------------- state


def load_state() -> dict[str, Any]:
    try:
        with open(STATE_FILE) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DriverError("the GUI is not started (no state file)") from None


def save_state(state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=STATE_DIR)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(tmp, STATE_FILE)


def app_env(state: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DISPLAY=state["display"],
        HOME=os.path.join(STATE_DIR, "home"),
        XDG_RUNTIME_DIR=os.path.join(STATE_DIR, "run"),
        XDG_CONFIG_HOME=os.path.join(STATE_DIR, "home", ".config"),
        GSETTINGS_BACKEND="memory",  # no dconf service in the sandbox
        NO_AT_BRIDGE="0",
    )
    if state.get("bus"):
        env["DBUS_SESSION_BUS_ADDRESS"] = state["bus"]
    return env


def spawn(argv: list[str], log: str, env: dict[str, str]) -> int:
    with open(os.path.join(STATE_DIR, log), "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def wait_for(what: str, check: Any, timeout: float = START_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise DriverError(f"{what} did not come up within {timeout:.0f}s" + (f" ({last})" if last else ""))


def xdotool(state: dict[str, Any], *args: str) -> str:
    result = subprocess.run(
        ["xdotool", *args], env=app_env(state), capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        raise DriverError(f"xdotool {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout.strip()


def pointer_click(state: dict[str, Any], x: int, y: int) -> None:
    # toolkits ignore a press that arrives before the pointer-enter they expect, so move, pause, press
    xdotool(state, "mousemove", "--sync", str(x), str(y), "sleep", "0.05", "click", "1")


def log_tail(name: str, lines: int = 15) -> str:
    try:
        with open(os.path.join(STATE_DIR, name), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------------------------------------- start


def start(spec: dict[str, Any]) -> dict[str, Any]:
    for sub in ("home/.config", "run"):
        os.makedirs(os.path.join(STATE_DIR, sub), mode=0o700, exist_ok=True)
    width, height = int(spec.get("width", 1280)), int(spec.get("height", 800))
    state: dict[str, Any] = {
        "display": DISPLAY,
        "kind": spec["kind"],
        "settle_s": float(spec.get("settle_s", 0.3)),
        "ids": {},
        "next_id": 1,
    }
    env = app_env(state)
    # Xvfb (not root here) cannot create its socket directory itself
    os.makedirs("/tmp/.X11-unix", exist_ok=True)
    os.chmod("/tmp/.X11-unix", 0o1777)
    spawn(
        ["Xvfb", DISPLAY, "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp", "-noreset"],
        "xvfb.log",
        env,
    )
    wait_for("Xvfb", lambda: subprocess.run(["xdpyinfo"], env=env, capture_output=True).returncode == 0, 20)
    if spec["kind"] == "desktop":
        launched = subprocess.run(
            ["dbus-launch", "--sh-syntax"], env=env, capture_output=True, text=True, timeout=30
        )
        for line in launched.stdout.splitlines():
            if line.startswith("DBUS_SESSION_BUS_ADDRESS="):
                state["bus"] = line.split("=", 1)[1].strip().rstrip(";").strip("'")
        if not state.get("bus"):
            raise DriverError(f"dbus-launch gave no bus address: {launched.stderr.strip()}")
        env = app_env(state)
        spawn(["/usr/libexec/at-spi-bus-launcher", "--launch-immediately"], "atspi.log", env)
    spawn(["openbox", "--sm-disable"], "wm.log", env)
    save_state(state)
    if spec["kind"] == "desktop":
        spawn(list(spec["command"]), "app.log", env)
        wait_for(
            f"the application window ({spec['command'][0]})", lambda: desktop_frames(state), START_TIMEOUT_S
        )
    else:
        spawn(
            [
                "chromium",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-sync",
                "--password-store=basic",
                f"--user-data-dir={STATE_DIR}/chromium",
                f"--remote-debugging-port={CDP_PORT}",
                "--remote-allow-origins=*",
                "--force-renderer-accessibility",
                "--window-position=0,0",
                f"--window-size={width},{height}",
                "--disable-features=Translate,MediaRouter",
                "--allow-file-access-from-files",
                spec["url"],
            ],
            "app.log",
            env,
        )
        wait_for("Chromium's page", page_ready, START_TIMEOUT_S)
        if spec.get("init_js"):
            with CDP() as cdp:
                cdp.evaluate(spec["init_js"])
    give_keyboard(state, spec["kind"])
    if spec["kind"] == "desktop":
        desktop_settled(state)
        time.sleep(0.5)  # a toolkit still busy drawing its first frame can drop the first input
    # the first synthetic key makes clients reload the keymap, and can be lost while they do
    with contextlib.suppress(DriverError, subprocess.TimeoutExpired):
        xdotool(state, "key", "shift")
    time.sleep(state["settle_s"])
    return observe()


def give_keyboard(state: dict[str, Any], kind: str, timeout: float = 10.0) -> None:
    """The app's window gets the keyboard, as a user's click would give it, and the first
    observation waits until it has it: the focus is part of what the agent sees, so a reset must
    not show it on one run and not on the next. Best effort after `timeout` (the app still works;
    the first key may then go nowhere)."""

    def focused() -> bool:
        try:
            window = xdotool(state, "search", "--onlyvisible", "--limit", "1", "--name", ".+").splitlines()[0]
            xdotool(state, "windowactivate", window)  # no --sync: the check below is the wait
            if kind == "desktop":
                return xdotool(state, "getactivewindow") == window
            with CDP() as cdp:
                return bool(cdp.evaluate("document.hasFocus()"))
        except (DriverError, IndexError, OSError, subprocess.TimeoutExpired):
            return False

    with contextlib.suppress(DriverError):
        wait_for("the window's keyboard focus", focused, timeout)


def page_ready() -> bool:
    """The task's page has loaded, scripts included (the blank page Chromium shows before it
    navigates is also "complete": scripts run against it would find none of the page's globals)."""
    with CDP() as cdp:
        href, ready = cdp.evaluate("[location.href, document.readyState]")
    return ready == "complete" and href not in ("", "about:blank") and not href.startswith("chrome")


# ---------------------------------------------------------------------------------------------- DevTools


class CDP:
    """A minimal Chrome DevTools Protocol client over a WebSocket (RFC 6455, client side)."""

    def __init__(self) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{CDP_PORT}/json", timeout=5) as resp:
            targets = json.load(resp)
        pages = [t for t in targets if t.get("type") == "page" and not t.get("url", "").startswith("chrome")]
        if not pages:
            raise DriverError("Chromium has no page open")
        path = pages[0]["webSocketDebuggerUrl"].split(str(CDP_PORT), 1)[1]
        self.sock = socket.create_connection(("127.0.0.1", CDP_PORT), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{CDP_PORT}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise DriverError("DevTools closed the connection during the handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise DriverError(f"DevTools refused the WebSocket: {status!r}")
        self.buffer = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def __enter__(self) -> CDP:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise DriverError("DevTools closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _send_frame(self, payload: bytes, opcode: int = 1) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _message(self) -> bytes:
        parts: list[bytes] = []
        while True:
            first, second = self._read(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8))
            mask = self._read(4) if second & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 8:
                raise DriverError("DevTools closed the WebSocket")
            if opcode == 9:
                self._send_frame(payload, opcode=10)
                continue
            if opcode in (0, 1, 2):
                parts.append(payload)
                if first & 0x80:
                    return b"".join(parts)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self._send_frame(json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:
            message = json.loads(self._message())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise DriverError(f"{method}: {message['error'].get('message', message['error'])}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DriverError(f"page script failed: {text}")
        return result.get("result", {}).get("value")


def web_tree(state: dict[str, Any]) -> tuple[str, str]:
    with CDP() as cdp:
        nodes = cdp.call("Accessibility.getFullAXTree")["nodes"]
        title = cdp.evaluate("document.title") or ""
    by_id = {n["nodeId"]: n for n in nodes}
    lines: list[str] = []

    def value(node: dict[str, Any], field: str) -> str:
        return str((node.get(field) or {}).get("value", "") or "")

    def visit(node: dict[str, Any], depth: int, parent_name: str) -> None:
        if len(lines) >= MAX_NODES:
            return
        role, name = value(node, "role"), value(node, "name").strip()
        shown = not node.get("ignored") and role not in WEB_SKIP
        if shown and role in WEB_FLATTEN and not name:
            shown = False
        if shown and role == "StaticText" and (not name or name == parent_name):
            shown = False
        if shown:
            line = f"{'  ' * depth}- {role}"
            if name:
                line += f' "{clip(name)}"'
            line += f" [{node.get('backendDOMNodeId', '?')}]"
            line += web_props(node)
            lines.append(line)
        for child_id in node.get("childIds", []):
            child = by_id.get(child_id)
            if child is not None and role not in WEB_SKIP:
                visit(child, depth + 1 if shown else depth, name if shown else parent_name)

    if nodes:
        visit(nodes[0], 0, "")
    return "\n".join(lines), title


def web_props(node: dict[str, Any]) -> str:
    out = ""
    val = (node.get("value") or {}).get("value")
    if val not in (None, ""):
        out += f' value="{clip(str(val), keep_lines=True)}"'
    for prop in node.get("properties", []):
        name, val = prop.get("name"), (prop.get("value") or {}).get("value")
        if name in ("focused", "disabled", "expanded", "selected") and val:
            out += f" {name}"
        elif name == "checked" and val not in (None, "false", False):
            out += " checked"
    return out


def clip(text: str, keep_lines: bool = False) -> str:
    """Bounded one-line text: whitespace collapsed, or (for editable text) newlines shown as \\n."""
    text = text.replace("\n", "\\n").replace("\t", "\\t") if keep_lines else " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def web_box(cdp: CDP, element: int) -> tuple[float, float]:
    cdp.call("DOM.getDocument", depth=0)
    with contextlib.suppress(DriverError):  # not scrollable: its box is where it is
        cdp.call("DOM.scrollIntoViewIfNeeded", backendNodeId=element)
    quad = cdp.call("DOM.getBoxModel", backendNodeId=element)["model"]["border"]
    return sum(quad[0::2]) / 4, sum(quad[1::2]) / 4


def web_click(element: int) -> str:
    with CDP() as cdp:
        try:
            x, y = web_box(cdp, element)
        except DriverError as exc:
            raise DriverError(f"element {element} is not on the page or has no box ({exc})") from None
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            cdp.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    return f"clicked element {element}"


def web_type(element: int, text: str) -> str:
    with CDP() as cdp:
        cdp.call("DOM.getDocument", depth=0)
        handle = cdp.call("DOM.resolveNode", backendNodeId=element)["object"]["objectId"]
        focused = cdp.call(
            "Runtime.callFunctionOn",
            objectId=handle,
            functionDeclaration="function () { return this === document.activeElement; }",
            returnByValue=True,
        )["result"].get("value")
    if not focused:  # a click puts the caret where a user's would; an already focused field keeps it
        web_click(element)
    with CDP() as cdp:
        cdp.call("Input.insertText", text=text)
    return f"typed {len(text)} characters into element {element}"


# ---------------------------------------------------------------------------------------------- AT-SPI


def _atspi(state: dict[str, Any]) -> Any:
    os.environ.update(app_env(state))
    import pyatspi  # pyright: ignore[reportMissingImports] - the system python3-pyatspi

    return pyatspi


def desktop_frames(state: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    """The screen boxes of the showing top-level windows."""
    pyatspi = _atspi(state)
    boxes = []
    for app in pyatspi.Registry.getDesktop(0):
        for window in app or []:
            if window is not None and window.getState().contains(pyatspi.STATE_SHOWING):
                box = window.queryComponent().getExtents(pyatspi.DESKTOP_COORDS)
                boxes.append((box.x, box.y, box.width, box.height))
    return boxes


def desktop_settled(state: dict[str, Any], timeout: float = 15.0) -> None:
    """Wait until the windows stop moving and their trees stop changing.

    The window manager places a new window after it maps, and apps fill in their title and content
    (a file loading) after the window shows: the first observation must not race either.
    """
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        boxes = desktop_frames(state)
        seen = (boxes, desktop_tree(state)) if boxes else None
        if seen is not None and seen == last:
            return
        last = seen
        time.sleep(0.3)


def _children(node: Any) -> list[tuple[str, Any]]:
    """Each child with its key segment role:k, k counting earlier siblings of the same role.

    Names stay out of the key: a window title that gains a "modified" mark, or a label that
    changes, must not give the element and everything inside it new ids.
    """
    seen: dict[str, int] = {}
    out = []
    for child in node:
        if child is None:
            continue
        try:
            role = child.getRoleName()
        except Exception:
            continue
        k = seen.get(role, 0)
        seen[role] = k + 1
        out.append((f"{role}:{k}", child))
    return out


def desktop_tree(state: dict[str, Any]) -> tuple[str, str]:
    pyatspi = _atspi(state)
    ids: dict[str, int] = state["ids"]
    lines: list[str] = []
    title = ""

    def visit(node: Any, key: str, depth: int) -> None:
        nonlocal title
        if len(lines) >= MAX_NODES:
            return
        try:
            role, name, states = node.getRoleName(), (node.name or "").strip(), node.getState()
        except Exception:
            return
        if role != "application" and not states.contains(pyatspi.STATE_SHOWING):
            return
        text = desktop_text(node) if role in DESKTOP_ROLES else ""
        shown = role not in ("application", "desktop frame") and bool(name or text or role in DESKTOP_ROLES)
        if shown:
            if key not in ids:
                ids[key] = state["next_id"]
                state["next_id"] += 1
            line = f"{'  ' * depth}- {role}"
            if name:
                line += f' "{clip(name)}"'
            line += f" [{ids[key]}]"
            if text and text != name:
                line += f' text="{clip(text, keep_lines=True)}"'
            for flag, label in (
                (pyatspi.STATE_FOCUSED, "focused"),
                (pyatspi.STATE_CHECKED, "checked"),
                (pyatspi.STATE_SELECTED, "selected"),
                (pyatspi.STATE_EXPANDED, "expanded"),
            ):
                if states.contains(flag):
                    line += f" {label}"
            if not states.contains(pyatspi.STATE_SENSITIVE):
                line += " disabled"
            lines.append(line)
        if role == "frame" and not title and states.contains(pyatspi.STATE_ACTIVE):
            title = name
        for segment, child in _children(node):
            visit(child, f"{key}{KEY_SEP}{segment}", depth + 1 if shown else depth)

    desktop = pyatspi.Registry.getDesktop(0)
    for segment, app in _children(desktop):
        visit(app, segment, 0)
    save_state(state)
    return "\n".join(lines), title


def desktop_text(node: Any) -> str:
    try:
        text = node.queryText()
    except NotImplementedError:
        return ""
    except Exception:
        return ""
    return text.getText(0, min(text.characterCount, 4 * MAX_TEXT)).strip()


def desktop_find(state: dict[str, Any], element: int) -> Any:
    key = next((k for k, v in state["ids"].items() if v == element), None)
    if key is None:
        raise DriverError(f"no element has id {element}; use an id from the latest observation")
    pyatspi = _atspi(state)
    node = pyatspi.Registry.getDesktop(0)
    for segment in key.split(KEY_SEP):
        node = next((child for seg, child in _children(node) if seg == segment), None)
        if node is None:
            raise DriverError(f"element {element} is no longer on screen")
    return node


CLICK_ACTIONS = ("click", "press", "activate", "toggle", "jump")


def desktop_click(state: dict[str, Any], element: int) -> str:
    """Buttons and menu items: their own click action (what assistive technology does; no pointer
    timing to race with); anything else: a pointer click at the element's centre."""
    pyatspi = _atspi(state)
    node = desktop_find(state, element)
    try:
        action = node.queryAction()
        names = [action.getName(i) for i in range(action.nActions)]
        for wanted in CLICK_ACTIONS:
            if wanted in names:
                action.doAction(names.index(wanted))
                return f"clicked element {element} ({wanted})"
    except NotImplementedError:
        pass
    try:
        box = node.queryComponent().getExtents(pyatspi.DESKTOP_COORDS)
        if box.width > 0 and box.height > 0 and box.x >= 0 and box.y >= 0:
            x, y = box.x + box.width // 2, box.y + box.height // 2
            pointer_click(state, x, y)
            return f"clicked element {element} at ({x}, {y})"
    except NotImplementedError:
        pass
    action = node.queryAction()  # not on screen: its default action, as assistive tech does
    if action.nActions == 0:
        raise DriverError(f"element {element} is not on screen and has no action")
    action.doAction(0)
    return f"activated element {element} ({action.getName(0)})"


def desktop_type(state: dict[str, Any], element: int, text: str) -> str:
    pyatspi = _atspi(state)
    if not desktop_find(state, element).getState().contains(pyatspi.STATE_FOCUSED):
        desktop_click(state, element)  # an already focused field keeps its caret
    xdotool(state, "type", "--delay", "20", "--", text)
    return f"typed {len(text)} characters into element {element}"


def desktop_text_of(state: dict[str, Any], role: str, name: str | None) -> str:
    pyatspi = _atspi(state)

    def visit(node: Any) -> str | None:
        for _, child in _children(node):
            try:
                if (
                    child.getRoleName() == role
                    and (name is None or (child.name or "") == name)
                    and child.getState().contains(pyatspi.STATE_SHOWING)
                ):
                    return desktop_text(child) or (child.name or "")
                found = visit(child)
            except Exception:
                continue
            if found is not None:
                return found
        return None

    found = visit(pyatspi.Registry.getDesktop(0))
    if found is None:
        raise DriverError(f"no showing {role} element" + (f" named {name!r}" if name else ""))
    return found


# ---------------------------------------------------------------------------------------------- act / observe


def act(state: dict[str, Any], action: dict[str, Any]) -> str:
    name, args = action["name"], action.get("arguments", {})
    web = state["kind"] == "web"
    if name == "click":
        return web_click(int(args["id"])) if web else desktop_click(state, int(args["id"]))
    if name == "type":
        element, text = int(args["id"]), str(args["text"])
        return web_type(element, text) if web else desktop_type(state, element, text)
    if name == "key":
        xdotool(state, "key", "--clearmodifiers", "--delay", "100", *str(args["combo"]).split())
        return f"pressed {args['combo']}"
    if name == "click_xy":
        x, y = int(args["x"]), int(args["y"])
        pointer_click(state, x, y)
        return f"clicked at ({x}, {y})"
    if name == "scroll":
        direction = str(args.get("direction", "down"))
        if direction not in ("up", "down"):
            raise DriverError(f"scroll direction must be up or down, got {direction!r}")
        amount = max(1, min(int(args.get("amount", 3)), 50))
        if "id" in args and web:
            with CDP() as cdp:
                x, y = web_box(cdp, int(args["id"]))
                cdp.call(
                    "Input.dispatchMouseEvent",
                    type="mouseWheel",
                    x=x,
                    y=y,
                    deltaX=0,
                    deltaY=(100 if direction == "down" else -100) * amount,
                )
        else:
            if "id" in args:
                desktop_click(state, int(args["id"]))
            xdotool(state, "click", "--repeat", str(amount), "5" if direction == "down" else "4")
        return f"scrolled {direction} {amount}"
    raise DriverError(f"unknown GUI action {name!r}")


def observe() -> dict[str, Any]:
    state = load_state()
    tree, title = web_tree(state) if state["kind"] == "web" else desktop_tree(state)
    shot = subprocess.run(
        ["import", "-display", state["display"], "-window", "root", f"png:{SCREENSHOT}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return {
        "title": title,
        "tree": tree,
        "screenshot": SCREENSHOT if shot.returncode == 0 else None,
        "screenshot_error": shot.stderr.strip()[-300:] if shot.returncode else None,
    }


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "start":
            out: Any = start(json.loads(rest[0]))
        elif command == "observe":
            out = observe()
        elif command == "step":
            state = load_state()
            message, ok = "", True
            try:
                message = act(state, json.loads(rest[0]))
            except (DriverError, KeyError, ValueError, TypeError) as exc:
                message, ok = f"action failed: {exc}", False
            time.sleep(state["settle_s"])
            out = {"message": message, "ok": ok, **observe()}
        elif command == "eval":
            with CDP() as cdp:
                out = cdp.evaluate(rest[0])
        elif command == "text":  # printed as is, for shell checkers
            print(desktop_text_of(load_state(), rest[0], rest[1] if len(rest) > 1 else None))
            return 0
        else:
            raise DriverError(f"unknown command {command!r}")
    except DriverError as exc:
        logs = "".join(f"\n--- {n}\n{log_tail(n)}" for n in ("app.log", "xvfb.log") if log_tail(n))
        print(f"gui driver: {exc}{logs if command == 'start' else ''}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
