"""Smoke test for an installed wheel, in an environment with nothing but pynorm and NumPy:
imports pynorm, prints its configuration, and checks one forward and backward of every op
against plain NumPy formulas (float64)."""

import numpy as np

import pynorm

pynorm.show_config()
rng = np.random.default_rng(0)
x, dy = rng.standard_normal((2, 37, 64)), rng.standard_normal((2, 37, 64))
w, b = rng.standard_normal(64), rng.standard_normal(64)


def close(a, b, what):
    if not np.allclose(a, b, rtol=1e-9, atol=1e-9):
        raise SystemExit(f"smoke test FAILED: {what} (max error {np.max(np.abs(a - b)):.3e})")


# LayerNorm: y = xhat w + b; dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy w
mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
rstd = 1 / np.sqrt(var + 1e-5)
xhat = (x - mu) * rstd
g = dy * w
close(pynorm.layer_norm(x, w, b), xhat * w + b, "layer_norm forward")
dx, dw, db = pynorm.layer_norm_backward(dy, x, w, b)
close(dx, rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)), "layer_norm dx")
close(dw, (dy * xhat).sum((0, 1)), "layer_norm dweight")
close(db, dy.sum((0, 1)), "layer_norm dbias")

# RMSNorm
r = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)
close(pynorm.rms_norm(x, w), x * r * w, "rms_norm forward")
dx, dw = pynorm.rms_norm_backward(dy, x, w)
close(dx, r * g - x * r**3 * (g * x).mean(-1, keepdims=True), "rms_norm dx")
close(dw, (dy * x * r).sum((0, 1)), "rms_norm dweight")

# DyT
t = np.tanh(0.7 * x)
close(pynorm.dyt(x, 0.7, w, b), w * t + b, "dyt forward")
dx, dalpha, dw, db = pynorm.dyt_backward(dy, x, 0.7, w, b)
close(dx, g * 0.7 * (1 - t * t), "dyt dx")
close(dalpha, [np.sum(g * (1 - t * t) * x)], "dyt dalpha")
close(dw, (dy * t).sum((0, 1)), "dyt dweight")

print("smoke test passed: layer_norm, rms_norm, dyt forward and backward match NumPy")
