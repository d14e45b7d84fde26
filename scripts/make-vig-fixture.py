"""Tiny ViG reference forwards for test/vig.test.ts (run with /usr/bin/python3, torch 1.13).

Written from specs/models-a.md §2 and the module tree of hustvl/ViG `classification/models/vig.py`
(eval branch), not copied from it: random weights under the official state-dict keys, a plain
token-by-token GLA recurrence in float64, and the whole forward (patch embed v2, pos table with
F.interpolate bicubic for other grids, GLA blocks with the fused pre-norm residual, final RMSNorm,
mean pool, head). Writes test/fixtures/vig/<case>.json (index + outputs) and <case>.bin (float32 weights).

    /usr/bin/python3 scripts/make-vig-fixture.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'vig')


def mlp_hidden(c):
    return 256 * math.ceil(int(c * 4 * 2 / 3) / 256)


def make_weights(cfg, gen):
    c, dk, dv = cfg['embed'], int(cfg['embed'] * 0.5), cfg['embed']
    hv = dv // cfg['heads']
    s = cfg['pos_grid']

    def rnd(*shape, std=0.2, mean=0.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean).float()

    w = {
        'patch_embed.proj.0.weight': rnd(c // 2, 3, 9, 9, std=0.1),
        'patch_embed.proj.0.bias': rnd(c // 2),
        'patch_embed.proj.1.weight': rnd(c // 2, mean=1.0),
        'patch_embed.proj.1.bias': rnd(c // 2),
        'patch_embed.proj.3.weight': rnd(c, c // 2, 3, 3, std=0.1),
        'patch_embed.proj.3.bias': rnd(c),
        'patch_embed.proj.4.weight': rnd(c, mean=1.0),
        'patch_embed.proj.4.bias': rnd(c),
        'pos_embed': rnd(1, s * s, c),
    }
    lin = 1.0 / math.sqrt(c)
    for i in range(cfg['depth']):
        b = f'blocks.{i}.'
        h = mlp_hidden(c)
        w.update({
            b + 'attn_norm.weight': rnd(c, mean=1.0),
            b + 'attn.in_proj.0.weight': rnd(c, 1, 3, 3, std=0.3),
            b + 'attn.qkv_proj.weight': rnd(2 * dk + dv, c, std=lin),
            b + 'attn.gk_proj.0.weight': rnd(16, c, std=lin),
            b + 'attn.gk_proj.1.weight': rnd(2 * dk, 16, std=0.5),
            b + 'attn.gk_proj.1.bias': rnd(2 * dk, std=1.0),
            b + 'attn.o_proj.weight': rnd(c, dv, std=lin),
            b + 'attn.g_norm.weight': rnd(hv, mean=1.0),
            b + 'attn.l_norm.weight': rnd(hv, mean=1.0),
            b + 'attn.g_proj.weight': rnd(dv, c, std=lin),
            b + 'attn.g_proj.bias': rnd(dv),
            b + 'mlp_norm.weight': rnd(c, mean=1.0),
            b + 'mlp.gate_proj.weight': rnd(2 * h, c, std=lin),
            b + 'mlp.down_proj.weight': rnd(c, h, std=1.0 / math.sqrt(h)),
        })
    w['norm.weight'] = rnd(c, mean=1.0)
    w['head.weight'] = rnd(cfg['classes'], c, std=lin)
    w['head.bias'] = rnd(cfg['classes'])
    return w


def rms_norm(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def layer_norm_2d(x, weight, bias):
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, 1e-5).permute(0, 3, 1, 2)


def gla_recurrent(q, k, v, log_alpha, reverse):
    """[B, H, L, d] each; S_t = diag(α_t) S_prev + k_tᵀ v_t, o_t = dk^-½ q_t S_t, token t included."""
    B, H, L, dk = q.shape
    state = torch.zeros(B, H, dk, v.shape[-1], dtype=q.dtype)
    out = torch.zeros(B, H, L, v.shape[-1], dtype=q.dtype)
    for t in (range(L - 1, -1, -1) if reverse else range(L)):
        state = log_alpha[:, :, t, :, None].exp() * state + k[:, :, t, :, None] * v[:, :, t, None, :]
        out[:, :, t] = (q[:, :, t, :, None] * state).sum(-2) * dk ** -0.5
    return out


def bigla(w, b, x, cfg, grid):
    B, N, C = x.shape
    heads, dk, dv = cfg['heads'], int(C * 0.5), C
    local = F.conv2d(x.transpose(1, 2).reshape(B, C, *grid), w[b + 'in_proj.0.weight'], padding=1, groups=C)
    if cfg['act_in_conv']:
        local = F.silu(local)
    xs = local.flatten(2).transpose(1, 2)
    q, k, v = torch.split(xs @ w[b + 'qkv_proj.weight'].T, [dk, dk, dv], dim=2)
    gk = (xs @ w[b + 'gk_proj.0.weight'].T) @ w[b + 'gk_proj.1.weight'].T + w[b + 'gk_proj.1.bias']
    fw, bw = gk.chunk(2, dim=2)
    hd = lambda t: t.reshape(B, N, heads, -1).transpose(1, 2)
    q, k, v = hd(q), hd(k), hd(v)
    la_f, la_b = hd(F.logsigmoid(fw) / 16), hd(F.logsigmoid(bw) / 16)
    o = (gla_recurrent(q, k, v, la_f, False) + gla_recurrent(q, k, v, la_b, True)) / 2 / 2
    o = rms_norm(o.transpose(1, 2), w[b + 'g_norm.weight'])
    loc = rms_norm(xs.reshape(B, N, heads, -1), w[b + 'l_norm.weight'])
    g = torch.sigmoid(xs @ w[b + 'g_proj.weight'].T + w[b + 'g_proj.bias']).reshape(B, N, heads, -1)
    o = (o * g + loc * (1 - g)).reshape(B, N, dv)
    if cfg['out_act']:
        o = F.silu(o)
    return o @ w[b + 'o_proj.weight'].T


def forward(w, cfg, images):
    c = cfg['embed']
    x = F.conv2d(images, w['patch_embed.proj.0.weight'], w['patch_embed.proj.0.bias'], stride=8, padding=1)
    x = F.silu(layer_norm_2d(x, w['patch_embed.proj.1.weight'], w['patch_embed.proj.1.bias']))
    x = F.conv2d(x, w['patch_embed.proj.3.weight'], w['patch_embed.proj.3.bias'], stride=2, padding=1)
    x = layer_norm_2d(x, w['patch_embed.proj.4.weight'], w['patch_embed.proj.4.bias'])
    grid = tuple(x.shape[2:])
    x = x.flatten(2).transpose(1, 2)
    s = cfg['pos_grid']
    pos = w['pos_embed']
    if grid != (s, s):
        pos = F.interpolate(pos.float().reshape(1, s, s, c).permute(0, 3, 1, 2), size=grid, mode='bicubic', align_corners=False)
        pos = pos.flatten(2).transpose(1, 2)
    x = x + pos.to(x.dtype)
    for i in range(cfg['depth']):
        b = f'blocks.{i}.'
        r = x + bigla(w, b + 'attn.', rms_norm(x, w[b + 'attn_norm.weight']), cfg, grid)
        h = rms_norm(r, w[b + 'mlp_norm.weight']) @ w[b + 'mlp.gate_proj.weight'].T
        gate, y = h.chunk(2, -1)
        x = r + (F.silu(gate) * y) @ w[b + 'mlp.down_proj.weight'].T
    feats = rms_norm(x, w['norm.weight']).mean(1)
    return feats, feats @ w['head.weight'].T + w['head.bias']


CASES = {
    # ViG-T's flags (SiLU after the dwconv, SiLU before o_proj), 2 blocks.
    'tiny-t': dict(embed=32, heads=2, depth=2, act_in_conv=True, out_act=True, pos_grid=4, classes=10, sizes=[64, 80], seed=1),
    # ViG-S/B's flags, 1 block.
    'tiny-s': dict(embed=32, heads=2, depth=1, act_in_conv=False, out_act=False, pos_grid=4, classes=10, sizes=[64], seed=2),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, cfg in CASES.items():
        gen = torch.Generator().manual_seed(cfg['seed'])
        w = make_weights(cfg, gen)
        index, blobs, offset = {}, [], 0
        for k, t in w.items():
            index[k] = {'shape': list(t.shape), 'offset': offset}
            blobs.append(t.contiguous().numpy().tobytes())
            offset += t.numel()
        w64 = {k: t.double() for k, t in w.items()}
        runs = []
        for size in cfg['sizes']:
            images = (torch.randn(2, 3, size, size, generator=gen, dtype=torch.float64)).float()
            with torch.no_grad():
                feats, logits = forward(w64, cfg, images.double())
            offset_images = offset
            offset += images.numel()
            blobs.append(images.contiguous().numpy().tobytes())
            runs.append({'size': size, 'images': offset_images, 'features': feats.flatten().tolist(), 'logits': logits.flatten().tolist()})
        meta = {k: v for k, v in cfg.items() if k not in ('sizes', 'seed')}
        with open(os.path.join(OUT, f'{name}.bin'), 'wb') as f:
            f.write(b''.join(blobs))
        with open(os.path.join(OUT, f'{name}.json'), 'w') as f:
            json.dump({'config': meta, 'weights': index, 'runs': runs}, f)
        print(name, offset, 'floats')


if __name__ == '__main__':
    main()
