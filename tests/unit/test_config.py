"""Config loading: presets, overrides, and errors that name the key before any work starts."""
import pytest

from pipelines.config.load import ConfigError, load_config
from pipelines.mine.config import MineConfig


def test_smoke_preset_builds_on_the_base_config():
    cfg = load_config(MineConfig, "conf/smoke/mine.yaml")
    assert cfg.clip.model == "ovseg-tiny-vit" and cfg.clip.pretrained is None
    assert cfg.corpus.url == "data/sample/captions_sample.json"  # inherited from conf/mine.yaml
    assert cfg.proposals.backend == "superpixel"


def test_real_weights_defaults_are_stated():
    cfg = load_config(MineConfig, "conf/mine.yaml")
    assert (cfg.clip.model, cfg.clip.pretrained) == ("ViT-B-16", "openai")


def test_overrides_apply_with_types():
    cfg = load_config(MineConfig, "conf/smoke/mine.yaml", ["ray.num_actors=3", "matching.min_score=0.25",
                                                           "proposals.options.scales=[50,100]"])
    assert cfg.ray.num_actors == 3 and cfg.matching.min_score == 0.25
    assert cfg.proposals.options == {"scales": [50, 100]}


@pytest.mark.parametrize("override, key", [
    ("ray.num_actorz=3", "ray.num_actorz"),
    ("ray.num_actors=many", "ray.num_actors"),
    ("ray.num_actors=0", "ray.num_actors"),
    ("matching.min_score=2", "matching.min_score"),
    ("proposals.backend=nope", "proposals.backend"),
    ("proposals.backend=gt", "proposals.instances_url"),
    ("corpus.format=tiff", "corpus.format"),
    ("run.device=tpu", "run.device"),
    ("output.jpeg_quality=0", "output.jpeg_quality"),
    ("crops.expand_ratio=0.5", "crops.expand_ratio"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(MineConfig, "conf/smoke/mine.yaml", [override])


def test_missing_file_and_malformed_override():
    with pytest.raises(ConfigError, match="not found"):
        load_config(MineConfig, "conf/nope.yaml")
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(MineConfig, None, ["ray.num_actors"])


def test_list_index_override_into_structured_list_is_a_config_error():
    from pipelines.train.config import TuneConfig

    with pytest.raises(ConfigError, match="data.sources.0.urls"):
        load_config(TuneConfig, "conf/smoke/tune_mpt.yaml", ["data.sources.0.urls=x"])


def test_real_preset_writes_cluster_sized_shards_and_smoke_presets_small_ones():
    """img2dataset-style units for real corpora; tiny units where the corpus is tiny."""
    from pipelines.mine.config import MineConfig
    from tests.conftest import REPO

    real = load_config(MineConfig, REPO / "conf/mine.yaml")
    smoke = load_config(MineConfig, REPO / "conf/smoke/mine.yaml")
    assert real.corpus.images_per_unit >= 1000
    assert smoke.corpus.images_per_unit <= 16
