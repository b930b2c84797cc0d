"""The viewer serves only its user: handshake Origin/Host checks, a client limit, message
filtering and camera rate limits, GUI clamping, the explicit crop-box save, and the viser
internals the handshake hook relies on. All on loopback, each test bounded in time."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time

import msgspec.msgpack
import numpy as np
import pytest
import torch

from splatlab.viewer import security
from splatlab.viewer.security import HandshakePolicy, MessageGuard, check_message

pytestmark = pytest.mark.timeout(120)


# ---- handshake policy (pure) -----------------------------------------------------------
@pytest.mark.parametrize("origin,host,ok", [
    (None, "127.0.0.1:8080", True),  # not a browser
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("http://localhost:8080", "localhost:8080", True),
    ("http://LOCALHOST:8080/", "localhost:8080", True),
    ("http://[::1]:8080", "[::1]:8080", True),
    ("http://evil.example", "127.0.0.1:8080", False),  # cross-site websocket hijacking
    ("https://127.0.0.1:8080", "127.0.0.1:8080", False),  # not the page's scheme
    ("http://evil.example:8080", "evil.example:8080", False),  # DNS rebinding: Host is theirs
    (None, "evil.example:8080", False),
    ("http://localhost:9000", "localhost:9000", False),  # another local page
    ("http://localhost:8080", "127.0.0.1:8080", False),  # not the page's own origin
    ("null", "127.0.0.1:8080", False),  # sandboxed iframe / file:// page
    ("file://", "127.0.0.1:8080", False),
    ("http://127.0.0.1:8080", None, False),
    ("http://127.0.0.1:8080", "127.0.0.1:8081", False),
    ("http://127.0.0.1:8080", "127.0.0.1 :8080", False),
    ("http://192.168.1.5:8080", "192.168.1.5:8080", False),  # a loopback bind is not on the LAN
])
def test_handshake_policy_loopback(origin, host, ok):
    assert (HandshakePolicy("127.0.0.1", port=8080).refusal(origin, host) is None) == ok


def test_handshake_policy_allow_origin_and_network_bind():
    p = HandshakePolicy("127.0.0.1", allow_origins=["http://localhost:9000"], port=8080)
    assert p.refusal("http://localhost:9000", "localhost:9000") is None  # an SSH tunnel
    assert p.refusal("http://localhost:9001", "localhost:9001") is not None
    with pytest.raises(ValueError):
        HandshakePolicy("127.0.0.1", allow_origins=["localhost:9000"])
    assert HandshakePolicy("127.0.0.1").refusal(None, "127.0.0.1:8080") == "server not ready"
    net = HandshakePolicy("0.0.0.0", port=8080)
    assert net.refusal("http://192.168.1.5:8080", "192.168.1.5:8080") is None
    assert net.refusal("http://evil.example:8080", "evil.example:8080") is not None
    assert net.refusal("http://evil.example:8080", "192.168.1.5:8080") is not None


# ---- messages (pure) --------------------------------------------------------------------
GOOD_CAMERA = {"type": "ViewerCameraMessage", "wxyz": [1.0, 0, 0, 0], "position": [0.0, 0, 3],
               "fov": 0.8, "near": 0.01, "far": 100.0, "image_height": 480, "image_width": 640,
               "look_at": [0.0, 0, 0], "up_direction": [0.0, 0, 1]}

# Each kind a hostile or broken client can send, as raw frames (bytes or str).
MALFORMED = {
    "text frame": "hello",
    "not msgpack": b"\xc1\xff\x00",
    "truncated msgpack": msgspec.msgpack.encode(GOOD_CAMERA)[:20],
    "msgpack list": msgspec.msgpack.encode([1, 2, 3]),
    "no type": msgspec.msgpack.encode({"wxyz": [1, 0, 0, 0]}),
    "type not a string": msgspec.msgpack.encode({"type": 7}),
    "unknown type": msgspec.msgpack.encode({"type": "NoSuchMessage"}),
    "server-only type": msgspec.msgpack.encode({"type": "BackgroundImageMessage", "format": "png"}),
    "share URL request": msgspec.msgpack.encode({"type": "ShareUrlRequest"}),
    "camera missing fields": msgspec.msgpack.encode({"type": "ViewerCameraMessage", "wxyz": [1, 0, 0, 0]}),
    "camera NaN pose": msgspec.msgpack.encode(GOOD_CAMERA | {"wxyz": [math.nan] * 4}),
    "camera string fov": msgspec.msgpack.encode(GOOD_CAMERA | {"fov": "wide"}),
    "camera huge image": msgspec.msgpack.encode(GOOD_CAMERA | {"image_width": 10**9}),
    "camera extra field": msgspec.msgpack.encode(GOOD_CAMERA | {"evil": 1}),
    "GUI update of a prop": msgspec.msgpack.encode({"type": "GuiUpdateMessage", "uuid": "x",
                                                   "updates": {"update_cb": []}}),
    "GUI update nested value": msgspec.msgpack.encode({"type": "GuiUpdateMessage", "uuid": "x",
                                                      "updates": {"value": {"a": [1]}}}),
    "GUI update not a dict": msgspec.msgpack.encode({"type": "GuiUpdateMessage", "uuid": "x", "updates": 5}),
    "scene click bad ray": msgspec.msgpack.encode({"type": "SceneNodeClickMessage", "name": "/x",
                                                  "ray_origin": [math.inf, 0, 0], "ray_direction": [0, 0, 1]}),
    "scene click bad index": msgspec.msgpack.encode({"type": "SceneNodeClickMessage", "name": "/x",
                                                    "instance_index": "0", "ray_origin": [0, 0, 0],
                                                    "ray_direction": [0, 0, 1], "screen_pos": [0, 0],
                                                    "modifier": None}),
    "pointer event (not asked for)": msgspec.msgpack.encode({"type": "ScenePointerMessage", "event_type": "click",
                                                            "ray_origin": "x", "ray_direction": None,
                                                            "screen_pos": [], "modifier": None}),
    "deeply nested": b"\x91" * 100_000 + b"\x00",
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_messages_are_classified(kind):
    reason, _ = MessageGuard("test").classify(MALFORMED[kind])
    assert reason is not None, kind


def test_good_messages_pass():
    g = MessageGuard("test")
    assert g.classify(msgspec.msgpack.encode(GOOD_CAMERA)) == (None, True)
    upd = {"type": "GuiUpdateMessage", "uuid": "x", "updates": {"value": 3.5}}
    assert check_message(upd) is None
    assert check_message(upd, lambda uuid, v: "nope") == "nope"
    click = {"type": "SceneNodeClickMessage", "name": "/cameras/0001", "instance_index": None,
             "ray_origin": [0.0, 0, 0], "ray_direction": [0.0, 0, 1], "screen_pos": [0.5, 0.5], "modifier": None,
             "owner": ""}
    assert g.classify(msgspec.msgpack.encode(click)) == (None, False)


def test_camera_messages_are_rate_limited_newest_wins():
    """200 camera messages in a burst: a few pass at once, the rest are merged and the
    newest reaches viser."""
    msgs = [msgspec.msgpack.encode(GOOD_CAMERA | {"fov": 0.5 + i * 1e-3}) for i in range(200)]

    class Conn:
        def __init__(self):
            self.q = asyncio.Queue()

        async def recv(self, decode=None):
            return await self.q.get()

    async def run():
        conn = Conn()
        for m in msgs:
            conn.q.put_nowait(m)
        g = MessageGuard("test")
        g.install(conn)
        got = []
        t0 = time.monotonic()
        while True:
            try:
                got.append(await asyncio.wait_for(conn.recv(), 0.5))
            except asyncio.TimeoutError:
                break
        return g, got, time.monotonic() - t0

    g, got, dt = asyncio.run(run())
    # The burst of 4, then at most CAMERA_HZ/s while the 200 were decoded, then the newest.
    assert len(got) <= 4 + security.CAMERA_HZ * dt + 1 and len(got) < 50, (len(got), dt)
    assert got[-1] == msgs[-1]
    assert g.merged + len(got) == 200


# ---- GUI values (pure) ------------------------------------------------------------------
def test_clamp_render_settings():
    from splatlab.viewer.render import OUTPUTS, RenderSettings

    d = RenderSettings(max_res=512, sh_degree=1)
    v = security.clamp_render_settings("Evil", 8192, 9, (300, -4, "x"), math.nan, -1.0,
                                       outputs=OUTPUTS, sh_max=1, defaults=d)
    assert v["output"] == "RGB" and v["max_res"] == security.RES_MAX and v["sh_degree"] == 1
    assert all(0.0 <= c <= 1.0 for c in v["background"]) and v["background"][0] == 1.0
    assert v["near"] == d.near and v["far"] > v["near"] and math.isfinite(v["far"])
    v = security.clamp_render_settings("Depth", 1, -3, (0, 0, 0), 50.0, 10.0, outputs=OUTPUTS, sh_max=1, defaults=d)
    assert v["max_res"] == security.RES_MIN and v["sh_degree"] == 0 and v["near"] < v["far"]
    v = security.clamp_render_settings("RGB", 512, 1, (0, 0, 0), 1e300, math.inf, outputs=OUTPUTS, sh_max=1,
                                       defaults=d)
    assert v["near"] < v["far"] <= security.FAR_MAX
    lo, hi = security.clamp_crop((1, math.nan, 1e30), (0, 0, 0), (-1, -1, -1), (1, 1, 1))
    assert lo == (0.0, -1.0, 0.0) and hi == (1.0, 0.0, security.CROP_LIMIT)


# ---- viser internals --------------------------------------------------------------------
def test_viser_still_starts_its_server_the_way_the_hook_expects():
    """If this fails, viser changed how it starts websockets: update
    security.start_guarded_viser (it refuses to serve unguarded meanwhile)."""
    import viser
    from viser.infra import _infra

    src = inspect.getsource(_infra.WebsockServer._background_worker)
    assert "websockets.asyncio.server.serve(" in src and "process_request=" in src, viser.__version__
    assert "async def ws_handler(" in src  # its qualname names WebsockServer
    assert "message_class.deserialize(raw)" in inspect.getsource(_infra._message_consumer)
    assert "await websocket.recv()" in inspect.getsource(_infra._message_consumer)
    src = inspect.getsource(viser.ViserServer.__init__)
    assert "self.request_share_url" in src
    from viser._gui_handles import _GuiInputHandle

    assert hasattr(_GuiInputHandle, "value")


def test_guard_fails_closed_when_viser_does_not_call_serve(monkeypatch):
    import viser

    class FakeServer:
        def __init__(self, host, port, verbose):
            self.stopped = False

        def stop(self):
            self.stopped = True

    monkeypatch.setattr(viser, "ViserServer", FakeServer)
    guard = security.HandshakeGuard(HandshakePolicy("127.0.0.1"))
    with pytest.raises(security.ViserChanged):
        security.start_guarded_viser("127.0.0.1", 0, guard)


# ---- over the wire -----------------------------------------------------------------------
def _model(n=300):
    from splatlab.renderers.splat import SplatModel, SplatRenderer

    g = torch.Generator().manual_seed(0)
    return SplatRenderer(SplatModel.random(n, torch.tensor([-1.0, -1, -1]), torch.tensor([1.0, 1, 1]),
                                           sh_degree=1, generator=g))


@pytest.fixture
def viewer(tmp_path):
    from splatlab.viewer.server import ViewerServer

    v = ViewerServer(_model(), port=0, crop_path=tmp_path / "run" / "viewer_crop.json",
                     allow_origins=("http://localhost:9000",))
    yield v
    v.stop()


def _connect(port, origin=None, host=None):
    """A websocket to 127.0.0.1:port; `host` is the name the request says it asked for
    (what a browser sends after a DNS-rebinding attack)."""
    import socket

    import viser
    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return connect(f"ws://{host or f'127.0.0.1:{port}'}", sock=sock, subprotocols=[f"viser-v{viser.__version__}"],
                   origin=origin, open_timeout=5, max_size=None)


def test_foreign_origin_and_rebinding_refused(viewer, caplog):
    from websockets.exceptions import InvalidStatus

    with caplog.at_level(logging.WARNING, logger="splatlab.viewer"):
        for origin, host in (("http://evil.example", None), ("http://evil.example:%d", "evil.example:%d"),
                             ("null", None)):
            origin = origin % viewer.port if "%d" in origin else origin
            host = host % viewer.port if host else None
            with pytest.raises(InvalidStatus) as e:
                _connect(viewer.port, origin, host)
            assert e.value.response.status_code == 403
    assert sum("refused a viewer connection" in r.getMessage() for r in caplog.records) == 3
    _connect(viewer.port, f"http://127.0.0.1:{viewer.port}").close()
    _connect(viewer.port, "http://localhost:9000", "localhost:9000").close()  # --allow-origin


def test_client_limit(viewer, caplog):
    from websockets.exceptions import InvalidStatus

    conns, refused = [], 0
    with caplog.at_level(logging.WARNING, logger="splatlab.viewer"):
        for _ in range(30):
            try:
                conns.append(_connect(viewer.port))
            except InvalidStatus as e:
                assert e.response.status_code == 503
                refused += 1
    assert len(conns) == security.MAX_CLIENTS and refused == 30 - security.MAX_CLIENTS
    assert sum("too many clients" in r.getMessage() for r in caplog.records) == refused
    for c in conns:
        c.close()
    t0 = time.monotonic()
    while viewer.guard.live_count() and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    _connect(viewer.port).close()  # room again once they left


def test_each_malformed_kind_one_line_server_up(viewer, caplog):
    from wsclient import ViserTestClient

    bad = ViserTestClient("127.0.0.1", viewer.port)
    with caplog.at_level(logging.WARNING, logger="splatlab.viewer"):
        for raw in MALFORMED.values():
            bad.ws.send(raw)
        bad.send_camera([1, 0, 0, 0], [0, 0, 3], 0.8, 320, 240)
        assert bad.wait_frame(30.0) is not None, "the same client still gets frames"
    lines = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    kinds = {ln.split("dropped a message: ")[1].split(" (")[0] for ln in lines}
    print(f"\n{len(MALFORMED)} malformed frames -> {len(lines)} log lines, kinds: {sorted(kinds)}")
    assert len(lines) == len(kinds), "one line per kind"
    assert 1 <= len(lines) <= len(MALFORMED)
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"
    bad.close()
    # An oversized frame: websockets closes that connection (code 1009), with one line.
    from websockets.exceptions import ConnectionClosed

    big = ViserTestClient("127.0.0.1", viewer.port)
    with caplog.at_level(logging.WARNING, logger="splatlab.viewer"):
        big.ws.send(b"\x00" * (security.MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ConnectionClosed):
            big.pump(5.0)
            big.ws.recv(timeout=5.0)
        _wait(lambda: any("a message over" in r.getMessage() for r in caplog.records))
        time.sleep(0.2)
    assert sum("a message over" in r.getMessage() for r in caplog.records) == 1
    good = ViserTestClient("127.0.0.1", viewer.port)
    good.send_camera([1, 0, 0, 0], [0, 0, 3], 0.8, 320, 240)
    assert good.wait_frame(30.0) is not None
    good.close()


def _gui_update(client, handle, value):
    client.send_raw({"type": "GuiUpdateMessage", "uuid": security.gui_uuid(handle), "updates": {"value": value}})


def _input(viewer, label):
    return next(h for h in viewer._inputs.values() if h.label == label)


def _wait(pred, timeout=10.0):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_gui_values_clamped_and_crop_saved_only_on_click(viewer):
    from wsclient import ViserTestClient

    c = ViserTestClient("127.0.0.1", viewer.port)
    c.send_camera([1, 0, 0, 0], [0, 0, 3], 0.8, 320, 240)
    c.pump(0.5)
    _gui_update(c, _input(viewer, "Max resolution"), 8192)
    _wait(lambda: _input(viewer, "Max resolution").value == security.RES_MAX)
    assert viewer.settings.max_res == security.RES_MAX
    _gui_update(c, _input(viewer, "Near"), -5.0)
    _wait(lambda: viewer.settings.near == security.NEAR_MIN)
    _gui_update(c, _input(viewer, "Near"), 1e9)
    _wait(lambda: viewer.settings.near == security.FAR_MAX / 10)
    assert viewer.settings.far > viewer.settings.near
    _gui_update(c, _input(viewer, "Near"), "NaN")  # wrong kind: dropped, unchanged
    _gui_update(c, _input(viewer, "Output"), "Evil")
    _gui_update(c, _input(viewer, "Background"), [300, -4, 0])
    _wait(lambda: _input(viewer, "Background").value == (255, 0, 0))
    assert viewer.settings.background == (1.0, 0.0, 0.0)
    c.pump(0.5)
    assert viewer.settings.output == "RGB" and math.isfinite(viewer.settings.near)

    path = viewer.crop_path
    _gui_update(c, _input(viewer, "Crop"), True)
    _gui_update(c, _input(viewer, "Min"), [-0.5, -0.5, -0.5])
    _wait(lambda: viewer.crop.enabled and viewer.crop.lo == (-0.5, -0.5, -0.5))
    c.pump(0.5)
    assert not path.exists(), "dragging the box must not write the file"
    assert "not saved" in viewer._crop_status().lower()
    _gui_update(c, _input(viewer, "Save crop box"), True)
    _wait(path.exists)
    d = json.loads(path.read_text())
    assert d["enabled"] is True and d["min"] == [-0.5, -0.5, -0.5]
    assert f"Saved to {path}" in viewer._crop_status()
    c.close()


def test_view_rejects_a_malformed_allow_origin():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "splatlab.app.cli", "view", "nowhere", "--allow-origin", "localhost:9000"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--allow-origin" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_crop_save_without_run_folder_says_so():
    from splatlab.viewer.server import ViewerServer

    v = ViewerServer(_model(50), port=0)
    try:
        assert "no run folder" in v._crop_status() and v.save_crop() is False
    finally:
        v.stop()


def test_stats_line_for_people():
    from splatlab.viewer.server import render_readout, training_stats

    parts = training_stats({"step": 1234, "loss": 0.0123456, "psnr": 24.401399612426758, "steps_per_s": 120.34,
                            "lr_means": 1.6e-4, "phase": "densify"})
    assert parts[:4] == ["**Step** 1,234", "**Loss** 0.0123", "**PSNR** 24.40 dB", "120.3 steps/s"]
    assert "**lr means** 0.00016" in parts and "**phase** densify" in parts
    now = 100.0
    assert "idle" in render_readout([90.0], now, 0.05, (512, 384))
    assert "rendering" in render_readout([90.0], now, 3.0, (512, 384), busy=True)  # a slow CPU frame
    assert "first frame" in render_readout([], now, 0.0, (0, 0), busy=True)
    line = render_readout([99.0 + 0.1 * i for i in range(10)], now, 0.05, (512, 384))
    assert line.startswith("**Render** 10.0 frames/s"), line
    # One slow frame in the window: the rate is its render rate, never 0.0.
    assert "2.0 frames/s" in render_readout([99.5], now, 0.5, (512, 384))


def test_pause_resume_shows_one_button():
    from splatlab.viewer import LiveFeed
    from splatlab.viewer.server import ViewerServer

    m = _model(50)
    feed = LiveFeed()
    feed.publish(m.live_copy(), {"step": 3, "psnr": 24.401399612426758, "num_gaussians": 50})
    v = ViewerServer(feed=feed, port=0)
    try:
        assert v._pause_btn.visible and not v._resume_btn.visible
        v._set_paused(True)
        assert feed.is_paused() and not v._pause_btn.visible and v._resume_btn.visible
        v._set_paused(False)
        assert not feed.is_paused() and v._pause_btn.visible and not v._resume_btn.visible
        md = v._stats_markdown()
        assert "**PSNR** 24.40 dB" in md and "**50** Gaussians" in md and "num_gaussians" not in md
    finally:
        v.stop()


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, in MB, from /proc."""
    fields = dict(ln.split(":", 1) for ln in open(f"/proc/{pid}/status").read().splitlines() if ":" in ln)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_thirty_clients_bounded_memory(tmp_path):
    """30 clients at ~30 camera messages/s for a few seconds against `splatlab view`
    (a subprocess, rendering on CPU): 8 are served, 22 refused, the server stays up and
    its memory bounded. Prints the RSS figures (idle, peak, after they leave)."""
    import threading
    from pathlib import Path

    from test_viewer_browser import ViewProcess, _free_port, make_demo_run
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    from wsclient import ViserTestClient, look_at_wxyz

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's memory")
    run = tmp_path / "run"
    make_demo_run(run)
    view = ViewProcess(run, _free_port(), tmp_path / "view.log")
    try:
        # The first frame loads the renderer: idle is measured after one client saw one.
        warm = ViserTestClient("127.0.0.1", view.port)
        eye = np.array([3.0, 0.0, 1.5])
        warm.send_camera(look_at_wxyz(eye, [0, 0, 0.3]), eye, 0.8, 800, 600)
        assert warm.wait_frame(60.0) is not None
        warm.close()
        time.sleep(1.0)
        idle, idle_hwm = _rss_mb(view.proc.pid)

        accepted, refused, frames = [], [0], [0]
        lock = threading.Lock()

        def client(i: int) -> None:
            try:
                c = ViserTestClient("127.0.0.1", view.port)
            except InvalidStatus:
                with lock:
                    refused[0] += 1
                return
            with lock:
                accepted.append(i)
            t_end = time.monotonic() + 4.0
            k = 0
            try:
                while time.monotonic() < t_end:
                    a = 0.05 * k + i
                    e = np.array([3.0 * math.cos(a), 3.0 * math.sin(a), 1.5])
                    c.send_camera(look_at_wxyz(e, [0, 0, 0.3]), e, 0.8, 800, 600)
                    k += 1
                    got = c.pump(1.0 / 30)
                    with lock:
                        frames[0] += got
            except ConnectionClosed:
                pass
            finally:
                c.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(30)]
        peak = idle
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak = max(peak, _rss_mb(view.proc.pid)[0])
            time.sleep(0.1)
        for t in threads:
            t.join()
        time.sleep(3.0)
        after, hwm = _rss_mb(view.proc.pid)
        print(f"\n30 clients: {len(accepted)} served, {refused[0]} refused, {frames[0]} frames; server RSS idle "
              f"{idle:.0f} MB (peak {idle_hwm:.0f} MB before the clients), peak {max(peak, hwm):.0f} MB, after they left {after:.0f} MB")
        assert len(accepted) == 8 and refused[0] == 22
        assert view.proc.poll() is None
        assert hwm < idle + 1024, "memory must stay bounded"
        log = view.log.read_text()
        assert "Traceback" not in log and log.count("too many clients") == 22
        # Still serving.
        c = ViserTestClient("127.0.0.1", view.port)
        c.send_camera(look_at_wxyz(eye, [0, 0, 0.3]), eye, 0.8, 800, 600)
        assert c.wait_frame(60.0) is not None
        c.close()
    finally:
        view.stop()
