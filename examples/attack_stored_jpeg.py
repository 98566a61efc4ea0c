"""Attack stored JPEG files: perturb each file's pixels under an L-inf budget and re-save it with the file's own
quantization tables and subsampling (double compression), scored on the re-saved files as Pillow reads them.

The stored files are CIFAR-10 test images saved by Pillow at `--quality` (or any folder of .jpg files with
`--files`, labels then from `--labels`, a .npy of ints). Each file is read with `fdgpu.io.read_jpeg`; its pixels
are `fdgpu.decode` of its coefficients (Pillow's decoding, bit for bit). Two attacks on those pixels:

* `through re-save`: PGD through the re-save itself, `fdgpu.requantize(x, the file's tables)` (straight-through
  gradients), so the perturbation is chosen for what the re-saved file decodes to;
* `pixels only`: PGD on the classifier alone, then re-saved (the perturbation meets the second compression
  unprepared).

Each adversarial image is written with `fdgpu.io.write_jpeg(path, fdgpu.encode(x_adv, luma_table=..., ...))` and
scored on Pillow's decoding of the written file.

    python examples/attack_stored_jpeg.py --n 500 --quality 75 --out /tmp/stored

Needs CIFAR-10 and the pretrained ResNet-20 (`fdgpu data cifar10`, `fdgpu models fetch resnet20`, or FDGPU_DATA /
FDGPU_MODELS) and the `jpeg` extra (jpeglib).
"""
import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

import fdgpu
from fdgpu.attacks import pgd
from fdgpu.data import load_npz
from fdgpu.download import pretrained
from fdgpu.models import IMAGENET_MEAN, IMAGENET_STD, Normalize, cifar_resnet


class Resave(nn.Module):
    """The re-save of a batch of stored files: each image requantized with its own file's tables."""

    def __init__(self, luma: torch.Tensor, chroma: torch.Tensor, subsampling: str):
        super().__init__()
        self.luma, self.chroma, self.subsampling = luma, chroma, subsampling

    def forward(self, x):
        return fdgpu.requantize(x, self.luma, self.chroma, subsampling=self.subsampling, backward="ste")


def pillow_read(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def stored_files(args):
    """(paths, labels): the stored files, written by Pillow from CIFAR-10 unless --files is given."""
    if args.files is not None:
        paths = sorted(args.files.glob("*.jpg"))[: args.n]
        labels = torch.from_numpy(np.load(args.labels)).long()[: len(paths)]
        return paths, labels
    x, y = load_npz("test", limit=args.n)
    folder = args.out / "stored"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(fdgpu.to_uint8(x)):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=args.quality)
        paths.append(folder / f"{i:05d}.jpg")
        paths[-1].write_bytes(buf.getvalue())
    return paths, y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="number of files (default 500)")
    ap.add_argument("--quality", type=int, default=75, help="quality the CIFAR-10 files are stored at")
    ap.add_argument("--files", type=Path, help="a folder of .jpg files to attack instead (with --labels)")
    ap.add_argument("--labels", type=Path, help=".npy of the files' labels (sorted file order)")
    ap.add_argument("--eps", type=float, default=4, help="L-inf budget in levels of 255 (default 4)")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the re-saved files (created)")
    args = ap.parse_args(argv)
    if args.files is not None and args.labels is None:
        ap.error("--files needs --labels")
    try:
        net = cifar_resnet(20, weights=pretrained("resnet20"))
        args.out.mkdir(parents=True, exist_ok=True)
        paths, y = stored_files(args)
    except FileNotFoundError as exc:
        sys.exit(f"attack_stored_jpeg.py: {exc}")
    classifier = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), net).eval()

    coefs = [fdgpu.io.read_jpeg(p) for p in paths]
    subs = {c.subsampling for c in coefs}
    if len(subs) != 1 or any(c.color != "ycbcr" or not torch.equal(c.tables[1], c.tables[2]) for c in coefs):
        sys.exit("attack_stored_jpeg.py: expected colour files with one subsampling and one chroma table each")
    sub = subs.pop()
    x0 = torch.cat([fdgpu.decode(c) for c in coefs])                    # the stored pixels (Pillow's decoding)
    luma = torch.cat([c.tables[0] for c in coefs])                      # (N, 8, 8): each file's own tables
    chroma = torch.cat([c.tables[1] for c in coefs])

    def resave_and_score(x_adv, name):
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(paths):
            c = fdgpu.encode(x_adv[i:i + 1], luma_table=luma[i], chroma_table=chroma[i], subsampling=sub)
            fdgpu.io.write_jpeg(folder / p.name, c)
        back = torch.stack([pillow_read(folder / p.name) for p in paths])
        with torch.no_grad():
            expected = fdgpu.requantize(x_adv, luma, chroma, subsampling=sub)
            return (classifier(back).argmax(1) == y).float().mean().item(), torch.equal(back, expected)

    results = {}
    t0 = time.perf_counter()
    for name, through in (("through-resave", True), ("pixels-only", False)):
        parts = []
        for i in range(0, len(x0), 100):
            sl = slice(i, i + 100)
            model = nn.Sequential(Resave(luma[sl], chroma[sl], sub), classifier) if through else classifier
            parts.append(pgd(model.eval(), x0[sl], y[sl], eps=args.eps / 255, steps=args.steps,
                             generator=torch.Generator().manual_seed(i)))
        x_adv = torch.cat(parts)
        assert (x_adv - x0).abs().max() <= args.eps / 255 + 1e-6
        results[name] = resave_and_score(x_adv, name)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        stored = torch.stack([pillow_read(p) for p in paths])
        assert torch.equal(stored, x0), "fdgpu.decode differs from Pillow's decoding of a stored file"
        clean = (classifier(stored).argmax(1) == y).float().mean().item()
        clean_resaved = resave_and_score(x0, "clean-resaved")
    origin = f"{args.files}" if args.files else f"CIFAR-10 test images 0..{len(paths) - 1} saved by Pillow at " \
                                                  f"quality {args.quality}"
    print(f"{len(paths)} stored files ({origin}), {sub}; ResNet-20; PGD-{args.steps} L-inf eps "
          f"{args.eps:g}/255 on the stored pixels, re-saved with each file's own tables")
    print(f"accuracy on the stored files:                       {clean:.4f}")
    print(f"accuracy on the stored files re-saved (no attack):  {clean_resaved[0]:.4f}")
    for name, (acc, same) in results.items():
        print(f"accuracy on the re-saved files, attack {name + ':':16s} {acc:.4f}  "
              f"(files decode to fdgpu.requantize's output: {same})")
    print(f"attacks + re-saves {seconds:.1f} s")


if __name__ == "__main__":
    main()
