"""DDP training on pair shards and COCO masks: mask prompt tuning (:mod:`.loop`) and the MaskFormer
proposal model (:mod:`.maskformer_loop`), both on one base (:mod:`.base`: checkpoint cadence and
resume, logging, optimizer groups), with their configs, checkpoints, losses and evaluation."""
