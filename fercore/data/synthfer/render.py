"""SynthFER's renderer: a face drawn from identity, pose, scene and AU intensities `[ours]`.

Each AU moves the facial parts the way FACS describes (brows, lids, cheeks, nose, lips, jaw).
Parts are drawn as anti-aliased signed-distance shapes in a canonical face frame (x right,
y down, both in [-1, 1]), each only inside its own window, then one affine warp applies the
in-plane pose; the 5 landmarks go through the same affine, so they are exact.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .facs import AU_INDEX

SKIN = torch.tensor([[0.97, 0.82, 0.71], [0.89, 0.69, 0.55], [0.78, 0.57, 0.42],
                     [0.58, 0.39, 0.27], [0.38, 0.25, 0.18]])
HAIR = torch.tensor([[0.07, 0.06, 0.06], [0.22, 0.14, 0.09], [0.42, 0.28, 0.17],
                     [0.78, 0.64, 0.40], [0.55, 0.24, 0.12], [0.62, 0.61, 0.60]])
IRIS = torch.tensor([[0.30, 0.18, 0.10], [0.25, 0.45, 0.65], [0.30, 0.45, 0.28], [0.12, 0.09, 0.07]])


# The identity-defining facial geometry among sample_appearance's keys (SynthFERConfig.identities):
# face shape, eye placement and shape, brows, nose, mouth and lips. Everything else (skin, hair colour
# and style, hairline, iris, gaze, lip tint, glasses, pose, background, lighting, occluder) is
# appearance or scene, drawn per render [ours].
GEOMETRY = ("face_w", "face_h", "chin", "eye_sep", "eye_y", "eye_w", "eye_open", "brow_gap", "brow_t",
            "nose_y", "nose_w", "mouth_y", "mouth_w", "lip_u", "lip_l")


def _u(gen: torch.Generator, n: int, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _pick(gen: torch.Generator, table: Tensor, n: int) -> Tensor:
    """Random convex mix of two neighbouring rows of a colour table."""
    i = torch.randint(0, len(table) - 1, (n,), generator=gen)
    t = torch.rand(n, 1, generator=gen)
    return table[i] * (1 - t) + table[i + 1] * t


def _muted(gen: torch.Generator, n: int) -> Tensor:
    """Background colours: a grey level mixed with a random hue, like indoor/outdoor photo backdrops."""
    grey = _u(gen, n, 0.15, 0.85)[:, None]
    return (grey + 0.35 * (torch.rand(n, 3, generator=gen) - 0.5)).clamp(0.05, 0.95)


def sample_appearance(n: int, gen: torch.Generator, p_glasses: float = 0.12,
                      p_occluder: float = 0.06) -> dict[str, Tensor]:
    """Identity, pose and scene parameters for `n` faces (all tensors with leading dim n)."""
    a = {
        "face_w": _u(gen, n, 0.60, 0.70), "face_h": _u(gen, n, 0.80, 0.88),
        "chin": _u(gen, n, 0.95, 1.06), "skin": _pick(gen, SKIN, n),
        "hair": HAIR[torch.randint(0, len(HAIR), (n,), generator=gen)]
        * _u(gen, n, 0.85, 1.1)[:, None],
        "hair_style": torch.randint(0, 3, (n,), generator=gen).float(),  # 0 short, 1 long, 2 high
        "hairline": _u(gen, n, -0.62, -0.50),
        "eye_sep": _u(gen, n, 0.27, 0.32), "eye_y": _u(gen, n, -0.14, -0.09),
        "eye_w": _u(gen, n, 0.12, 0.145), "eye_open": _u(gen, n, 0.85, 1.15),
        "iris": IRIS[torch.randint(0, len(IRIS), (n,), generator=gen)],
        "gaze": _u(gen, n, -0.02, 0.02),
        "brow_gap": _u(gen, n, 0.13, 0.17), "brow_t": _u(gen, n, 0.022, 0.040),
        "nose_y": _u(gen, n, 0.14, 0.19), "nose_w": _u(gen, n, 0.065, 0.09),
        "mouth_y": _u(gen, n, 0.42, 0.47), "mouth_w": _u(gen, n, 0.17, 0.21),
        "lip_u": _u(gen, n, 0.022, 0.034), "lip_l": _u(gen, n, 0.030, 0.045),
        "lip_tint": _u(gen, n, 0.0, 1.0),
        "glasses": (torch.rand(n, generator=gen) < p_glasses).float(),
        "glasses_rgb": _pick(gen, torch.tensor([[0.05, 0.05, 0.05], [0.35, 0.2, 0.1],
                                                [0.6, 0.6, 0.65]]), n),
        "rot": (torch.randn(n, generator=gen) * 7.0).clamp(-18, 18) * math.pi / 180,
        "scale": _u(gen, n, 1.12, 1.28), "tx": _u(gen, n, -0.05, 0.05), "ty": _u(gen, n, -0.02, 0.1),
        "bg1": _muted(gen, n), "bg2": _muted(gen, n),
        "light_dir": _u(gen, n, 0, 2 * math.pi), "light": _u(gen, n, 0.0, 0.3),
        "bright": _u(gen, n, 0.8, 1.1), "sensor": _u(gen, n, 0.005, 0.03),
        "occluder": (torch.rand(n, generator=gen) < p_occluder).float(),
        "occ_x": _u(gen, n, -0.6, 0.6), "occ_y": _u(gen, n, -0.2, 0.7),
        "occ_r": _u(gen, n, 0.18, 0.32), "occ_rgb": torch.rand(n, 3, generator=gen),
    }
    return a


class _Canvas:
    """RGBA canvas in the canonical face frame; parts paint themselves into windows of it."""

    def __init__(self, b: int, size: int) -> None:
        self.rgb = torch.zeros(b, 3, size, size)
        self.alpha = torch.zeros(b, 1, size, size)
        self.size = size
        self.px = 2.0 / size
        self.c = -1 + (torch.arange(size) + 0.5) * self.px  # pixel centres

    def window(self, x0: float, x1: float, y0: float, y1: float):
        def lo(v):
            return max(0, int((v + 1) / self.px))

        def hi(v):
            return min(self.size, int(math.ceil((v + 1) / self.px)) + 1)

        sx, sy = slice(lo(x0), hi(x1)), slice(lo(y0), hi(y1))
        return (sy, sx), self.c[sx].view(1, 1, -1), self.c[sy].view(1, -1, 1)

    def cover(self, d: Tensor) -> Tensor:
        """Anti-aliased coverage of a shape from its signed distance (negative inside)."""
        return (0.5 - d / self.px).clamp(0, 1)

    def paint(self, win, cov: Tensor, rgb: Tensor) -> None:
        sy, sx = win
        c = cov.unsqueeze(1)
        self.rgb[:, :, sy, sx] = self.rgb[:, :, sy, sx] * (1 - c) + rgb.view(-1, 3, 1, 1) * c
        self.alpha[:, :, sy, sx] = self.alpha[:, :, sy, sx] * (1 - c) + c

    def shade(self, win, cov: Tensor, amount: Tensor | float) -> None:
        """Darken (amount > 0) or lighten (amount < 0) painted pixels by `amount * cov`."""
        sy, sx = win
        if isinstance(amount, Tensor):
            amount = amount.view(-1, 1, 1)
        self.rgb[:, :, sy, sx] = self.rgb[:, :, sy, sx] * (1 - amount * cov).unsqueeze(1)


def _ellipse(x, y, cx, cy, rx, ry) -> Tensor:
    k = torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return (k - 1) * torch.minimum(torch.as_tensor(rx), torch.as_tensor(ry))


def _segment(x, y, ax, ay, bx, by, r) -> Tensor:
    """Signed distance to a capsule from (ax, ay) to (bx, by) of radius r."""
    pax, pay, bax, bay = x - ax, y - ay, bx - ax, by - ay
    h = ((pax * bax + pay * bay) / (bax * bax + bay * bay + 1e-9)).clamp(0, 1)
    return torch.sqrt((pax - bax * h) ** 2 + (pay - bay * h) ** 2) - r


def _polyline(x, y, pts, r) -> Tensor:
    d = _segment(x, y, *pts[0], *pts[1], r)
    for p, q in zip(pts[1:-1], pts[2:]):
        d = torch.minimum(d, _segment(x, y, *p, *q, r))
    return d


def _v(t: Tensor) -> Tensor:
    return t.view(-1, 1, 1)


def _lips(x, y, cx, y0_mid, yl, yr, hwl, hwr):
    """Mouth frame: normalised offset s (-1 left corner .. 1 right) and centre line y0(x)."""
    hw = torch.where(x < cx, hwl, hwr)
    s = ((x - cx) / hw).clamp(-1.5, 1.5)
    yc = torch.where(x < cx, yl, yr)
    y0 = y0_mid + (yc - y0_mid) * s * s
    return s, y0, hw


def render(au: Tensor, side: Tensor, app: dict[str, Tensor], size: int,
           noise: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw faces. au: (B, 16) intensities in 0..1; side: (B, 2) left/right factors for AU12/14;
    noise: the generator of the sensor noise.

    Returns uint8 images (B, 3, size, size) and landmarks (B, 5, 2) in pixel coordinates
    (pixel centres at integer positions): left eye, right eye, nose tip, left and right mouth
    corner, image left first.
    """
    b = au.shape[0]
    cv = _Canvas(b, size)
    au_int = {k: _v(au[:, i]) for k, i in AU_INDEX.items()}
    A = {k: (_v(v) if v.ndim == 1 else v) for k, v in app.items()}
    skin = app["skin"]
    sideL, sideR = _v(side[:, 0]), _v(side[:, 1])
    fw, fh, chin = A["face_w"], A["face_h"], A["chin"]
    fcy = 0.02
    fh_low = fh * chin + 0.08 * au_int[26]

    # --- hair (back), neck, ears ---
    win, X, Y = cv.window(-1, 1, -1, 1)
    back = _ellipse(X, Y, 0.0, fcy - 0.12, fw * 1.13, fh * 0.95)
    back = torch.where(Y < fcy, back, back.clamp(min=0.02))
    bob = torch.maximum(_ellipse(X, Y, 0.0, fcy + 0.05, fw * 1.22, fh * 1.12), Y - 0.8)
    hair_back = torch.where(A["hair_style"] == 1, torch.minimum(back, bob), back)
    hair_back = torch.where(A["hair_style"] == 2, hair_back + 0.05, hair_back)
    cv.paint(win, cv.cover(hair_back), app["hair"])
    neck = torch.maximum(X.abs() - fw * 0.5, 0.45 - Y)
    cv.paint(win, cv.cover(neck), skin * 0.82)
    for s in (-1.0, 1.0):
        win_e, Xe, Ye = cv.window(s * 0.75 - 0.15, s * 0.75 + 0.15, -0.25, 0.3)
        ear = _ellipse(Xe, Ye, s * fw * 0.98, A["eye_y"] + 0.06, 0.075, 0.13)
        cv.paint(win_e, cv.cover(ear), skin * 0.9)

    # --- face oval with soft edge shading ---
    ry = torch.where(Y < fcy, fh, fh_low)
    k = torch.sqrt((X / fw) ** 2 + ((Y - fcy) / ry) ** 2)
    face = (k - 1) * fw
    cv.paint(win, cv.cover(face), skin)
    cv.shade(win, (k.clamp(max=1) ** 6) * 0.25, 1.0)

    # --- forehead wrinkles (AU1, AU2), glabella lines (AU4) ---
    ey = A["eye_y"]
    brow_base = ey - A["brow_gap"]
    win_f, Xf, Yf = cv.window(-0.35, 0.35, -0.75, -0.2)
    forehead = torch.maximum(au_int[1], au_int[2])
    for dy in (0.11, 0.17):
        d = (Yf - (brow_base - dy - 0.05 * forehead + 0.08 * (Xf / 0.35) ** 2)).abs() - 0.006
        d = torch.maximum(d, Xf.abs() - 0.28)
        cv.shade(win_f, cv.cover(d), 0.35 * forehead)
    win_g, Xg, Yg = cv.window(-0.1, 0.1, -0.35, -0.05)
    for s in (-1.0, 1.0):
        d = _segment(Xg, Yg, s * 0.035, brow_base + 0.0, s * 0.03, brow_base + 0.09, 0.006)
        cv.shade(win_g, cv.cover(d), 0.45 * au_int[4])

    # --- fringe: hair over the forehead ---
    win_h, Xh, Yh = cv.window(-0.8, 0.8, -1, -0.25)
    fringe = torch.maximum(Yh - (A["hairline"] + 0.1 * (Xh / fw) ** 2),
                           _ellipse(Xh, Yh, 0.0, fcy, fw * 1.02, fh * 1.02))
    fringe = torch.where(A["hair_style"] == 2, fringe + 0.06, fringe)
    cv.paint(win_h, cv.cover(fringe), app["hair"])

    # --- brows: inner (AU1 up, AU4 down and inward), outer (AU2 up) ---
    win_b, Xb, Yb = cv.window(-0.55, 0.55, -0.5, -0.05)
    brow_rgb = app["hair"] * 0.6 + 0.04
    for s in (-1.0, 1.0):
        xe = s * A["eye_sep"]
        inner = (xe - s * (0.11 + 0.04 * au_int[4]), brow_base + 0.012 - 0.085 * au_int[1] + 0.085 * au_int[4])
        mid = (xe + s * 0.02, brow_base - 0.022 - 0.035 * au_int[1] - 0.06 * au_int[2] + 0.05 * au_int[4])
        outer = (xe + s * 0.155, brow_base + 0.018 - 0.075 * au_int[2] + 0.012 * au_int[4])
        d = _polyline(Xb, Yb, [inner, mid, outer], A["brow_t"] * 0.5)
        cv.paint(win_b, cv.cover(d), brow_rgb)

    # --- eyes: lids (AU5 opens, AU6/AU7 narrow), iris, lashes, crow's feet (AU6) ---
    win_e, Xe, Ye = cv.window(-0.55, 0.55, -0.32, 0.12)
    ew = A["eye_w"]
    up = (A["eye_open"] * (0.055 + 0.05 * au_int[5] - 0.028 * au_int[7] - 0.012 * au_int[6]
                           - 0.01 * au_int[4])).clamp(min=0.006)
    lo = (A["eye_open"] * (0.038 - 0.024 * au_int[6] - 0.018 * au_int[7])).clamp(min=0.004)
    for s in (-1.0, 1.0):
        xe = s * A["eye_sep"]
        cv.shade(win_e, cv.cover(_ellipse(Xe, Ye, xe, ey - 0.03, ew * 1.25, up + 0.06)), 0.08)
        q = ((Xe - xe) / ew).clamp(-1, 1)
        top, bot = ey - up * (1 - q * q), ey + lo * (1 - q * q)
        eye = torch.maximum(torch.maximum((Xe - xe).abs() - ew, top - Ye), Ye - bot)
        cov_eye = cv.cover(eye)
        cv.paint(win_e, cov_eye, torch.tensor([0.95, 0.94, 0.91]).expand(b, 3))
        ri = ew * 0.4
        iris = cv.cover(_ellipse(Xe, Ye, xe + A["gaze"], ey, ri, ri)) * cov_eye
        cv.paint(win_e, iris, app["iris"])
        pupil = cv.cover(_ellipse(Xe, Ye, xe + A["gaze"], ey, ri * 0.45, ri * 0.45)) * cov_eye
        cv.paint(win_e, pupil, torch.zeros(b, 3))
        lash = torch.maximum((Ye - top + 0.004).abs() - 0.009, (Xe - xe).abs() - ew * 1.05)
        cv.paint(win_e, cv.cover(lash), torch.tensor([0.1, 0.07, 0.06]).expand(b, 3))
        lower = torch.maximum((Ye - bot).abs() - 0.004, (Xe - xe).abs() - ew)
        cv.shade(win_e, cv.cover(lower), 0.35)
        for dy in (-0.03, 0.03):
            d = _segment(Xe, Ye, xe + s * (ew + 0.02), ey + dy * 0.3, xe + s * (ew + 0.08), ey + dy * 1.6, 0.005)
            cv.shade(win_e, cv.cover(d), 0.5 * au_int[6])

    # --- cheeks (AU6 raises them) ---
    win_c, Xc, Yc = cv.window(-0.6, 0.6, -0.05, 0.4)
    for s in (-1.0, 1.0):
        d = _ellipse(Xc, Yc, s * (A["eye_sep"] + 0.03), ey + 0.2 - 0.05 * au_int[6], 0.13, 0.09)
        cv.shade(win_c, cv.cover(d) * 0.5, -0.12 * au_int[6])
        cv.shade(win_c, cv.cover(d + 0.03) * 0.5, 0.06 * au_int[6])

    # --- nose: bridge wrinkles (AU9), wings and nostrils (AU9 raise and flare, AU10 raise) ---
    win_n, Xn, Yn = cv.window(-0.22, 0.22, -0.15, 0.32)
    ny, nw = A["nose_y"], A["nose_w"]
    lift = 0.022 * au_int[9] + 0.012 * au_int[10]
    d = _segment(Xn, Yn, 0.03, ey + 0.02, nw * 0.6, ny - 0.04, 0.007)
    cv.shade(win_n, cv.cover(d), 0.15)
    for j, dy in enumerate((0.0, 0.04, 0.08)):
        d = (Yn - (ey + 0.03 + dy - 0.01 * au_int[9])).abs() - 0.006
        d = torch.maximum(d, Xn.abs() - 0.05 + 0.008 * j)
        cv.shade(win_n, cv.cover(d), 0.5 * au_int[9])
    cv.shade(win_n, cv.cover(_ellipse(Xn, Yn, 0.0, ny + 0.03 - lift, nw * 1.1, 0.035)), 0.12)
    for s in (-1.0, 1.0):
        wing = _ellipse(Xn, Yn, s * (nw + 0.012 * au_int[9]), ny - lift, 0.032, 0.036)
        cv.shade(win_n, cv.cover(wing.abs() - 0.004), 0.3)
        nost = _ellipse(Xn, Yn, s * nw * 0.45, ny + 0.012 - lift, 0.022 + 0.01 * au_int[9], 0.011)
        cv.paint(win_n, cv.cover(nost), skin * 0.35)

    # --- mouth: corners (AU12 up+out, AU15 down, AU14/AU20 out, AU23 in), lips, opening ---
    win_m, Xm, Ym = cv.window(-0.5, 0.5, 0.12, 0.85)
    my, mw = A["mouth_y"], A["mouth_w"]
    i12L, i12R, i14L, i14R = au_int[12] * sideL, au_int[12] * sideR, au_int[14] * sideL, au_int[14] * sideR
    hwl = mw * (1 + 0.22 * i12L + 0.12 * i14L + 0.3 * au_int[20] - 0.18 * au_int[23])
    hwr = mw * (1 + 0.22 * i12R + 0.12 * i14R + 0.3 * au_int[20] - 0.18 * au_int[23])
    yl = my - 0.085 * i12L - 0.02 * i14L + 0.075 * au_int[15] + 0.015 * au_int[20] - 0.01 * au_int[17]
    yr = my - 0.085 * i12R - 0.02 * i14R + 0.075 * au_int[15] + 0.015 * au_int[20] - 0.01 * au_int[17]
    gap_u = 0.03 * au_int[25] + 0.012 * au_int[26] + 0.02 * au_int[10]
    gap_l = 0.045 * au_int[25] + 0.11 * au_int[26] + 0.025 * au_int[20] * au_int[25]
    tu = A["lip_u"] * (1 - 0.65 * au_int[23]) * (1 - 0.25 * torch.maximum(i12L, i12R))
    tl = A["lip_l"] * (1 - 0.65 * au_int[23]) * (1 + 0.25 * au_int[17])
    s_, y0, _ = _lips(Xm, Ym, 0.0, my - 0.015 * au_int[17], yl, yr, hwl, hwr)
    taper = (1 - s_ * s_).clamp(min=0)
    rim = taper.sqrt()
    top_outer = y0 - gap_u * taper - tu * rim - 0.006
    bot_outer = y0 + gap_l * taper + tl * rim + 0.006
    top_inner, bot_inner = y0 - gap_u * taper, y0 + gap_l * taper
    inside = s_.abs() - 1
    lips = torch.maximum(torch.maximum(top_outer - Ym, Ym - bot_outer), inside * 0.1)
    lip_rgb = skin * torch.tensor([0.78, 0.5, 0.5]) + torch.tensor([0.12, 0.0, 0.02]) * A["lip_tint"].view(-1, 1)
    cv.paint(win_m, cv.cover(lips), lip_rgb)
    mouth = torch.maximum(torch.maximum(top_inner - Ym, Ym - bot_inner), inside * 0.1)
    cov_mouth = cv.cover(mouth)
    cv.paint(win_m, cov_mouth, torch.tensor([0.22, 0.06, 0.07]).expand(b, 3))
    teeth = torch.maximum(Ym - (top_inner + 0.032 * taper), -cov_mouth + 0.5)
    cv.paint(win_m, cv.cover(teeth) * cov_mouth, torch.tensor([0.93, 0.91, 0.85]).expand(b, 3))
    line = torch.maximum((Ym - y0).abs() - 0.006, inside * 0.1)
    cv.shade(win_m, cv.cover(line), 0.55)
    for s, yc, hw_s, i14 in ((-1.0, yl, hwl, i14L), (1.0, yr, hwr, i14R)):
        d = _ellipse(Xm, Ym, s * (hw_s + 0.02), yc, 0.012, 0.02)
        cv.shade(win_m, cv.cover(d), 0.5 * i14)
    # chin boss and crease (AU17), jaw drop shadow (AU26)
    chin_y = my + 0.1 + A["lip_l"] + 0.12 * au_int[26]
    d = torch.maximum((Ym - chin_y + 0.02 * (Xm / 0.12) ** 2 * 0 - 0.0).abs() - 0.007, Xm.abs() - 0.1)
    cv.shade(win_m, cv.cover(d), 0.4 * au_int[17])
    cv.shade(win_m, cv.cover(_ellipse(Xm, Ym, 0.0, chin_y + 0.05, 0.1, 0.04)), -0.08 * au_int[17])

    # --- nasolabial folds: deepen with AU6, AU9, AU10, AU12, AU20 ---
    fold = (0.12 + 0.6 * au_int[12] * torch.maximum(sideL, sideR) + 0.7 * au_int[10] + 0.6 * au_int[9]
            + 0.25 * au_int[6] + 0.3 * au_int[20]).clamp(max=0.8)
    win_l, Xl, Yl = cv.window(-0.5, 0.5, 0.05, 0.7)
    for s, yc, hw_s in ((-1.0, yl, hwl), (1.0, yr, hwr)):
        top_pt = (s * (nw + 0.04), ny - 0.03)
        mid_pt = (s * (nw + 0.06 + 0.5 * (hw_s - nw)), (ny + yc) * 0.5)
        end_pt = (s * (hw_s + 0.05), yc + 0.03)
        cv.shade(win_l, cv.cover(_polyline(Xl, Yl, [top_pt, mid_pt, end_pt], 0.006)), fold)

    # --- glasses ---
    win_g2, Xg2, Yg2 = cv.window(-0.6, 0.6, -0.38, 0.15)
    rg = ew + 0.05
    ring = None
    for s in (-1.0, 1.0):
        r = (torch.sqrt((Xg2 - s * A["eye_sep"]) ** 2 + ((Yg2 - ey) / 0.8) ** 2) - rg).abs() - 0.012
        ring = r if ring is None else torch.minimum(ring, r)
    bridge = _segment(Xg2, Yg2, -(A["eye_sep"] - rg), ey - 0.03, A["eye_sep"] - rg, ey - 0.03, 0.01)
    cv.paint(win_g2, cv.cover(torch.minimum(ring, bridge)) * A["glasses"], app["glasses_rgb"])

    # --- pose: one affine warp of the RGBA canvas ---
    cos, sin, sc = torch.cos(app["rot"]), torch.sin(app["rot"]), app["scale"]
    t = torch.stack([app["tx"], app["ty"]], 1)
    rinv = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1) / sc.view(-1, 1, 1)
    theta = torch.cat([rinv, -(rinv @ t.unsqueeze(2))], 2)
    grid = F.affine_grid(theta, [b, 4, size, size], align_corners=False)
    rgba = F.grid_sample(torch.cat([cv.rgb, cv.alpha], 1), grid, align_corners=False)
    rgb, alpha = rgba[:, :3], rgba[:, 3:]

    # --- scene: background gradient, occluder, lighting, exposure, sensor noise ---
    c = cv.c
    gy = ((c.view(1, 1, -1, 1) + 1) / 2).expand(b, 1, size, size)
    bg = app["bg1"].view(-1, 3, 1, 1) * (1 - gy) + app["bg2"].view(-1, 3, 1, 1) * gy
    img = rgb + bg * (1 - alpha)
    X2, Y2 = c.view(1, 1, 1, -1), c.view(1, 1, -1, 1)
    occ = _ellipse(X2, Y2, _v(app["occ_x"]).unsqueeze(1), _v(app["occ_y"]).unsqueeze(1),
                   _v(app["occ_r"]).unsqueeze(1), _v(app["occ_r"] * 0.7).unsqueeze(1))
    cov = (0.5 - occ / cv.px).clamp(0, 1) * app["occluder"].view(-1, 1, 1, 1)
    img = img * (1 - cov) + app["occ_rgb"].view(-1, 3, 1, 1) * cov
    ld = app["light_dir"].view(-1, 1, 1, 1)
    light = 1 + app["light"].view(-1, 1, 1, 1) * (torch.cos(ld) * X2 + torch.sin(ld) * Y2)
    img = img * light * app["bright"].view(-1, 1, 1, 1)
    img = img + torch.randn(img.shape, generator=noise) * app["sensor"].view(-1, 1, 1, 1)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)

    # --- landmarks: canonical points through the forward pose map, then to pixels ---
    pts = torch.stack([
        torch.stack([-app["eye_sep"], app["eye_y"]], 1), torch.stack([app["eye_sep"], app["eye_y"]], 1),
        torch.stack([torch.zeros(b), app["nose_y"]], 1),
        torch.stack([-hwl.view(-1), yl.view(-1)], 1), torch.stack([hwr.view(-1), yr.view(-1)], 1)], 1)
    fwd = torch.linalg.inv(rinv)
    norm = pts @ fwd.transpose(1, 2) + t.unsqueeze(1)
    landmarks = (norm + 1) * size / 2 - 0.5
    return images, landmarks

