"""Mine (masked crop, noun) pairs from an image–caption corpus into WebDataset shards.

  python jobs/mine.py [--config conf/mine.yaml] [key.sub=value ...]
  ray job submit -- python jobs/mine.py --config conf/smoke/mine.yaml output.url=/shared/out

Relative local paths (corpus, checkpoint, annotations, output) are relative to the directory the
job is started in; they are made absolute here, on the driver, before any actor sees the config.

Without a Ray address (``ray.address`` or ``RAY_ADDRESS``) a local Ray is started. A rerun skips the
units already committed in ``output.url`` and redoes the rest.
"""
from __future__ import annotations

import os
import sys

from tqdm import tqdm

from pipelines.config.cli import StartupError, job_main, job_parser, load_job_config, startup
from pipelines.mine.config import MineConfig


@job_main
def main(argv: list[str] | None = None) -> int:
    args = job_parser(MineConfig, __doc__, default_config="conf/mine.yaml",
                      overrides_help="config overrides, e.g. output.url=out/x ray.num_actors=4").parse_args(argv)
    cfg = load_job_config(MineConfig, args)
    from pipelines.config.load import as_dict
    from pipelines.mine.summary import closing_lines, clip_description
    from pipelines.mine.driver import check_device, plan, ray_session, run_mining
    from pipelines.mine.report import ground_truth_check, write_report
    from ovseg.clip import WEIGHT_FILE_SUFFIXES
    from pipelines.mine.paths import resolve_local_paths

    cfg = resolve_local_paths(cfg)  # once, here: actors run in other directories
    check_device(cfg)  # run.device=cuda without a GPU fails here, not in every actor
    if (cfg.clip.pretrained and not cfg.clip.checkpoint and not cfg.clip.prompt  # a prompt brings its own CLIP
            and not cfg.clip.pretrained.endswith(WEIGHT_FILE_SUFFIXES)):
        from ovseg.clip_weights import unavailable_reason

        if reason := unavailable_reason(cfg.clip.model, cfg.clip.pretrained):  # seconds, not hub retries
            raise StartupError(f"{reason}; download them elsewhere and set clip.checkpoint=/path/to/weights")
    if ("working_dir" in os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "") and "://" not in cfg.output.url
            and os.path.realpath(cfg.output.url).startswith(os.path.realpath(os.getcwd()))):
        print(f"warning: output.url={cfg.output.url} lies in the job's copy of --working-dir, which Ray deletes; "
              "give an absolute path or an s3:// / gs:// URL", file=sys.stderr)
    with startup("reading the corpus and the output folder"):
        planned = todo, committed = plan(cfg)
    with ray_session(cfg, needed=bool(todo)) as ready_timeout:  # a cluster that cannot place an actor: one line, here
        print(f"mining {cfg.corpus.url} -> {cfg.output.url}: {len(todo)} units to mine, "
              f"{len(committed)} already committed; {clip_description(cfg.clip)}, proposals {cfg.proposals.backend}")
        bar = tqdm(total=len(todo), unit="unit", desc="mining", dynamic_ncols=True)
        totals = {"images": 0, "pairs": 0}

        def on_unit(stats: dict) -> None:
            totals["images"] += stats["images"]
            totals["pairs"] += stats["pairs"]
            bar.set_postfix(images=totals["images"], pairs=totals["pairs"])
            bar.update(1)

        try:  # the actors' start-up errors (weights, packages) arrive as one-line StartupErrors
            result = run_mining(cfg, on_unit, planned=planned, ready_timeout=ready_timeout)
        finally:
            bar.close()
    report = None
    if cfg.output.report and result.all_committed:
        gt = judge = None
        if cfg.proposals.instances_url:
            gt, judge = ground_truth_check(
                cfg.output.url, cfg.proposals.instances_url, cfg.corpus.url if cfg.corpus.format == "coco" else None,
                storage_options=cfg.output.storage_options, corpus_storage_options=cfg.corpus.storage_options)
        report = write_report(cfg.output.url, result, config=as_dict(cfg), n_sheet=cfg.output.contact_sheet_pairs,
                              ground_truth=gt, storage_options=cfg.output.storage_options, judge=judge)
    print("\n".join(closing_lines(result, report, cfg.output.url)))
    for message in result.mismatched.values():
        print(f"error: {message}", file=sys.stderr)
    if result.mined and not result.all_committed:
        print(f"error: {len(result.mined)} units were mined but none is committed at {cfg.output.url}", file=sys.stderr)
        return 4
    if result.mismatched:
        return 4
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
