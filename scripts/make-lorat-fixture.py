#!/usr/bin/python3
"""Writes test/fixtures/lorat/: a tiny LoRAT checkpoint and a tiny DINOv2 checkpoint saved by real PyTorch,
and what PyTorch computes from them — the independent reference for test/lorat.test.ts and test/vit.test.ts.

  dinov2-tiny.pth        torch.save of a DINOv2-layout state dict (fused attn.qkv, pos_embed [1, 1+37*37, C],
                         cls_token, mask_token), float16 storages like a half-precision export.
  lorat-tiny.bin         the LoRAT file as the released weights are reported to be: safetensors (despite .bin)
                         holding only what training updates — adapters, head, token types — plus lora_alpha and
                         use_rslora scalars (int64 / bool), as LoRAT's state_dict wrapper adds them.
  expected.safetensors   F.interpolate(bicubic, align_corners=False) results, the template masks, and the
                         outputs of a forward pass of a LoRAT reference written below from specs/models-a.md §1
                         (unmerged LoRA, float64), for two inputs defined by formulas (see `pattern`).

Run: /usr/bin/python3 scripts/make-lorat-fixture.py   (needs torch; the pyenv python3 has none)
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

C, DEPTH, HEADS, PATCH, MLP_RATIO = 32, 2, 2, 14, 4
RANK, ALPHA = 4, 8  # scaling alpha/r = 2, so a scaling bug shows
DINO_GRID = 37  # 518 / 14
TEMPLATE, SEARCH = 112, 224
FZ, FX = TEMPLATE // PATCH, SEARCH // PATCH
BATCH = 2
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'lorat')

torch.manual_seed(20240705)


def normal(*shape, std=1.0, mean=0.0):
    return torch.randn(*shape, dtype=torch.float32) * std + mean


def dinov2_state_dict():
    sd = {
        'cls_token': normal(1, 1, C, std=0.02),
        'pos_embed': normal(1, 1 + DINO_GRID * DINO_GRID, C, std=0.5),
        'mask_token': torch.zeros(1, C),
        'patch_embed.proj.weight': normal(C, 3, PATCH, PATCH, std=1 / math.sqrt(3 * PATCH * PATCH)),
        'patch_embed.proj.bias': normal(C, std=0.1),
    }
    hidden = C * MLP_RATIO
    for i in range(DEPTH):
        b = f'blocks.{i}.'
        sd[b + 'norm1.weight'] = normal(C, std=0.1, mean=1.0)
        sd[b + 'norm1.bias'] = normal(C, std=0.1)
        sd[b + 'attn.qkv.weight'] = normal(3 * C, C, std=1 / math.sqrt(C))
        sd[b + 'attn.qkv.bias'] = normal(3 * C, std=0.1)
        sd[b + 'attn.proj.weight'] = normal(C, C, std=1 / math.sqrt(C))
        sd[b + 'attn.proj.bias'] = normal(C, std=0.1)
        sd[b + 'ls1.gamma'] = 0.5 + 0.5 * torch.rand(C)
        sd[b + 'norm2.weight'] = normal(C, std=0.1, mean=1.0)
        sd[b + 'norm2.bias'] = normal(C, std=0.1)
        sd[b + 'mlp.fc1.weight'] = normal(hidden, C, std=1 / math.sqrt(C))
        sd[b + 'mlp.fc1.bias'] = normal(hidden, std=0.1)
        sd[b + 'mlp.fc2.weight'] = normal(C, hidden, std=1 / math.sqrt(hidden))
        sd[b + 'mlp.fc2.bias'] = normal(C, std=0.1)
        sd[b + 'ls2.gamma'] = 0.5 + 0.5 * torch.rand(C)
    sd['norm.weight'] = normal(C, std=0.1, mean=1.0)
    sd['norm.bias'] = normal(C, std=0.1)
    return sd


def lorat_state_dict():
    """Trainable parts only, under LoRAT's module paths (LinearWithLoRA_QKVFused → q/k/v LinearWithLoRA)."""
    sd = {}
    hidden = C * MLP_RATIO
    sites = [('attn.qkv.q', C, C), ('attn.qkv.k', C, C), ('attn.qkv.v', C, C), ('attn.proj', C, C),
             ('mlp.fc1', C, hidden), ('mlp.fc2', hidden, C)]
    for i in range(DEPTH):
        for name, d_in, d_out in sites:
            sd[f'blocks.{i}.{name}.lora.A'] = normal(RANK, d_in, std=0.2)
            sd[f'blocks.{i}.{name}.lora.B'] = normal(d_out, RANK, std=0.2)
    sd['token_type_embed'] = normal(3, C, std=0.5)
    for branch, out in (('cls_mlp', 1), ('reg_mlp', 4)):
        for j, (d_in, d_out) in enumerate(((C, C), (C, C), (C, out))):
            sd[f'head.{branch}.layers.{j}.weight'] = normal(d_out, d_in, std=1 / math.sqrt(d_in))
            sd[f'head.{branch}.layers.{j}.bias'] = normal(d_out, std=0.1)
    sd['lora_alpha'] = torch.as_tensor(ALPHA)  # int64 scalar, as state_dict_with_lora_meta_attributes stores it
    sd['use_rslora'] = torch.as_tensor(False)
    return sd


SAFETENSORS_DTYPES = {torch.float32: 'F32', torch.float16: 'F16', torch.int64: 'I64', torch.bool: 'BOOL'}


def save_safetensors(tensors, path):
    """The safetensors format by hand: u64 LE header length, JSON header, then the raw little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        data = t.numpy().tobytes()
        header[name] = {'dtype': SAFETENSORS_DTYPES[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(',', ':')).encode()
    text += b' ' * (-len(text) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def bicubic(table, h, w, out_h, out_w):
    """A channels-last table [h*w, c] resized like DINOv2's interpolate_pos_encoding with `size=`."""
    c = table.shape[-1]
    grid = table.reshape(1, h, w, c).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=(out_h, out_w), mode='bicubic', align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(out_h * out_w, c)


def pattern(n, mul, mod):
    """Deterministic inputs both sides compute exactly: ((i·mul) mod m)/(m/2) − 1, rounded once to float32."""
    i = torch.arange(n, dtype=torch.int64)
    return ((i * mul) % mod).double().div(mod / 2).sub(1).float()


# ---- the reference forward, from specs/models-a.md §1 (float64, LoRA unmerged) ----

def lora_linear(x, w, b, a=None, bb=None, s=1.0):
    y = x @ w.T + b
    return y if a is None else y + (x @ a.T @ bb.T) * s


def reference_forward(dino, lorat, pos16, z, x, mask):
    d = {k: v.double() for k, v in dino.items()}
    l = {k: v.double() for k, v in lorat.items() if v.dtype.is_floating_point}
    s = float(lorat['lora_alpha']) / RANK
    ln = lambda t, p: F.layer_norm(t, (C,), d[p + '.weight'], d[p + '.bias'], eps=1e-6)

    def embed(img):
        y = F.conv2d(img.double(), d['patch_embed.proj.weight'], d['patch_embed.proj.bias'], stride=PATCH)
        return y.flatten(2).transpose(1, 2)

    pos = pos16.double().reshape(1, FX * FX, C)
    tte = l['token_type_embed']
    zt = embed(z) + pos.view(1, FX, FX, C)[:, :FZ, :FZ, :].reshape(1, FZ * FZ, C) + tte[mask.flatten(1)]
    xt = embed(x) + pos + tte[2].view(1, 1, C)
    t = torch.cat((zt, xt), dim=1)
    n, dh = t.shape[1], C // HEADS
    for i in range(DEPTH):
        b = f'blocks.{i}.'
        ad = lambda name: (l[b + name + '.lora.A'], l[b + name + '.lora.B'], s)
        h = ln(t, b + 'norm1')
        wq, wk, wv = d[b + 'attn.qkv.weight'].chunk(3, 0)
        bq, bk, bv = d[b + 'attn.qkv.bias'].chunk(3, 0)
        q = lora_linear(h, wq, bq, *ad('attn.qkv.q'))
        k = lora_linear(h, wk, bk, *ad('attn.qkv.k'))
        v = lora_linear(h, wv, bv, *ad('attn.qkv.v'))
        heads = lambda u: u.reshape(BATCH, n, HEADS, dh).transpose(1, 2)
        attn = torch.softmax(heads(q) @ heads(k).transpose(-2, -1) / math.sqrt(dh), dim=-1)
        o = (attn @ heads(v)).transpose(1, 2).reshape(BATCH, n, C)
        t = t + d[b + 'ls1.gamma'] * lora_linear(o, d[b + 'attn.proj.weight'], d[b + 'attn.proj.bias'], *ad('attn.proj'))
        h = ln(t, b + 'norm2')
        m = F.gelu(lora_linear(h, d[b + 'mlp.fc1.weight'], d[b + 'mlp.fc1.bias'], *ad('mlp.fc1')))
        t = t + d[b + 'ls2.gamma'] * lora_linear(m, d[b + 'mlp.fc2.weight'], d[b + 'mlp.fc2.bias'], *ad('mlp.fc2'))
    feat = ln(t, 'norm')[:, FZ * FZ:, :]

    def mlp3(branch):
        p = f'head.{branch}.layers.'
        y = F.gelu(lora_linear(feat, l[p + '0.weight'], l[p + '0.bias']))
        y = F.gelu(lora_linear(y, l[p + '1.weight'], l[p + '1.bias']))
        return lora_linear(y, l[p + '2.weight'], l[p + '2.bias'])

    score = mlp3('cls_mlp').reshape(BATCH, FX, FX)
    raw = mlp3('reg_mlp')
    ltrb = raw.sigmoid().reshape(BATCH, FX, FX, 4)
    centres = (torch.arange(FX, dtype=torch.float64) + 0.5) / FX
    ref = torch.stack(torch.meshgrid(centres, centres, indexing='xy'), dim=-1)  # [H, W, (x, y)]
    boxes = torch.cat((ref - ltrb[..., :2], ref + ltrb[..., 2:]), dim=-1)
    return score, boxes, raw


def main():
    os.makedirs(OUT, exist_ok=True)
    dino = {k: v.half() for k, v in dinov2_state_dict().items()}
    torch.save(dino, os.path.join(OUT, 'dinov2-tiny.pth'))
    dino = {k: v.float() for k, v in dino.items()}  # the values the file holds
    lorat = lorat_state_dict()
    save_safetensors(lorat, os.path.join(OUT, 'lorat-tiny.bin'))

    pos16 = bicubic(dino['pos_embed'][0, 1:], DINO_GRID, DINO_GRID, FX, FX)
    src = normal(5, 7, 3)
    mask = torch.zeros(BATCH, FZ, FZ, dtype=torch.int64)
    mask[0, 2:6, 1:7] = 1
    mask[1, 0:3, 4:8] = 1
    z = pattern(BATCH * 3 * TEMPLATE * TEMPLATE, 7919, 2003).reshape(BATCH, 3, TEMPLATE, TEMPLATE)
    x = pattern(BATCH * 3 * SEARCH * SEARCH, 104729, 3001).reshape(BATCH, 3, SEARCH, SEARCH)
    with torch.no_grad():
        score, boxes, raw = reference_forward(dino, lorat, pos16, z, x, mask)
    expected = {
        'pos_embed': pos16.reshape(1, FX * FX, C),
        'bicubic.src': src.reshape(35, 3),
        'bicubic.9x4': bicubic(src.reshape(35, 3), 5, 7, 9, 4),
        'bicubic.3x11': bicubic(src.reshape(35, 3), 5, 7, 3, 11),
        'bicubic.16x16': bicubic(src.reshape(35, 3), 5, 7, 16, 16),
        'z_feat_mask': mask,
        'score_map': score.float(),
        'boxes': boxes.float(),
        'raw': raw.float(),
    }
    save_safetensors(expected, os.path.join(OUT, 'expected.safetensors'))
    meta = {'width': C, 'depth': DEPTH, 'heads': HEADS, 'patch': PATCH, 'mlpRatio': MLP_RATIO, 'rank': RANK, 'alpha': ALPHA,
            'templateSize': TEMPLATE, 'searchSize': SEARCH, 'batch': BATCH, 'torch': torch.__version__,
            'z': 'pattern(n, 7919, 2003)', 'x': 'pattern(n, 104729, 3001)'}
    with open(os.path.join(OUT, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
        f.write('\n')
    for name in sorted(os.listdir(OUT)):
        print(f'{name}: {os.path.getsize(os.path.join(OUT, name))} bytes')


if __name__ == '__main__':
    main()
