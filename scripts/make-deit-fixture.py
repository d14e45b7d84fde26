"""A tiny DeiT reference forward for test/deit.test.ts (run with /usr/bin/python3, Debian's torch 1.13).

Written from timm's `vision_transformer.py` module tree (no timm install here): random weights under
timm's state-dict keys (`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.N.{norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`, `head`), the eval forward in float64, and, for an input
larger than the trained grid, timm's `resample_abs_pos_embed` (class row kept, the grid resized with
F.interpolate bicubic, align_corners False, antialias True). Writes test/fixtures/deit/tiny.json + tiny.bin.

    /usr/bin/python3 scripts/make-deit-fixture.py
"""
import json
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'deit')
C, HEADS, DEPTH, PATCH, GRID, CLASSES, EPS = 32, 2, 2, 16, 3, 10, 1e-6


def weights(gen):
    def rnd(*shape, std=0.2, mean=0.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std + mean

    w = {'cls_token': rnd(1, 1, C), 'pos_embed': rnd(1, 1 + GRID * GRID, C),
         'patch_embed.proj.weight': rnd(C, 3, PATCH, PATCH, std=0.05), 'patch_embed.proj.bias': rnd(C)}
    for i in range(DEPTH):
        b = f'blocks.{i}.'
        w.update({b + 'norm1.weight': rnd(C, mean=1.0), b + 'norm1.bias': rnd(C),
                  b + 'attn.qkv.weight': rnd(3 * C, C), b + 'attn.qkv.bias': rnd(3 * C),
                  b + 'attn.proj.weight': rnd(C, C), b + 'attn.proj.bias': rnd(C),
                  b + 'norm2.weight': rnd(C, mean=1.0), b + 'norm2.bias': rnd(C),
                  b + 'mlp.fc1.weight': rnd(4 * C, C), b + 'mlp.fc1.bias': rnd(4 * C),
                  b + 'mlp.fc2.weight': rnd(C, 4 * C), b + 'mlp.fc2.bias': rnd(C)})
    w.update({'norm.weight': rnd(C, mean=1.0), 'norm.bias': rnd(C), 'head.weight': rnd(CLASSES, C), 'head.bias': rnd(CLASSES)})
    return {k: v.float().double() for k, v in w.items()}  # values exactly representable in float32


def resample_abs_pos_embed(pos, grid):
    if grid == GRID:
        return pos
    cls, rest = pos[:, :1], pos[:, 1:]
    rest = rest.reshape(1, GRID, GRID, C).permute(0, 3, 1, 2)
    rest = F.interpolate(rest, size=(grid, grid), mode='bicubic', antialias=True, align_corners=False)
    return torch.cat([cls, rest.permute(0, 2, 3, 1).reshape(1, grid * grid, C)], dim=1)


def forward(w, img):
    B = img.shape[0]
    x = F.conv2d(img, w['patch_embed.proj.weight'], w['patch_embed.proj.bias'], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([w['cls_token'].expand(B, -1, -1), x], dim=1)
    x = x + resample_abs_pos_embed(w['pos_embed'], img.shape[-1] // PATCH)
    n, d = x.shape[1], C // HEADS
    for i in range(DEPTH):
        b = f'blocks.{i}.'
        h = F.layer_norm(x, (C,), w[b + 'norm1.weight'], w[b + 'norm1.bias'], EPS)
        qkv = F.linear(h, w[b + 'attn.qkv.weight'], w[b + 'attn.qkv.bias']).reshape(B, n, 3, HEADS, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = ((q @ k.transpose(-2, -1)) * d ** -0.5).softmax(-1)
        x = x + F.linear((a @ v).transpose(1, 2).reshape(B, n, C), w[b + 'attn.proj.weight'], w[b + 'attn.proj.bias'])
        h = F.layer_norm(x, (C,), w[b + 'norm2.weight'], w[b + 'norm2.bias'], EPS)
        x = x + F.linear(F.gelu(F.linear(h, w[b + 'mlp.fc1.weight'], w[b + 'mlp.fc1.bias'])), w[b + 'mlp.fc2.weight'], w[b + 'mlp.fc2.bias'])
    x = F.layer_norm(x, (C,), w['norm.weight'], w['norm.bias'], EPS)
    features = x[:, 0]
    return features, F.linear(features, w['head.weight'], w['head.bias'])


def main():
    gen = torch.Generator().manual_seed(0)
    w = weights(gen)
    blob, index = [], {}
    offset = 0
    for k, v in w.items():
        index[k] = {'shape': list(v.shape), 'offset': offset}
        blob.append(v.float().flatten())
        offset += v.numel()
    runs = []
    for size in (48, 80):
        img = torch.randn(2, 3, size, size, generator=gen, dtype=torch.float64).float().double()
        feats, logits = forward(w, img)
        runs.append({'size': size, 'images': offset, 'features': feats.flatten().tolist(), 'logits': logits.flatten().tolist()})
        blob.append(img.float().flatten())
        offset += img.numel()
    cfg = {'width': C, 'heads': HEADS, 'depth': DEPTH, 'patch': PATCH, 'pos_grid': GRID, 'classes': CLASSES}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, 'tiny.json'), 'w') as f:
        json.dump({'config': cfg, 'weights': index, 'runs': runs}, f)
    torch.cat(blob).numpy().astype('<f4').tofile(os.path.join(OUT, 'tiny.bin'))


main()
