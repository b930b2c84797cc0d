"""Who may drive the viewer, and what a client may send it.

viser accepts any websocket that reaches its port, from any web page the user has open
(browsers let every site open a websocket to 127.0.0.1), and hands every decoded message
to its handlers. This module puts three checks in front of it:

- `HandshakePolicy`: the websocket handshake's Host must name this server (a loopback
  name for a loopback bind: this also defeats DNS rebinding, whose Host is the attacker's
  domain) and its Origin, when a browser sends one, must be the page's own origin on that
  host and port, or one given with `--allow-origin`; at most `max_clients` websockets.
- `MessageGuard`: per connection, drops what a stock viser client never sends (text
  frames, undecodable or oversized msgpack, message types the viewer does not handle,
  GUI updates of anything but a value, non-finite or mistyped numbers), one log line per
  kind, and merges camera messages beyond `CAMERA_HZ` (the newest wins).
- `start_guarded_viser`: the one place that knows how viser 1.1 starts its websocket
  server; `tests/test_viewer_security.py` fails loudly if viser changes that.

The GUI value ranges are enforced separately, by `clamp_render_settings` and `clamp_crop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

log = logging.getLogger("splatlab.viewer")

MAX_CLIENTS = 8
CAMERA_HZ = 30.0  # camera messages per client per second passed to viser; the rest merged
MAX_MESSAGE_BYTES = 1 << 20  # a browser's camera or GUI message is < 1 KB
MAX_IMAGE_SIDE = 16384

# What a stock viser client sends to a server that uses cameras, GUI inputs and
# clickable scene nodes (no pointer or button-hold callbacks: the client sends those
# only when asked). Everything else is dropped: notably ShareUrlRequest, which would
# make the server open a public tunnel through share.viser.studio.
ALLOWED_MESSAGES = frozenset({"ViewerCameraMessage", "GuiUpdateMessage", "SceneNodeClickMessage"})

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


# ---- handshake ------------------------------------------------------------------------
def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


def _is_loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def split_host(hostport: str) -> Optional[tuple[str, Optional[int]]]:
    """'Name:port' / '[::1]:port' / 'name' -> (lowercase name, port or None); None if malformed.
    IPv6 names keep their brackets."""
    hostport = hostport.strip().lower()
    if not hostport or any(c.isspace() for c in hostport) or "/" in hostport or "@" in hostport:
        return None
    try:
        parts = urlsplit("//" + hostport)
        port = parts.port
    except ValueError:
        return None
    name = parts.hostname
    if not name:
        return None
    if ":" in name:
        name = f"[{name}]"
    return name.rstrip("."), port


def normalize_origin(origin: str) -> Optional[str]:
    """'HTTP://Localhost:8080/' -> 'http://localhost:8080'; None when it is not an
    http(s) origin with a host (`null`, `file://`, garbage)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    name = parts.hostname.lower().rstrip(".")
    if ":" in name:
        name = f"[{name}]"
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    return f"{parts.scheme.lower()}://{name}:{port}"


class HandshakePolicy:
    """Decides whether a websocket handshake may proceed (see module doc).

    `port` is the served port; until it is known every handshake is refused."""

    def __init__(self, host: str, allow_origins: Iterable[str] = (), max_clients: int = MAX_CLIENTS,
                 port: Optional[int] = None):
        self.port = port
        self.max_clients = int(max_clients)
        self.loopback_bind = _is_loopback_name(host.strip().lower())
        self.allowed_origins: set[str] = set()
        for o in allow_origins:
            n = normalize_origin(o)
            if n is None:
                raise ValueError(f"--allow-origin {o!r} is not an origin like http://host:port")
            self.allowed_origins.add(n)
        names = set(LOOPBACK_NAMES)
        bind = host.strip().lower()
        if bind and bind not in ("0.0.0.0", "::", "[::]"):
            names.add(f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind)
        if not self.loopback_bind:
            # Reached over the network: the machine's own names. IP literals are allowed
            # below (DNS rebinding needs a domain name, so an IP Host is never one).
            with contextlib.suppress(OSError):
                names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
        self._names = names

    def _host_ok(self, name: str, port: Optional[int]) -> bool:
        if port != self.port:
            return False
        if self.loopback_bind:
            return name in self._names or (_is_loopback_name(name) and _is_ip(name))
        return name in self._names or _is_ip(name)

    def refusal(self, origin: Optional[str], host: Optional[str]) -> Optional[str]:
        """None when allowed, else the reason (for the log line)."""
        if self.port is None:
            return "server not ready"
        if host is None:
            return "no Host header"
        hp = split_host(host)
        if hp is None:
            return f"malformed Host {host[:80]!r}"
        origin_n = None if origin is None else normalize_origin(origin)
        if origin is not None and origin_n is None:
            return f"Origin {origin[:80]!r} is not allowed"
        if origin_n is not None and origin_n in self.allowed_origins:
            # An allowed origin (a tunnel, a proxy) may use its own Host.
            return None
        if not self._host_ok(*hp):
            return f"Host {host[:80]!r} does not name this server"
        if origin_n is not None:
            name, port = hp
            if origin_n != f"http://{name}:{port}":
                return f"Origin {origin[:80]!r} is not this page's"
        # No Origin: not a browser (browsers always send one on websockets).
        return None


class HandshakeGuard:
    """websockets `process_request` hook: refuses foreign or excess websockets with an
    HTTP error before the upgrade, and installs a `MessageGuard` on accepted ones."""

    def __init__(self, policy: HandshakePolicy, gui_value_check: Optional[Callable[[str, Any], Optional[str]]] = None):
        self.policy = policy
        self.gui_value_check = gui_value_check
        self._lock = threading.Lock()
        self._live: set = set()
        self.refused = 0
        self.guards: list["MessageGuard"] = []  # the last few, for tests

    def live_count(self) -> int:
        from websockets.protocol import State

        with self._lock:
            self._live = {c for c in self._live if c.state is not State.CLOSED}
            return len(self._live)

    def wrap(self, inner):
        """process_request that runs our checks, then viser's own (`inner`, which serves files)."""

        def process_request(connection, request):
            headers = request.headers
            if ",".join(headers.get_all("Upgrade")).lower() != "websocket":
                return inner(connection, request) if inner is not None else None
            peer = _peer(connection)
            origins, hosts = headers.get_all("Origin"), headers.get_all("Host")
            if len(origins) > 1 or len(hosts) > 1:
                reason = "repeated Origin or Host header"
            else:
                reason = self.policy.refusal(origins[0] if origins else None, hosts[0] if hosts else None)
            if reason is None and self.live_count() >= self.policy.max_clients:
                reason = f"too many clients (at most {self.policy.max_clients})"
                status = http.HTTPStatus.SERVICE_UNAVAILABLE
            else:
                status = http.HTTPStatus.FORBIDDEN
            if reason is not None:
                self.refused += 1
                log.warning("refused a viewer connection from %s: %s", peer, reason)
                return connection.respond(status, f"{reason}\n")
            with self._lock:
                self._live.add(connection)
            guard = MessageGuard(peer, self.gui_value_check)
            guard.install(connection)
            self.guards = self.guards[-63:] + [guard]
            return inner(connection, request) if inner is not None else None

        return process_request


def _peer(connection) -> str:
    try:
        addr = connection.remote_address
        return f"{addr[0]}:{addr[1]}"
    except Exception:  # noqa: BLE001 - only for the log line
        return "?"


# ---- messages -------------------------------------------------------------------------
def _finite_numbers(v, n: int) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == n
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_camera(m: dict) -> Optional[str]:
    """Reason a ViewerCameraMessage dict is degenerate, or None."""
    if not _finite_numbers(m.get("wxyz"), 4) or not _finite_numbers(m.get("position"), 3):
        return "degenerate camera (pose not 4+3 finite numbers)"
    if sum(x * x for x in m["wxyz"]) < 1e-12:
        return "degenerate camera (zero quaternion)"
    fov = m.get("fov")
    if not _finite(fov) or not 1e-4 < fov < math.pi - 1e-4:
        return "degenerate camera (fov outside (0, pi))"
    for k in ("image_width", "image_height"):
        v = m.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_IMAGE_SIDE:
            return f"degenerate camera ({k} not in 1..{MAX_IMAGE_SIDE})"
    if not (_finite(m.get("near")) and _finite(m.get("far"))):
        return "degenerate camera (near/far not finite)"
    if not _finite_numbers(m.get("look_at"), 3) or not _finite_numbers(m.get("up_direction"), 3):
        return "degenerate camera (look_at/up not 3 finite numbers)"
    return None


def _check_value(v, depth: int = 0) -> bool:
    if isinstance(v, bool) or v is None:
        return True
    if isinstance(v, (int, float)):
        return math.isfinite(v)
    if isinstance(v, str):
        return len(v) <= 1024
    if isinstance(v, (list, tuple)) and depth == 0:
        return len(v) <= 16 and all(_check_value(x, 1) for x in v)
    return False


def check_message(m, gui_value_check=None) -> Optional[str]:
    """Reason to drop a decoded client message (a msgpack value), or None to pass it on."""
    if not isinstance(m, dict):
        return f"not a message ({type(m).__name__})"
    t = m.get("type")
    if not isinstance(t, str):
        return "message without a type"
    if t not in ALLOWED_MESSAGES:
        return f"unexpected message type {t[:60]!r}"
    if t == "ViewerCameraMessage":
        return check_camera(m)
    if t == "GuiUpdateMessage":
        u = m.get("updates")
        if not isinstance(m.get("uuid"), str) or not isinstance(u, dict) or set(u) != {"value"}:
            return "GUI update other than one value"
        if not _check_value(u["value"]):
            return "GUI update with a bad value"
        if gui_value_check is not None:
            return gui_value_check(m["uuid"], u["value"])
        return None
    if t == "SceneNodeClickMessage":
        idx = m.get("instance_index")
        if not isinstance(m.get("name"), str) or not _finite_numbers(m.get("ray_origin"), 3) \
                or not _finite_numbers(m.get("ray_direction"), 3) or not _finite_numbers(m.get("screen_pos"), 2) \
                or not (idx is None or (isinstance(idx, int) and not isinstance(idx, bool))) \
                or not (m.get("modifier") is None or isinstance(m.get("modifier"), str)):
            return "malformed scene click"
    return None


@dataclass
class RateLimiter:
    """Token bucket: `rate` per second, bursts of `burst`."""

    rate: float
    burst: float
    tokens: float = 0.0
    t: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.tokens = self.burst

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def take(self, now: Optional[float] = None) -> bool:
        self._refill(time.monotonic() if now is None else now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self, now: Optional[float] = None) -> float:
        self._refill(time.monotonic() if now is None else now)
        return max(0.0, (1.0 - self.tokens) / self.rate)


class MessageGuard:
    """Filters one connection's incoming messages before viser decodes them (see module doc).

    Installed by replacing the connection object's `recv` (the coroutine viser's consumer
    awaits) with `recv` below; cancelling websockets' recv is safe, so a merged camera can
    wait for its token without losing the next message."""

    def __init__(self, peer: str, gui_value_check=None):
        self.peer = peer
        self.gui_value_check = gui_value_check
        self.camera_rate = RateLimiter(CAMERA_HZ, burst=4.0)
        self.dropped: dict[str, int] = {}
        self.merged = 0
        self.passed = 0
        self._pending: Optional[bytes] = None

    def install(self, connection) -> None:
        with contextlib.suppress(AttributeError):
            connection.protocol.max_message_size = MAX_MESSAGE_BYTES
        self._recv = connection.recv
        connection.recv = self.recv

    def _drop(self, reason: str) -> None:
        kind = reason.split(" (")[0]
        n = self.dropped.get(kind, 0)
        self.dropped[kind] = n + 1
        if n == 0:  # one line per kind per client; a flood of one kind stays one line
            log.warning("client %s: dropped a message: %s", self.peer, reason)

    def classify(self, raw) -> tuple[Optional[str], bool]:
        """(reason to drop or None, is a camera message)."""
        import msgspec.msgpack

        if not isinstance(raw, (bytes, bytearray, memoryview)):
            return "text frame", False
        try:
            m = msgspec.msgpack.decode(raw)
        except (msgspec.DecodeError, ValueError, RecursionError) as e:
            return f"undecodable message ({type(e).__name__})", False
        reason = check_message(m, self.gui_value_check)
        if reason is None:
            # Field presence and shapes as viser itself will decode them.
            try:
                _viser_decode(bytes(raw))
            except Exception as e:  # noqa: BLE001 - anything viser would choke on
                reason = f"malformed {m.get('type')} ({type(e).__name__})"
        return reason, isinstance(m, dict) and m.get("type") == "ViewerCameraMessage"

    async def recv(self, decode=None):
        from websockets.exceptions import ConnectionClosed

        try:
            return await self._filtered_recv(decode)
        except ConnectionClosed as e:
            if e.sent is not None and e.sent.code == 1009:  # websockets refused an oversized frame
                log.warning("client %s: closed: a message over %d bytes", self.peer, MAX_MESSAGE_BYTES)
            raise

    async def _filtered_recv(self, decode=None):
        while True:
            if self._pending is not None:
                wait = self.camera_rate.wait_s()
                if wait <= 0.0 and self.camera_rate.take():
                    raw, self._pending = self._pending, None
                    self.passed += 1
                    return raw
                try:
                    raw = await asyncio.wait_for(self._recv(decode), timeout=max(wait, 1e-3))
                except asyncio.TimeoutError:
                    continue
            else:
                raw = await self._recv(decode)
            reason, is_camera = self.classify(raw)
            if reason is not None:
                self._drop(reason)
                continue
            if is_camera:
                if self._pending is not None or not self.camera_rate.take():
                    if self._pending is not None:
                        self.merged += 1
                    self._pending = raw  # the newest camera wins
                    continue
            self.passed += 1
            return raw


def _viser_decode(raw: bytes):
    from viser.infra._messages import Message

    import viser._messages  # noqa: F401 - registers the message classes

    return Message.deserialize(raw)


# ---- GUI values -----------------------------------------------------------------------
RES_MIN, RES_MAX = 128, 4096
NEAR_MIN, FAR_MAX = 1e-4, 1e6


def clamp_render_settings(output: Any, max_res: Any, sh_degree: Any, background: Any, near: Any, far: Any,
                          *, outputs: tuple[str, ...], sh_max: int, defaults) -> dict:
    """GUI values -> safe RenderSettings fields, whatever the client sent: resolution in
    [RES_MIN, RES_MAX], SH degree in [0, sh_max], background in [0, 1], and finite
    0 < near < far <= FAR_MAX. Anything unusable falls back to `defaults`' value."""

    def num(v, fallback):
        try:
            v = float(v)
        except (TypeError, ValueError):
            return float(fallback)
        return v if math.isfinite(v) else float(fallback)

    out = output if output in outputs else defaults.output
    res = int(min(max(round(num(max_res, defaults.max_res)), RES_MIN), RES_MAX))
    sh = int(min(max(round(num(sh_degree, defaults.sh_degree)), 0), max(sh_max, 0)))
    try:
        bg = tuple(min(max(num(c, 0.0) / 255.0, 0.0), 1.0) for c in background)
    except TypeError:
        bg = ()
    if len(bg) != 3:
        bg = tuple(defaults.background)
    near_v = min(max(num(near, defaults.near), NEAR_MIN), FAR_MAX / 10)
    far_v = min(max(num(far, defaults.far), near_v * 1.001 + 1e-6), FAR_MAX)
    return dict(output=out, max_res=res, sh_degree=sh, background=bg, near=near_v, far=far_v)


CROP_LIMIT = 1e6


def clamp_crop(lo: Any, hi: Any, fallback_lo, fallback_hi) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Two client 3-vectors -> an ordered, finite box within +-CROP_LIMIT."""

    def vec(v, fb):
        fb = [float(x) for x in fb]
        try:
            a = [float(x) for x in v]
        except (TypeError, ValueError):
            return fb
        if len(a) != 3:
            return fb
        return [min(max(x, -CROP_LIMIT), CROP_LIMIT) if math.isfinite(x) else f for x, f in zip(a, fb)]

    a, b = vec(lo, fallback_lo), vec(hi, fallback_hi)
    return tuple(min(x, y) for x, y in zip(a, b)), tuple(max(x, y) for x, y in zip(a, b))


# ---- viser ----------------------------------------------------------------------------
_PATCH_LOCK = threading.Lock()


class ViserChanged(RuntimeError):
    pass


def start_guarded_viser(host: str, port: int, guard: HandshakeGuard, verbose: bool = False):
    """`viser.ViserServer(host, port)` with `guard` in front of its websocket handshakes.

    viser 1.1 builds its server inside a background thread with
    `websockets.asyncio.server.serve(..., process_request=<its file server>)` and offers
    no hook, so for the length of the constructor that one name is wrapped to chain our
    check in front of viser's. If viser stops calling it, this raises `ViserChanged`
    rather than serve unguarded."""
    import viser
    import websockets.asyncio.server as ws_server
    from viser.infra import _infra

    if getattr(getattr(getattr(_infra, "websockets", None), "asyncio", None), "server", None) is not ws_server:
        raise ViserChanged(f"viser {viser.__version__} no longer serves through websockets.asyncio.server; "
                           "the viewer's Origin check cannot be installed")
    original = ws_server.serve
    bound: list[int] = []

    def serve(handler, host_, port_, *, process_request=None, **kw):
        if "WebsockServer" not in getattr(handler, "__qualname__", ""):
            # Some other websockets server started meanwhile: not ours to guard.
            return original(handler, host_, port_, process_request=process_request, **kw)
        bound.append(port_)
        return original(handler, host_, port_, process_request=guard.wrap(process_request), **kw)

    with _PATCH_LOCK:
        ws_server.serve = serve
        try:
            server = viser.ViserServer(host=host, port=port, verbose=verbose)
        finally:
            ws_server.serve = original
    if not bound:
        server.stop()
        raise ViserChanged(f"viser {viser.__version__} did not start its server through "
                           "websockets.asyncio.server.serve; the viewer's Origin check cannot be installed")
    guard.policy.port = int(server.get_port())
    # The share button asks the server to open a public tunnel (share.viser.studio):
    # never from a viewer that serves only its user.
    server.gui.configure_theme(show_share_button=False)
    server.request_share_url = _refuse_share_url
    return server


def _refuse_share_url(verbose: bool = True) -> None:
    log.warning("a client asked for a public share URL; refused")
    return None


def gui_uuid(handle) -> str:
    """The id viser's GuiUpdateMessage names a GUI input by (viser keeps it private)."""
    return handle._impl.uuid


__all__ = [
    "HandshakePolicy", "HandshakeGuard", "MessageGuard", "RateLimiter", "check_message", "check_camera",
    "clamp_render_settings", "clamp_crop", "start_guarded_viser", "gui_uuid", "normalize_origin", "split_host",
    "MAX_CLIENTS", "CAMERA_HZ", "ALLOWED_MESSAGES", "ViserChanged",
]
