"""DDP training on pair shards and COCO masks: mask prompt tuning (:mod:`.loop`) and the MaskFormer
proposal model (:mod:`.maskformer_loop`), with their configs, checkpoints, losses and evaluation."""
