"""Export the CLIP and mask prompt held by an OVSeg checkpoint for mining (``clip.prompt=...``).

    python jobs/export_ovseg_clip.py ovseg_swinbase_vitL14_ft_mpt.pth out/ovseg_clip
    python jobs/mine.py --config conf/mine.yaml proposals.backend=maskformer \
        proposals.checkpoint=ovseg_swinbase_vitL14_ft_mpt.pth clip.prompt=out/ovseg_clip/mpt_prompt.pt ...
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipelines.config.cli import StartupError, job_main, job_parser, startup


@job_main
def main(argv: list[str] | None = None) -> int:
    parser = job_parser(None, __doc__)
    parser.add_argument("checkpoint", help="OVSeg .pth (detectron2 {'model': ...})")
    parser.add_argument("out_dir", help="folder for clip.pt and mpt_prompt.pt")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        raise StartupError(f"checkpoint {args.checkpoint}: file not found; download OVSeg's .pth "
                           "(e.g. ovseg_swinbase_vitL14_ft_mpt.pth) and give its path")
    from ovseg.maskformer.ovseg_checkpoint import read_ovseg_checkpoint, write_clip_and_prompt

    with startup(f"reading {args.checkpoint}"):
        converted = read_ovseg_checkpoint(args.checkpoint)
    prompt = write_clip_and_prompt(converted, args.out_dir)
    print(f"{converted.variant}: open_clip {converted.clip_model} -> {prompt.parent / 'clip.pt'}; "
          f"mask prompt {tuple(converted.mask_embedding.shape)} -> {prompt}")
    print(f"mine with: proposals.backend=maskformer proposals.checkpoint={args.checkpoint} clip.prompt={prompt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
