"""OVSeg's open-vocabulary MaskFormer: spec, builder, weights I/O and the OVSeg checkpoint adapter."""
from ovseg.maskformer.config import SPECS, MaskFormerSpec, get_spec, spec_from_dict, spec_to_dict
from ovseg.maskformer.model import OpenVocabMaskFormer, build_maskformer

__all__ = [
    "SPECS", "MaskFormerSpec", "OpenVocabMaskFormer", "build_maskformer", "get_spec",
    "spec_from_dict", "spec_to_dict",
]
