"""Export the CLIP and mask prompt held by an OVSeg checkpoint for mining (``clip.prompt=...``).

    python jobs/export_ovseg_clip.py ovseg_swinbase_vitL14_ft_mpt.pth out/ovseg_clip
    python jobs/mine.py --config conf/mine.yaml proposals.backend=maskformer \
        proposals.checkpoint=ovseg_swinbase_vitL14_ft_mpt.pth clip.prompt=out/ovseg_clip/mpt_prompt.pt ...
"""
from __future__ import annotations

import argparse
import logging

from ovseg.maskformer.ovseg_checkpoint import read_ovseg_checkpoint, write_clip_and_prompt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="OVSeg .pth (detectron2 {'model': ...})")
    parser.add_argument("out_dir", help="folder for clip.pt and mpt_prompt.pt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    converted = read_ovseg_checkpoint(args.checkpoint)
    prompt = write_clip_and_prompt(converted, args.out_dir)
    print(f"{converted.variant}: open_clip {converted.clip_model} -> {prompt.parent / 'clip.pt'}; "
          f"mask prompt {tuple(converted.mask_embedding.shape)} -> {prompt}")
    print(f"mine with: proposals.backend=maskformer proposals.checkpoint={args.checkpoint} clip.prompt={prompt}")


if __name__ == "__main__":
    main()
