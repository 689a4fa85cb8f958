#!/usr/bin/env python3
"""bench/gpu/summary.py: the rows check.sh prints for a dl benchmark against its PyTorch peer.

Reads the JSON rows both sides printed (one object per line) and prints, per dl configuration,
"name|ok|detail" lines that check.sh adds to its summary table.

  python3 bench/gpu/summary.py mlp DL.json TORCH.json      # ms/step, torch/dl
  python3 bench/gpu/summary.py resnet DL.json TORCH.json   # images/s, dl/torch against 0.9
"""
import json
import sys


def rows(path, key):
    out = {}
    try:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                out[key(r)] = r
    except (OSError, ValueError, KeyError):
        pass
    return out


def mlp(dl, torch):
    for key in sorted(dl):
        d, t = dl[key], torch.get(key)
        detail = f"dl {d['ms_per_step']:.3f} ms/step"
        if t:
            detail += f", torch {t['ms_per_step']:.3f} ms/step, torch/dl {t['ms_per_step'] / d['ms_per_step']:.2f}"
        else:
            detail += ", no torch figure"
        print(f"mlp batch {key[0]} width {key[1]}|ok|{detail}")


def resnet(dl, torch):
    for key in sorted(dl):
        d, t = dl[key], torch.get(key)
        detail = f"dl {d['images_per_s']:.0f} img/s ({d['peak_mib']:.0f} MiB)"
        if t:
            r = d["images_per_s"] / t["images_per_s"]
            detail += (f", torch {t['images_per_s']:.0f} img/s ({t['peak_mib']:.0f} MiB), dl/torch {r:.2f}"
                       f" (target >= 0.9: {'met' if r >= 0.9 else 'NOT met'})")
        else:
            detail += ", no torch figure"
        print(f"{key[0]} {key[1]} b{key[2]}|ok|{detail}")


KEYS = {"mlp": (lambda r: (r["batch"], r["width"]), mlp),
        "resnet": (lambda r: (r["model"], r["precision"], r["batch"]), resnet)}

if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in KEYS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    key, show = KEYS[sys.argv[1]]
    show(rows(sys.argv[2], key), rows(sys.argv[3], key))
