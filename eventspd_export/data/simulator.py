"""Built-in synthetic calibration source: an event-camera simulator with depth ground truth.

One cohesive thing of about 900 lines (tests/test_layout.py allows it): scene sampling, the
closed-form renderer and the event generator share the scene and camera types and are only
correct together; split, each part would need the others' internals.

Scenes are textured planes seen by a pinhole camera (focal length ``focal_fraction * W``,
principal point at the sensor centre, pixel centres at integer coordinates as in the model's
query convention): a background wall, usually a ground plane and side walls, and a few
textured cards and boxes in front, at different depths. The camera translates and rotates and
objects move independently, all at constant linear and angular velocity within a scene.

A planar face maps to the image by a homography, so each face is rendered in closed form per
pixel: ray-plane depth ``Z = (n·o) / (n·d)`` and the face's local coordinates are affine in
``Z`` and the pixel — a few array operations per face instead of ray tracing. Textures are
periodic log-albedo images (1/f noise plus painted patches with hard edges) sampled
bilinearly from a mip pyramid whose level follows the pixel's footprint on the surface
(including obliquity; one level per face, or per pixel where the footprint varies, as on the
ground), so receding and distant surfaces do not alias into flicker events.
Rectangle borders are anti-aliased by a coverage ramp one pixel wide. Compositing happens in
the log domain (a sensor sees log intensity), which saves a per-pixel logarithm per render.

Events: each window is split into sub-steps so that no image point moves more than
``pixels_per_substep`` pixels in one (bounded by ``max_substeps``). Between sub-steps the
per-pixel log intensity is taken as linear in time, so the k-th crossing of the pixel's
reference level by ±C (per-pixel thresholds with mismatch noise) gets its timestamp
interpolated inside the sub-step. The refractory period is applied exactly for this
piecewise-linear signal: crossings within one sub-step are evenly spaced, so the emitted ones
are every m-th crossing after the first allowed one (no per-event Python loop). All crossed
levels move the reference (as a pixel's reset does), emitted or not. Background activity and
shot noise (higher rate in dark pixels) are Poisson events. Timestamps are quantised to 1 µs
like a real sensor's.

Windows are random-access and deterministic given the seed: a window's scene depends on
``(seed, scene index)``, its noise and the pixels' starting reference levels on
``(seed, window index)``. The starting reference is drawn uniformly inside each pixel's
threshold band (the steady state of a pixel that has been firing), which is what makes a
window independent of the ones before it while its events still look like those of a
continuous stream. Depth ground truth is the camera z-depth rendered at the window's end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from eventspd_export.data.windows import DataError, EventWindow, WindowSource, window_boundaries_us

__all__ = ["SimulatorConfig", "Scene", "EventSimulator", "SyntheticSource", "SimulationInfo"]

_NEAR = 0.05  # metres: nothing closer to the camera is rendered


@dataclass(frozen=True)
class SimulatorConfig:
    """Sensor and scene parameters of the simulator (ranges are sampled per scene)."""

    # ---- sensor ----
    contrast_threshold: float = 0.25       # nominal C (log intensity), both polarities
    threshold_mismatch: float = 0.03       # per-pixel sigma of C, relative to C
    refractory_s: float = 100e-6
    background_rate_hz: float = 0.2        # per pixel, bright pixels
    shot_noise_gain: float = 4.0           # dark pixels: up to (1 + gain) x background rate
    focal_fraction: float = 0.8            # f = focal_fraction * width (pixels)
    # ---- scene ----
    texture_contrast: float = 1.0          # scales log-albedo variation of every texture
    motion_scale: float = 1.0              # scales every velocity; 0 = static scene
    camera_speed_mps: tuple[float, float] = (0.3, 2.5)
    camera_rotation_dps: tuple[float, float] = (2.0, 20.0)
    object_speed_mps: tuple[float, float] = (0.0, 1.5)
    object_rotation_dps: tuple[float, float] = (0.0, 40.0)
    moving_object_probability: float = 0.6
    num_objects: tuple[int, int] = (3, 6)
    box_probability: float = 0.35
    background_depth_m: tuple[float, float] = (12.0, 45.0)
    object_depth_m: tuple[float, float] = (1.5, 12.0)
    ground_probability: float = 0.7
    side_wall_probability: float = 0.35
    # ---- numerics ----
    pixels_per_substep: float = 2.0
    max_substeps: int = 6

    def __post_init__(self) -> None:
        if not self.contrast_threshold > 0:
            raise ValueError(f"contrast_threshold must be > 0, got {self.contrast_threshold}")
        if self.threshold_mismatch < 0 or self.refractory_s < 0:
            raise ValueError("threshold_mismatch and refractory_s must be >= 0")
        if self.background_rate_hz < 0 or self.shot_noise_gain < 0:
            raise ValueError("background_rate_hz and shot_noise_gain must be >= 0")
        if self.texture_contrast < 0 or self.motion_scale < 0:
            raise ValueError("texture_contrast and motion_scale must be >= 0")
        if self.pixels_per_substep <= 0 or self.max_substeps < 1:
            raise ValueError("pixels_per_substep must be > 0 and max_substeps >= 1")


# ---------------------------------------------------------------------------------------------
# geometry


def _rotvec(v: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation matrix of the rotation vector v (axis * angle, radians)."""
    v = np.asarray(v, dtype=np.float64)
    th = float(np.linalg.norm(v))
    if th < 1e-12:
        return np.eye(3)
    k = v / th
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(th) * kx + (1 - math.cos(th)) * (kx @ kx)


def _euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation from yaw (about y), pitch (about x), roll (about z), radians."""
    return _rotvec([0, yaw, 0]) @ _rotvec([pitch, 0, 0]) @ _rotvec([0, 0, roll])


@dataclass
class Body:
    """A rigid body (or the camera) at constant linear and angular velocity:
    ``X_world(t) = R(t) X_body + c(t)``, ``R(t) = exp([omega t]) R0``, ``c(t) = c0 + v t``."""

    center: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    omega: np.ndarray = field(default_factory=lambda: np.zeros(3))  # rad/s, world frame

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        rot = _rotvec(np.asarray(self.omega) * t) @ np.asarray(self.rotation)
        return rot, np.asarray(self.center, dtype=np.float64) + np.asarray(self.velocity) * t


@dataclass
class Face:
    """A textured planar rectangle on a body (``half_u = inf`` for an unbounded plane).

    ``origin``/``axis_u``/``axis_v`` are in the body frame; the face normal is
    ``axis_u x axis_v``. ``texel_m``: metres per texel at mip level 0; ``albedo``: brightness
    factor; ``one_sided`` faces (box faces, outward normal) are culled from behind."""

    body: int
    origin: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    half_u: float
    half_v: float
    texture: int
    texel_m: float
    albedo: float = 1.0
    tex_offset: tuple[float, float] = (0.0, 0.0)
    one_sided: bool = False

    def __post_init__(self) -> None:
        if not (self.albedo > 0 and self.texel_m > 0 and self.half_u > 0 and self.half_v > 0):
            raise ValueError(f"Face: albedo, texel_m and half sizes must be > 0, got "
                             f"{self.albedo}, {self.texel_m}, {self.half_u}, {self.half_v}")

    @property
    def infinite(self) -> bool:
        return not (math.isfinite(self.half_u) and math.isfinite(self.half_v))


class _Texture:
    """Periodic log-albedo texture with a mip pyramid for bilinear lookups.

    Level l is an (S_l+1) x (S_l+1) block inside an equally sized (S+1) x (S+1) slot, the
    extra row and column repeating the first (so the bilinear neighbours at the wrap need no
    modulo), which makes a level's offset and the row stride plain arithmetic. Each texel is
    stored together with its right neighbour as one 8-byte pair, so a bilinear lookup is two
    gathers (this row's pair, the next row's pair) instead of four."""

    def __init__(self, log_albedo: np.ndarray) -> None:
        s = log_albedo.shape[0]
        assert log_albedo.shape == (s, s) and s & (s - 1) == 0
        self.size = s
        self.levels = int(math.log2(s)) - 2  # down to 8x8
        self.stride = s + 1
        blocks = np.zeros((self.levels, s + 1, s + 1), np.float32)
        lvl = log_albedo.astype(np.float32)
        for i in range(self.levels):
            n = lvl.shape[0]
            blocks[i, :n, :n] = lvl
            blocks[i, n, :n] = lvl[0]
            blocks[i, :n, n] = lvl[:, 0]
            blocks[i, n, n] = lvl[0, 0]
            # average in the log domain: the sensor sees log intensity
            lvl = 0.25 * (lvl[0::2, 0::2] + lvl[1::2, 0::2] + lvl[0::2, 1::2] + lvl[1::2, 1::2])
        flat = blocks.reshape(-1)
        self.slot = (s + 1) * (s + 1)
        pairs = np.empty((flat.size, 2), np.float32)
        pairs[:, 0] = flat
        pairs[:-1, 1] = flat[1:]
        pairs[-1, 1] = flat[-1]
        self.pairs = pairs.view(np.complex64).reshape(-1)  # (texel, right neighbour)
        self.mean = float(log_albedo.mean())

    def sample(self, x: np.ndarray, y: np.ndarray, level, ws: "_Workspace") -> np.ndarray:
        """Bilinear lookup at continuous texel coordinates of ``level`` (an int, or an int32
        array of per-pixel levels) whose texel centres sit at integers. x and y are
        overwritten (they are the caller's scratch); the result is a workspace buffer."""
        shape = x.shape
        fl = ws.get("s_floor", shape)
        ix = ws.get("s_ix", shape, np.int32)
        iy = ws.get("s_iy", shape, np.int32)
        np.floor(x, out=fl)
        x -= fl  # fractional parts, in place
        ix[...] = fl
        np.floor(y, out=fl)
        y -= fl
        iy[...] = fl
        if isinstance(level, np.ndarray):
            mask = ws.get("s_mask", shape, np.int32)
            np.right_shift(self.size, level, out=mask)
            mask -= 1
        else:
            mask = (self.size >> level) - 1
        ix &= mask  # two's complement: negative coordinates wrap as well
        iy &= mask
        iy *= self.stride
        iy += ix
        if isinstance(level, np.ndarray):
            np.multiply(level, self.slot, out=ix)
            iy += ix
            pairs = self.pairs
        else:
            pairs = self.pairs[level * self.slot: (level + 1) * self.slot]
        top = ws.get("s_top", shape, np.complex64)
        bot = ws.get("s_bot", shape, np.complex64)
        # mode="clip" (the indices are in range anyway): take's default mode buffers `out`
        np.take(pairs, iy, out=top, mode="clip")
        iy += self.stride
        np.take(pairs, iy, out=bot, mode="clip")
        val = ws.get("s_val", shape)
        tmp = ws.get("s_tmp", shape)
        np.subtract(top.imag, top.real, out=val)
        val *= x
        val += top.real  # upper row, interpolated in x
        np.subtract(bot.imag, bot.real, out=tmp)
        tmp *= x
        tmp += bot.real  # lower row
        tmp -= val
        tmp *= y
        val += tmp
        return val


class _Workspace:
    """Named scratch arrays, allocated once and reused.

    A fresh multi-megabyte array costs page faults on first touch (measured ~10 ms per HD
    float32 frame on the VMs here, more than the arithmetic), and rendering runs some forty
    whole-array operations per face, so every per-pixel step works in place in these."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape, dtype=np.float32) -> np.ndarray:
        n = math.prod(shape)
        a = self._arrays.get(name)
        if a is None or a.dtype != dtype or a.size < n:
            a = np.empty(n, dtype)
            self._arrays[name] = a
        return a[:n].reshape(shape)


def _make_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A periodic log-albedo image (zero mean): 1/f noise for smooth shading variation plus
    overlapping painted rectangles (posters, windows, markings) whose hard edges are what
    produce most events in real scenes."""
    f = np.fft.fftfreq(size)
    r = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    r[0, 0] = 1.0
    beta = rng.uniform(1.5, 2.2)  # steep spectrum: smooth shading, little pixel-scale grain
    spec = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) * r ** -beta
    spec[0, 0] = 0
    noise = np.fft.ifft2(spec).real
    noise /= noise.std() + 1e-12
    img = rng.uniform(0.05, 0.18) * noise
    n_rect = int(rng.integers(8, 40))
    for _ in range(n_rect):
        w = int(np.exp(rng.uniform(np.log(size / 64), np.log(size / 3))))
        h = int(np.exp(rng.uniform(np.log(size / 64), np.log(size / 3))))
        x0, y0 = rng.integers(0, size, 2)
        rows = (y0 + np.arange(h)) % size
        cols = (x0 + np.arange(w)) % size
        img[np.ix_(rows, cols)] = rng.normal(0.0, 0.45) + 0.1 * noise[np.ix_(rows, cols)]
    img -= img.mean()
    return img.astype(np.float32)


@dataclass
class Scene:
    """Bodies, faces, textures and the camera. Body 0 is the camera (its frame: x right,
    y down, z forward); other bodies carry faces. Build with the ``add_*`` helpers or
    :meth:`EventSimulator.random_scene`."""

    width: int
    height: int
    focal: float
    camera: Body = field(default_factory=lambda: Body(np.zeros(3)))
    bodies: list[Body] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    textures: list[_Texture] = field(default_factory=list)
    illumination: float = 0.0  # log-intensity offset of the whole scene
    light_dir: np.ndarray = field(default_factory=lambda: np.array([0.3, -0.8, -0.5]))

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2.0

    def add_texture(self, log_albedo: np.ndarray) -> int:
        self.textures.append(_Texture(log_albedo))
        return len(self.textures) - 1

    def add_body(self, body: Body) -> int:
        self.bodies.append(body)
        return len(self.bodies) - 1

    def add_plane(self, body: Body, axis_u, axis_v, texture: int, texel_m: float,
                  albedo: float = 1.0, half_u: float = math.inf, half_v: float = math.inf,
                  tex_offset=(0.0, 0.0)) -> int:
        """A plane (or a card, with finite half sizes) through the body's centre."""
        b = self.add_body(body)
        self.faces.append(Face(b, np.zeros(3), _unit(axis_u), _unit(axis_v), half_u, half_v,
                               texture, texel_m, albedo, tuple(tex_offset)))
        return b

    def add_box(self, body: Body, half_sizes, texture: int, texel_m: float,
                albedos=(1.0,) * 6, tex_offset=(0.0, 0.0)) -> int:
        """A box of the given half sizes centred on the body: six one-sided faces."""
        b = self.add_body(body)
        hx, hy, hz = (float(h) for h in half_sizes)
        e = np.eye(3)
        # (normal axis, in-plane axes u, v with u x v = +normal, half sizes along u, v)
        specs = [(0, 1, 2, hy, hz), (1, 2, 0, hz, hx), (2, 0, 1, hx, hy)]
        half = (hx, hy, hz)
        k = 0
        for n_ax, u_ax, v_ax, hu, hv in specs:
            for sign in (1.0, -1.0):
                u = e[u_ax] * sign  # flipping u flips the normal to point outward on -n side
                self.faces.append(Face(b, e[n_ax] * half[n_ax] * sign, u, e[v_ax], hu, hv,
                                       texture, texel_m, albedos[k % len(albedos)],
                                       tuple(tex_offset), one_sided=True))
                k += 1
        return b


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@dataclass
class SimulationInfo:
    """What one simulated window did (for tests and progress output)."""

    substeps: int
    signal_events: int
    noise_events: int
    max_flow_px: float


# ---------------------------------------------------------------------------------------------
# rendering


def _ceil_log2(x: np.ndarray) -> np.ndarray:
    """ceil(log2(x)) for positive float32 x, from the exponent bits (no slow log2)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return ((x.view(np.int32) + 0x7FFFFF) >> 23) - 127


class _Renderer:
    """Renders a scene's log intensity and z-depth at a time; keeps the pixel ray grids.

    Per face: the ray-plane depth and the face's texel coordinates over the face's screen
    bounding box, coverage (one-pixel ramp at rectangle borders), a mip level (one per face
    when its texel footprint varies less than 2x over the box, else per pixel from a coarse
    grid), a bilinear texture lookup and a z-tested composite."""

    step = 16  # coarse grid (pixels) for bounding boxes and per-pixel mip levels

    def __init__(self, scene: Scene, ws: _Workspace | None = None) -> None:
        self.scene = scene
        self.ws = ws if ws is not None else _Workspace()
        w, h, f = scene.width, scene.height, scene.focal
        self.xs = ((np.arange(w) - scene.cx) / f).astype(np.float32)  # ray x/z per column
        self.ys = ((np.arange(h) - scene.cy) / f).astype(np.float32)  # ray y/z per row
        self.cols_c = np.arange(0, w, self.step)
        self.rows_c = np.arange(0, h, self.step)

    def _face_geometry(self, face: Face, pose, cam_rot: np.ndarray, cam_pos: np.ndarray):
        rot, pos = pose
        o = cam_rot.T @ (rot @ face.origin + pos - cam_pos)
        eu = cam_rot.T @ (rot @ face.axis_u)
        ev = cam_rot.T @ (rot @ face.axis_v)
        n = np.array([eu[1] * ev[2] - eu[2] * ev[1], eu[2] * ev[0] - eu[0] * ev[2],
                      eu[0] * ev[1] - eu[1] * ev[0]])  # eu x ev (np.cross is slow for 3-vectors)
        return o, eu, ev, n

    def _coarse(self, face, o, eu, ev, n, zbuf):
        """Face depth on the coarse grid where the face is visible (else NaN), for the
        bounding box and the mip levels of faces that are not simply in front."""
        xs, ys = self.xs[self.cols_c], self.ys[self.rows_c]
        den = n[0] * xs[None, :] + (n[1] * ys + n[2])[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = float(n @ o) / den
            ok = (z > _NEAR) & (z < zbuf[np.ix_(self.rows_c, self.cols_c)] * 1.05)
            if not face.infinite:
                a = z * (eu[0] * xs[None, :] + (eu[1] * ys + eu[2])[:, None]) - eu @ o
                b = z * (ev[0] * xs[None, :] + (ev[1] * ys + ev[2])[:, None]) - ev @ o
                ok &= (np.abs(a) < face.half_u * 1.5) & (np.abs(b) < face.half_v * 1.5)
        return np.where(ok, z, np.nan), np.abs(den)

    def _bbox(self, face, o, eu, ev, n, zbuf):
        """(r0, r1, c0, c1) of the face on screen and its coarse depth grid (None when the
        face is a rectangle wholly in front of the camera), or None when invisible."""
        sc = self.scene
        w, h = sc.width, sc.height
        if not face.infinite:
            corners = np.array([o + su * face.half_u * eu + sv * face.half_v * ev
                                for su in (-1, 1) for sv in (-1, 1)])
            if np.all(corners[:, 2] <= _NEAR):
                return None
            if np.all(corners[:, 2] > _NEAR):
                u = sc.focal * corners[:, 0] / corners[:, 2] + sc.cx
                v = sc.focal * corners[:, 1] / corners[:, 2] + sc.cy
                c0 = max(int(math.floor(u.min())) - 2, 0)
                r0 = max(int(math.floor(v.min())) - 2, 0)
                c1 = min(int(math.ceil(u.max())) + 3, w)
                r1 = min(int(math.ceil(v.max())) + 3, h)
                if c0 >= c1 or r0 >= r1:
                    return None
                return (r0, r1, c0, c1), None, corners[:, 2]
        # an unbounded plane, or a rectangle crossing the camera plane: visible where the
        # coarse grid says so (in front of the camera, inside the rectangle, in front of
        # what is drawn already), padded by one grid step
        zc, cosc = self._coarse(face, o, eu, ev, n, zbuf)
        ok = np.isfinite(zc)
        if not ok.any():
            return None
        rr = np.flatnonzero(ok.any(axis=1))
        cc = np.flatnonzero(ok.any(axis=0))
        s = self.step
        r0 = max(int(self.rows_c[rr[0]]) - s, 0)
        r1 = min(int(self.rows_c[rr[-1]]) + s + 1, h)
        c0 = max(int(self.cols_c[cc[0]]) - s, 0)
        c1 = min(int(self.cols_c[cc[-1]]) + s + 1, w)
        return (r0, r1, c0, c1), (zc, cosc), None

    def _levels(self, face, tex, box, coarse, corner_z, o, eu, ev, n, zbuf):
        """Mip level: an int for the whole face, or an int32 [rows, cols] map."""
        sc = self.scene
        k = 1.0 / (sc.focal * face.texel_m)  # texels per pixel per metre of depth
        if coarse is None:
            cos_inc = abs(float(n @ o)) / max(float(np.linalg.norm(o)), 1e-9)
            fp = np.asarray(corner_z) * k / max(cos_inc, 0.15)
            lv = _ceil_log2(np.float32([fp.min(), fp.max()]))
            if lv[1] - lv[0] <= 1:
                return int(np.clip(_ceil_log2(np.float32([math.sqrt(fp.min() * fp.max())]))[0],
                                   0, tex.levels - 1))
            # a steep rectangle in front of the camera: coarse grid after all
            zc, cosc = self._coarse(face, o, eu, ev, n, zbuf)
        else:
            zc, cosc = coarse
        fp = zc * k / np.maximum(cosc, 0.15)
        seen = np.isfinite(fp)
        lv = np.clip(_ceil_log2(np.where(seen, fp, 1.0)), 0, tex.levels - 1)
        if not seen.any():
            return 0
        vis = lv[seen]
        if vis.max() == vis.min():
            return int(vis[0])
        # cells the face does not cover (its border pixels may map there) get the coarsest
        # visible level: a little blur rather than aliasing
        lv[~seen] = vis.max()
        r0, r1, c0, c1 = box
        s = self.step
        # nearest coarse sample for every pixel of the box
        ri = np.minimum((np.arange(r0, r1) + s // 2) // s, lv.shape[0] - 1)
        ci = np.minimum((np.arange(c0, c1) + s // 2) // s, lv.shape[1] - 1)
        out = self.ws.get("level", (r1 - r0, c1 - c0), np.int32)
        np.take(np.ascontiguousarray(lv[ri], dtype=np.int32), ci, axis=1, out=out, mode="clip")
        return out

    def render(self, t: float, lbuf: np.ndarray, zbuf: np.ndarray,
               idbuf: np.ndarray | None = None) -> None:
        """Fill ``lbuf`` (log intensity), ``zbuf`` (z-depth, inf where nothing is visible) and
        optionally ``idbuf`` (body index, -1 where empty), all [H, W], at scene time t."""
        sc = self.scene
        ws = self.ws
        f32 = np.float32
        lbuf.fill(sc.illumination - 4.0)  # "black" where no face is visible
        zbuf.fill(np.inf)
        if idbuf is not None:
            idbuf.fill(-1)
        cam_rot, cam_pos = sc.camera.pose(t)
        light = _unit(sc.light_dir)
        poses = [b.pose(t) for b in sc.bodies]

        geoms = []
        for face in sc.faces:
            o, eu, ev, n = self._face_geometry(face, poses[face.body], cam_rot, cam_pos)
            num = float(n @ o)
            if abs(num) < 1e-9 or (face.one_sided and num >= 0):
                continue  # edge-on through the camera, or an outward face seen from behind
            # unbounded planes first (they are the far background), then far to near, so
            # coverage blending composites over what lies behind
            geoms.append((0 if face.infinite else 1, -float(o[2]), face, o, eu, ev, n))
        geoms.sort(key=lambda g: (g[0], g[1]))

        first = True
        for _, _, face, o, eu, ev, n in geoms:
            found = self._bbox(face, o, eu, ev, n, zbuf)
            if found is None:
                continue
            box, coarse, corner_z = found
            r0, r1, c0, c1 = box
            shape = (r1 - r0, c1 - c0)
            tex = sc.textures[face.texture]
            level = self._levels(face, tex, box, coarse, corner_z, o, eu, ev, n, zbuf)
            # texel units of the chosen level (per-pixel levels: level 0, scaled below)
            texel = face.texel_m * (2.0 ** level if isinstance(level, int) else 1.0)
            au, av = eu / texel, ev / texel
            xs = self.xs[c0:c1]
            ys = self.ys[r0:r1]
            z = ws.get("z", shape)
            tx = ws.get("tx", shape)
            ty = ws.get("ty", shape)
            front = ws.get("front", shape, bool)
            zreg = zbuf[r0:r1, c0:c1]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                # ray-plane depth z = (n.o) / (n.d), d = ((u - cx)/f, (v - cy)/f, 1)
                np.add((f32(n[0]) * xs)[None, :], (f32(n[1]) * ys + f32(n[2]))[:, None], out=z)
                np.divide(f32(n @ o), z, out=z)
                np.greater(z, _NEAR, out=front)
                if not first:
                    behind = ws.get("behind", shape, bool)
                    np.less(z, zreg, out=behind)
                    front &= behind
                np.clip(z, _NEAR, 1e4, out=z)  # finite everywhere (the face may be edge-on)
                # face coordinates in texels: affine in z and the ray
                np.add((f32(au[0]) * xs)[None, :], (f32(au[1]) * ys + f32(au[2]))[:, None],
                       out=tx)
                tx *= z
                tx -= f32(au @ o)
                np.add((f32(av[0]) * xs)[None, :], (f32(av[1]) * ys + f32(av[2]))[:, None],
                       out=ty)
                ty *= z
                ty -= f32(av @ o)
                if face.infinite:
                    cov = front
                else:
                    # distance to the rectangle's border in pixels -> one-pixel coverage ramp
                    cov = ws.get("cov", shape)
                    tmp = ws.get("tmp", shape)
                    np.abs(tx, out=cov)
                    np.subtract(f32(face.half_u / texel), cov, out=cov)
                    np.abs(ty, out=tmp)
                    np.subtract(f32(face.half_v / texel), tmp, out=tmp)
                    np.minimum(cov, tmp, out=cov)
                    np.divide(f32(sc.focal * texel), z, out=tmp)  # pixels per texel
                    cov *= tmp
                    cov += f32(0.5)
                    np.clip(cov, 0.0, 1.0, out=cov)
                    cov *= front
                if not cov.any():
                    continue
                offx, offy = face.tex_offset
                if isinstance(level, int):
                    sl = 2.0 ** -level
                    tx += f32(offx * sl - 0.5)  # texel centres at integers
                    ty += f32(offy * sl - 0.5)
                else:
                    si = ws.get("scale", shape, np.int32)
                    np.subtract(127, level, out=si)
                    np.left_shift(si, 23, out=si)
                    scale = si.view(np.float32)  # 2**-level, exactly, from the exponent bits
                    tx += f32(offx)
                    ty += f32(offy)
                    tx *= scale
                    ty *= scale
                    tx -= f32(0.5)
                    ty -= f32(0.5)
                val = tex.sample(tx, ty, level, ws)
            shade = 0.55 + 0.45 * abs(float(n @ light))  # Lambert + ambient, two-sided
            val += f32(sc.illumination + math.log(face.albedo * shade))
            lreg = lbuf[r0:r1, c0:c1]
            if face.infinite:
                np.copyto(lreg, val, where=front)
                np.copyto(zreg, z, where=front)
            else:
                val -= lreg
                val *= cov
                lreg += val
                np.greater_equal(cov, 0.5, out=front)
                np.copyto(zreg, z, where=front)
            if idbuf is not None:
                np.copyto(idbuf[r0:r1, c0:c1], face.body, where=front)
            first = False

    def max_flow(self, t0: float, t1: float, z0: np.ndarray, ids: np.ndarray) -> float:
        """Largest image motion (pixels) between t0 and t1 of the points seen at t0, on a
        grid of every 4th pixel: each point moves with the body it lies on."""
        sc = self.scene
        s = 4
        zz = z0[::s, ::s]
        bb = ids[::s, ::s]
        ok = np.isfinite(zz) & (bb >= 0)
        if not ok.any():
            return 0.0
        vv, uu = np.nonzero(ok)
        z = zz[ok].astype(np.float64)
        body = bb[ok]
        p_cam = np.stack([self.xs[uu * s] * z, self.ys[vv * s] * z, z], axis=1)
        r0, c0 = sc.camera.pose(t0)
        r1, c1 = sc.camera.pose(t1)
        world = p_cam @ r0.T + c0
        flow = 0.0
        for b in np.unique(body):
            sel = body == b
            br0, bc0 = sc.bodies[b].pose(t0)
            br1, bc1 = sc.bodies[b].pose(t1)
            moved = ((world[sel] - bc0) @ br0) @ br1.T + bc1  # body frame at t0 -> world at t1
            p1 = (moved - c1) @ r1
            z1 = np.maximum(p1[:, 2], _NEAR)
            du = sc.focal * (p1[:, 0] / z1 - p_cam[sel, 0] / z[sel])
            dv = sc.focal * (p1[:, 1] / z1 - p_cam[sel, 1] / z[sel])
            flow = max(flow, float(np.sqrt(du * du + dv * dv).max()))
        return flow


# ---------------------------------------------------------------------------------------------
# events


def _crossing_events(l0, l1, ref, last_t, cpos, cneg, tau0, tau1, refractory, ws):
    """Events of one sub-step (log intensity linear from l0 at tau0 to l1 at tau1).

    Updates ``ref`` and ``last_t`` in place (flat arrays); returns (pixel, t, polarity)."""
    d = ws.get("ev_d", l1.shape)
    on_m = ws.get("ev_on", l1.shape, bool)
    off_m = ws.get("ev_off", l1.shape, bool)
    np.subtract(l1, ref, out=d)
    np.greater_equal(d, cpos, out=on_m)
    np.add(d, cneg, out=d)  # d + C_off <= 0  <=>  l1 <= ref - C_off
    np.less_equal(d, 0.0, out=off_m)
    on_m |= off_m
    cand = np.flatnonzero(on_m)
    if cand.size == 0:
        return cand, np.zeros(0), np.zeros(0, np.int8)
    dc = l1[cand].astype(np.float64) - ref[cand]
    on = dc > 0
    c = np.where(on, cpos[cand], cneg[cand]).astype(np.float64)
    s = np.where(on, 1.0, -1.0)
    n = np.floor(np.abs(dc) / c).astype(np.int64)  # crossings of ref + s*k*c, k = 1..n
    la = l0[cand].astype(np.float64)
    dl = l1[cand].astype(np.float64) - la  # same sign as s: |l0 - ref| < c on entry
    dt = tau1 - tau0
    rc = ref[cand].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_first = tau0 + np.clip((rc + s * c - la) / dl, 0.0, 1.0) * dt
        spacing = np.abs(c / dl) * dt  # time between successive crossings
    spacing = np.where(np.isfinite(spacing), spacing, 0.0)
    t_first = np.where(np.isfinite(t_first), t_first, tau0)
    if refractory > 0:
        lt = last_t[cand]
        # first crossing at least `refractory` after the last event, then every m-th
        with np.errstate(divide="ignore", invalid="ignore"):
            k0 = np.where(t_first >= lt + refractory, 1,
                          np.ceil((lt + refractory - t_first) / np.maximum(spacing, 1e-15)) + 1)
            m = np.maximum(np.ceil(refractory / np.maximum(spacing, 1e-15)), 1)
        k0 = np.minimum(k0, n + 1).astype(np.int64)
        m = np.minimum(m, n + 1).astype(np.int64)
    else:
        k0 = np.ones_like(n)
        m = np.ones_like(n)
    count = np.where(k0 <= n, (n - k0) // m + 1, 0)
    # every crossed level moves the reference, emitted or not (the pixel resets to the
    # current level after its refractory period)
    ref[cand] = (rc + s * n * c).astype(np.float32)
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int8)
    rep = np.repeat(np.arange(cand.size), count)
    j = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    k = k0[rep] + j * m[rep]
    t = np.minimum(t_first[rep] + (k - 1) * spacing[rep], tau1)
    has = count > 0
    last_k = k0 + (count - 1) * m
    last_t[cand[has]] = np.minimum(t_first + (last_k - 1) * spacing, tau1)[has]
    return cand[rep], t, np.where(on[rep], 1, -1).astype(np.int8)


class EventSimulator:
    """Renders scenes and turns them into events for a sensor of ``width`` x ``height``.

    The sensor's per-pixel thresholds (with mismatch) are fixed by ``seed``, as they would be
    for one physical camera."""

    def __init__(self, width: int, height: int, config: SimulatorConfig | None = None,
                 seed: int = 0) -> None:
        if width < 8 or height < 8:
            raise ValueError(f"sensor {width}x{height} too small for the simulator (min 8x8)")
        self.width, self.height = int(width), int(height)
        self.config = config or SimulatorConfig()
        self.seed = int(seed)
        self.focal = self.config.focal_fraction * self.width
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x5E45]))
        c = self.config.contrast_threshold
        sig = self.config.threshold_mismatch
        n = self.width * self.height
        self.c_pos = np.maximum(c * (1 + sig * rng.standard_normal(n, np.float32)), 0.02 * c + 1e-3
                                ).astype(np.float32)
        self.c_neg = np.maximum(c * (1 + sig * rng.standard_normal(n, np.float32)), 0.02 * c + 1e-3
                                ).astype(np.float32)
        # textures are finer than the image needs on small sensors: keep them cheap there
        self.texture_size = 512 if self.width >= 512 else 256
        self._ws = _Workspace()

    # ---- scenes -----------------------------------------------------------------------------
    def empty_scene(self) -> Scene:
        return Scene(self.width, self.height, self.focal)

    def random_scene(self, seed) -> Scene:
        """A random scene: wall, optional ground and side walls, 3-6 cards/boxes, motion."""
        cfg = self.config
        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, 0x5CE, *np.atleast_1d(seed)]))
        sc = self.empty_scene()
        ms = cfg.motion_scale
        for _ in range(4):
            sc.add_texture(cfg.texture_contrast * _make_texture(rng, self.texture_size))
        sc.illumination = float(rng.uniform(np.log(0.25), 0.0))
        sc.light_dir = rng.normal(size=3) + np.array([0.0, -1.0, -1.0])
        tsz = self.texture_size

        def speed(rng_range):
            return rng.uniform(*rng_range)

        def random_dir(bias=np.zeros(3)):
            v = rng.normal(size=3) + bias
            return v / np.linalg.norm(v)

        # camera: mostly forward/sideways translation, a slow turn
        cam_v = random_dir(np.array([0.0, 0.0, 0.8])) * np.array([1.0, 0.3, 1.0])
        cam_v = cam_v / (np.linalg.norm(cam_v) + 1e-12) * speed(cfg.camera_speed_mps) * ms
        cam_w = (random_dir(np.array([0.0, 0.7, 0.0]))
                 * np.radians(speed(cfg.camera_rotation_dps)) * ms)
        sc.camera = Body(np.zeros(3), _euler(*rng.uniform(-0.06, 0.06, 3)), cam_v, cam_w)

        z_bg = float(np.exp(rng.uniform(*np.log(cfg.background_depth_m))))
        sc.add_plane(Body(np.array([0.0, 0.0, z_bg])), (1, 0, 0), (0, 1, 0), 0,
                     rng.uniform(4.0, 14.0) / tsz, albedo=rng.uniform(0.5, 1.0),
                     tex_offset=rng.uniform(0, tsz, 2))
        if rng.random() < cfg.ground_probability:
            height = rng.uniform(1.0, 2.0)
            sc.add_plane(Body(np.array([0.0, height, 0.0])), (1, 0, 0), (0, 0, 1), 1,
                         rng.uniform(2.0, 8.0) / tsz, albedo=rng.uniform(0.4, 0.9),
                         tex_offset=rng.uniform(0, tsz, 2))
        for side in (-1.0, 1.0):
            if rng.random() < cfg.side_wall_probability:
                sc.add_plane(Body(np.array([side * rng.uniform(2.5, 8.0), 0.0, 0.0])),
                             (0, 0, 1), (0, 1, 0), 2, rng.uniform(3.0, 10.0) / tsz,
                             albedo=rng.uniform(0.4, 1.0), tex_offset=rng.uniform(0, tsz, 2))

        n_obj = int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))
        lo, hi = cfg.object_depth_m
        hi = min(hi, 0.8 * z_bg)
        for _ in range(n_obj):
            z = float(np.exp(rng.uniform(np.log(lo), np.log(max(hi, lo * 1.01)))))
            u = rng.uniform(-0.1, 1.1) * self.width
            v = rng.uniform(-0.1, 1.1) * self.height
            center = np.array([(u - sc.cx) / self.focal * z, (v - sc.cy) / self.focal * z, z])
            vel = np.zeros(3)
            omg = np.zeros(3)
            if rng.random() < cfg.moving_object_probability:
                vel = random_dir() * speed(cfg.object_speed_mps) * ms
                omg = random_dir() * np.radians(speed(cfg.object_rotation_dps)) * ms
            tex = int(rng.integers(0, len(sc.textures)))
            texel = rng.uniform(0.4, 3.0) / tsz
            off = rng.uniform(0, tsz, 2)
            if rng.random() < cfg.box_probability:
                rot = _euler(rng.uniform(-1.0, 1.0), rng.uniform(-0.35, 0.35),
                             rng.uniform(-0.2, 0.2))
                half = z * rng.uniform(0.03, 0.12, 3)
                sc.add_box(Body(center, rot, vel, omg), half, tex, texel,
                           albedos=tuple(rng.uniform(0.3, 1.0, 6)), tex_offset=off)
            else:
                rot = _euler(rng.uniform(-0.9, 0.9), rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5))
                hu, hv = z * rng.uniform(0.04, 0.18, 2)
                sc.add_plane(Body(center, rot, vel, omg), (1, 0, 0), (0, 1, 0), tex, texel,
                             albedo=rng.uniform(0.3, 1.0), half_u=hu, half_v=hv, tex_offset=off)
        return sc

    # ---- simulation -------------------------------------------------------------------------
    def render(self, scene: Scene, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(log intensity, depth with NaN where nothing is visible) at scene time t."""
        lum = np.empty((self.height, self.width), np.float32)
        z = np.empty_like(lum)
        _Renderer(scene, self._ws).render(t, lum, z)
        z[np.isinf(z)] = np.nan
        return lum, z

    def simulate(self, scene: Scene, t0: float, duration: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                     np.ndarray, np.ndarray, SimulationInfo]:
        """Events of scene time [t0, t0 + duration) and the depth at t0 + duration.

        Returns x, y (int), t (float64 seconds from t0, sorted), p (±1 int8), depth
        (float32 [H, W], NaN where invalid) and a :class:`SimulationInfo`. Not re-entrant:
        one simulator's scratch buffers serve one call at a time."""
        cfg = self.config
        ws = self._ws
        rend = _Renderer(scene, ws)
        h, w = self.height, self.width
        l0 = ws.get("L0", (h, w))
        l1 = ws.get("L1", (h, w))
        z = ws.get("Z", (h, w))
        ids = ws.get("ids", (h, w), np.int16)
        rend.render(t0, l0, z, ids)
        flow = rend.max_flow(t0, t0 + duration, z, ids)
        n_sub = int(min(max(math.ceil(flow / cfg.pixels_per_substep), 1), cfg.max_substeps))

        # steady-state reference: the pixel's last reset left it within its threshold band,
        # ref = L - r with r uniform in (-C_off, C_on)
        npx = h * w
        u = ws.get("u", (npx,))
        rng.random(dtype=np.float32, out=u)
        u *= 2
        u -= 1
        r_on = ws.get("r_on", (npx,))
        r_off = ws.get("r_off", (npx,))
        np.multiply(u, self.c_pos, out=r_on)
        np.multiply(u, self.c_neg, out=r_off)
        neg = ws.get("neg", (npx,), bool)
        np.less(u, 0, out=neg)
        np.copyto(r_on, r_off, where=neg)
        ref = ws.get("ref", (npx,))
        np.subtract(l0.reshape(-1), r_on, out=ref)
        last_t = ws.get("last_t", (npx,), np.float64)
        last_t.fill(-np.inf)

        pix, ts, ps = [], [], []
        for k in range(1, n_sub + 1):
            tau0 = duration * (k - 1) / n_sub
            tau1 = duration * k / n_sub
            rend.render(t0 + tau1, l1, z)
            pk, tk, sk = _crossing_events(l0.reshape(-1), l1.reshape(-1), ref, last_t,
                                          self.c_pos, self.c_neg, tau0, tau1,
                                          cfg.refractory_s, ws)
            pix.append(pk)
            ts.append(tk)
            ps.append(sk)
            l0, l1 = l1, l0
        n_signal = int(sum(p.size for p in pix))

        # background activity + shot noise: Poisson per pixel, thinned from the maximum rate;
        # dark pixels (log intensity below log 0.2) get up to (1 + gain) x the base rate.
        # Noise events do not touch the pixels' reference levels.
        if cfg.background_rate_hz > 0:
            rmax = cfg.background_rate_hz * (1.0 + cfg.shot_noise_gain)
            n_try = rng.poisson(rmax * duration * npx)
            cand = rng.integers(0, npx, n_try)
            lum = l0.reshape(-1)[cand]  # end of the window (l0 holds the last render)
            dark = np.clip((math.log(0.2) - lum) / math.log(10.0), 0.0, 1.0)
            rate = cfg.background_rate_hz * (1.0 + cfg.shot_noise_gain * dark)
            keep = rng.random(n_try) * rmax < rate
            npix = cand[keep]
            pix.append(npix)
            ts.append(rng.random(npix.size) * duration)
            ps.append(np.where(rng.random(npix.size) < 0.5, 1, -1).astype(np.int8))
        pix_a = np.concatenate(pix)
        t_a = np.concatenate(ts)
        p_a = np.concatenate(ps)
        order = np.argsort(t_a, kind="stable")
        pix_a, t_a, p_a = pix_a[order], t_a[order], p_a[order]
        depth = z.copy()  # z holds the last render: the window's end
        depth[np.isinf(depth)] = np.nan
        info = SimulationInfo(n_sub, n_signal, int(pix_a.size) - n_signal, flow)
        return pix_a % w, pix_a // w, t_a, p_a, depth, info


class SyntheticSource(WindowSource):
    """The default calibration source: simulated windows with depth ground truth.

    ``windows_per_scene`` consecutive windows show one scene in continuous motion (so a
    recurrent model sees a coherent sequence); the next scene is a new random one."""

    name = "synthetic"

    def __init__(self, width: int, height: int, window_s: float, *, seed: int = 0,
                 num_windows: int = 256, windows_per_scene: int = 24,
                 sim: SimulatorConfig | None = None) -> None:
        super().__init__(width, height, window_s)
        if num_windows < 1 or windows_per_scene < 1:
            raise DataError(
                f"synthetic: num_windows and windows_per_scene must be >= 1, got "
                f"{num_windows} and {windows_per_scene}")
        self.seed = int(seed)
        self.num_windows = int(num_windows)
        self.windows_per_scene = int(windows_per_scene)
        try:
            self.simulator = EventSimulator(width, height, sim, seed=self.seed)
        except ValueError as exc:
            raise DataError(f"synthetic: {exc}") from None
        self._bounds = window_boundaries_us(0, self.window_s, self.num_windows)
        self._scene_cache: tuple[int, Scene] | None = None
        self.last_info: SimulationInfo | None = None

    @property
    def has_depth(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.num_windows

    def describe(self) -> str:
        return (super().describe()
                + f" (seed {self.seed}, {self.windows_per_scene} windows per scene)")

    def scene(self, scene_index: int) -> Scene:
        if self._scene_cache is None or self._scene_cache[0] != scene_index:
            self._scene_cache = (scene_index, self.simulator.random_scene(scene_index))
        return self._scene_cache[1]

    def window(self, index: int) -> EventWindow:
        i = self._check_index(index)
        s = i // self.windows_per_scene
        start, end = int(self._bounds[i]), int(self._bounds[i + 1])
        scene_start = int(self._bounds[s * self.windows_per_scene])
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xE7, i]))
        x, y, t, p, depth, info = self.simulator.simulate(
            self.scene(s), (start - scene_start) * 1e-6, (end - start) * 1e-6, rng)
        self.last_info = info
        dur = end - start
        # quantise to the microsecond like a sensor; [0, dur - 1] keeps t < 1 (end exclusive)
        t_us = np.minimum(np.floor(t * 1e6), dur - 1)
        events = np.empty((x.size, 4), np.float32)
        events[:, 0] = x
        events[:, 1] = y
        events[:, 2] = t_us / dur
        events[:, 3] = p
        return EventWindow(events, depth, start, dur, self.name, i, depth_t_us=end)

