#!/usr/bin/python3
"""Writes src/heads/classify/imagenet.json: the 1000 ImageNet-1k class names in class-id order.

Data only, generated once from Debian's torchvision (`python3-torchvision`), whose
`_IMAGENET_CATEGORIES` are the names its pretrained classifiers report:

    /usr/bin/python3 scripts/make-imagenet-labels.py
"""
import json
import pathlib

from torchvision.models._meta import _IMAGENET_CATEGORIES

assert len(_IMAGENET_CATEGORIES) == 1000, len(_IMAGENET_CATEGORIES)
out = pathlib.Path(__file__).resolve().parent.parent / 'src' / 'heads' / 'classify' / 'imagenet.json'
out.write_text(json.dumps(list(_IMAGENET_CATEGORIES), indent=0, ensure_ascii=False) + '\n')
print(f'wrote {len(_IMAGENET_CATEGORIES)} labels to {out}')
