"""Independent NumPy reference implementations, written from the papers' formulas with explicit loops.

They share no code with raysweep and favour obviousness over speed; the tests compare the library against them.
"""

import math

import numpy as np


def softmax(logits):
    x = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def onehot_valid(target, c, ignore=255):
    valid = target != ignore
    t = np.zeros((target.shape[0], c) + target.shape[1:])
    for k in range(c):
        t[:, k] = (target == k) & valid
    return t, valid


def counts(p, t, valid, per_image=False):
    """tp, fp, fn as (C,) or (B, C)."""
    v = valid[:, None].astype(float)
    axes = (2, 3) if per_image else (0, 2, 3)
    tp = (p * t * v).sum(axes)
    fp = (p * (1 - t) * v).sum(axes)
    fn = ((1 - p) * t * v).sum(axes)
    return tp, fp, fn


def tversky(logits, target, alpha, beta, smooth=1e-5, per_image=False):
    p = softmax(logits)
    t, valid = onehot_valid(target, logits.shape[1])
    tp, fp, fn = counts(p, t, valid, per_image)
    return float(np.mean(1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)))


def focal_tversky(logits, target, gamma, alpha, beta, smooth=1e-5):
    p = softmax(logits)
    t, valid = onehot_valid(target, logits.shape[1])
    tp, fp, fn = counts(p, t, valid)
    ti = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return float(np.mean((1 - ti) ** (1 / gamma)))


def jaccard(logits, target, smooth=1e-5):
    p = softmax(logits)
    t, valid = onehot_valid(target, logits.shape[1])
    tp, fp, fn = counts(p, t, valid)
    return float(np.mean(1 - (tp + smooth) / (tp + fp + fn + smooth)))


def sens_spec(logits, target, r, smooth=1e-5):
    p = softmax(logits)
    c = logits.shape[1]
    t, valid = onehot_valid(target, c)
    out = []
    for k in range(c):
        pk, tk = p[:, k][valid], t[:, k][valid]
        sens = np.sum(tk * (tk - pk) ** 2) / (np.sum(tk) + smooth)
        spec = np.sum((1 - tk) * (tk - pk) ** 2) / (np.sum(1 - tk) + smooth)
        out.append(r * sens + (1 - r) * spec)
    return float(np.mean(out))


def topk(logits, target, k):
    p = softmax(logits)
    valid = target != 255
    ce = []
    for b, i, j in zip(*np.nonzero(valid)):
        ce.append(-math.log(p[b, target[b, i, j], i, j]))
    ce = np.sort(np.array(ce))[::-1]
    n = max(1, int(len(ce) * k / 100))  # truncated, as nnU-Net's TopKLoss
    return float(ce[:n].mean())


def focal(logits, target, gamma, alpha=None):
    p = softmax(logits)
    vals = []
    for b, i, j in zip(*np.nonzero(target != 255)):
        cls = target[b, i, j]
        pt = p[b, cls, i, j]
        a = 1.0 if alpha is None else alpha[cls]
        vals.append(-a * (1 - pt) ** gamma * math.log(pt))
    return float(np.mean(vals))


def combo(logits, target, alpha, beta, smooth=1e-5, eps=1e-7):
    p = np.clip(softmax(logits), eps, 1 - eps)
    c = logits.shape[1]
    t, valid = onehot_valid(target, c)
    bce = []
    for b, i, j in zip(*np.nonzero(valid)):
        for k in range(c):
            tk, pk = t[b, k, i, j], p[b, k, i, j]
            bce.append(-(beta * tk * math.log(pk) + (1 - beta) * (1 - tk) * math.log(1 - pk)))
    pr = softmax(logits)
    tp, fp, fn = counts(pr, t, valid)
    dice = np.mean((2 * tp + smooth) / (2 * tp + fp + fn + smooth))
    return float(alpha * np.mean(bce) + (1 - alpha) * (1 - dice))


def exp_log(logits, target, w_dice, g_dice, g_ce, smooth=1.0):
    p = softmax(logits)
    c = logits.shape[1]
    t, valid = onehot_valid(target, c)
    tp, fp, fn = counts(p, t, valid)
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    l_dice = np.mean((-np.log(dice)) ** g_dice)
    f = np.array([np.sum((target == k) & valid) for k in range(c)], dtype=float)
    w = np.sqrt(f.sum() / np.maximum(f, 1))
    vals = []
    for b, i, j in zip(*np.nonzero(valid)):
        k = target[b, i, j]
        vals.append(w[k] * (-math.log(p[b, k, i, j])) ** g_ce)
    return float(w_dice * l_dice + (1 - w_dice) * np.mean(vals))


def unified_focal(logits, target, lam, delta, gamma, smooth=1e-6):
    p = softmax(logits)
    c = logits.shape[1]
    t, valid = onehot_valid(target, c)
    vals = []
    for b, i, j in zip(*np.nonzero(valid)):
        k = target[b, i, j]
        pt = p[b, k, i, j]
        if k == 0:
            vals.append((1 - delta) * (1 - pt) ** gamma * -math.log(pt))
        else:
            vals.append(delta * -math.log(pt))
    tp, fp, fn = counts(p, t, valid)
    mti = (tp + smooth) / (tp + delta * fn + (1 - delta) * fp + smooth)
    ftl = [(1 - mti[0])] + [(1 - mti[k]) ** (1 - gamma) for k in range(1, c)]
    return float(lam * np.mean(vals) + (1 - lam) * np.mean(ftl))


def rmi_term(onehot, probs, radius):
    """Per (image, class) 0.5 * logdet(S_Y|P + jitter I) / d with neighbourhood points, as in Zhao et al.'s code:
    S are scatter matrices (covariances times the number of points n), the jitter added to S_P and S_Y|P."""
    b, c, h, w = probs.shape
    d = radius * radius
    out = np.zeros((b, c))
    jitter = 5e-4
    for bi in range(b):
        for ci in range(c):
            ys, ps = [], []
            for i in range(h - radius + 1):
                for j in range(w - radius + 1):
                    ys.append(onehot[bi, ci, i:i + radius, j:j + radius].reshape(-1))
                    ps.append(probs[bi, ci, i:i + radius, j:j + radius].reshape(-1))
            y, pr = np.array(ys).T, np.array(ps).T  # (d, n)
            cov = np.cov(np.vstack([y, pr]), bias=True) * y.shape[1]  # unnormalised, as the authors' code
            sy, syp, sp = cov[:d, :d], cov[:d, d:], cov[d:, d:] + jitter * np.eye(d)
            post = sy - syp @ np.linalg.inv(sp) @ syp.T + jitter * np.eye(d)
            out[bi, ci] = 0.5 * np.linalg.slogdet(post)[1] / d
    return out
