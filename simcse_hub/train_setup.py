"""Everything a training run sets up before its first batch: the Accelerator, the checks that need the launch, the
encoder and its tokenizer, the tokenized data and its loader, the STS-B dev data, the optimizer and the trackers.

Each function raises `ConfigError` (a one-line message naming the setting) when its part cannot be set up; none of
them writes into ``output_dir``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import broadcast_object_list
from torch.utils.data import ConcatDataset, DataLoader

from simcse_hub.batching import SimCSECollator, TokenizedDataset
from simcse_hub.data import (
    Examples,
    load_hub_examples,
    read_examples,
    resolve_train_file,
)
from simcse_hub.encoding import resolve_precision
from simcse_hub.loading import ModelNotFoundError, public_model_name, resolve_model
from simcse_hub.modeling.formats_simcse import public_name
from simcse_hub.modeling.modeling_simcse import SimCSEModel
from simcse_hub.sources import SourceBatchSampler
from simcse_hub.train_config import ConfigError, TrainConfig

logger = logging.getLogger("simcse_hub.train")


def check_setup(config: TrainConfig, accelerator: Accelerator) -> None:
    """Checks that need the launch: processes and devices."""
    if config.batch_size % accelerator.num_processes:
        raise ConfigError(f"batch_size={config.batch_size} must be a multiple of the number of processes "
                          f"({accelerator.num_processes}): each process takes an equal share of the batch.")
    if config.mixed_precision == "auto":
        logger.info("mixed_precision='auto': %s", "bf16 autocast (this CPU computes bfloat16 natively)"
                    if accelerator.mixed_precision == "bf16" else "fp32")


def make_accelerator(config: TrainConfig) -> Accelerator:
    """The Accelerator of a run: the CPU unless an accelerator device exists, the precision ``auto`` resolved for
    this machine, the updates counted by the schedule, a seeded data order."""
    on_cpu = not getattr(torch, "accelerator", torch.cuda).is_available()
    try:  # "auto" resolved for this machine: bf16 on a CPU that computes it natively, else fp32
        precision = resolve_precision(config.mixed_precision, torch.device("cpu" if on_cpu else "cuda"),
                                      "mixed_precision")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    # A run owns Accelerate's per-process state: a second run in the same process (a notebook) may ask for another
    # precision or accumulation, which Accelerate refuses once set. The launch (processes, devices) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        cpu=on_cpu,  # without a GPU, say so: Accelerate then runs `torchrun` processes as one group on the CPU (gloo)
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=trackers(config.report_to),
        project_dir=str(Path(config.output_dir) / "runs"),
        step_scheduler_with_optimizer=False,  # the schedule counts updates; we step it once per update
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    if not accelerator.is_main_process:  # one process speaks for all (as in the Accelerate examples)
        logging.getLogger("simcse_hub").setLevel(logging.ERROR)
    return accelerator


def load_encoder(config: TrainConfig) -> SimCSEModel:
    """The SimCSE model around ``model_name_or_path`` (a folder, a Hub id, or its installed offline copy), with its
    tokenizer; `ConfigError` when it cannot be loaded or its inputs are shorter than ``max_seq_length``."""
    what = "model_name_or_path"
    try:
        path = resolve_model(config.model_name_or_path, what)
        model = SimCSEModel.from_encoder(path, pooler_type=config.pooler_type, mlp_only_train=config.mlp_only_train,
                                         temperature=config.temperature,
                                         hard_negative_weight=config.hard_negative_weight, do_mlm=config.do_mlm,
                                         mlm_weight=config.mlm_weight)
    except ModelNotFoundError as error:
        raise ConfigError(str(error)) from None
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{what}={config.model_name_or_path!r} is not an encoder AutoModel can load ({first}); "
                          "give a model folder (config.json and weights) or a Hub id.") from None
    if model.tokenizer is None:
        raise ConfigError(f"{what}={config.model_name_or_path!r} has no tokenizer (tokenizer_config.json); training "
                          "needs one beside the encoder's weights.")
    limit = model.config.max_input_length
    if limit is not None and config.max_seq_length > limit:
        raise ConfigError(f"max_seq_length={config.max_seq_length} exceeds what the encoder accepts ({limit} tokens, "
                          f"its position embeddings); use --max-seq-length {limit} or less (the paper uses 32).")
    public = public_model_name(config.model_name_or_path)
    model.config.base_model_name_or_path = model.config.encoder_config._name_or_path = public
    if config.pooler_type != "cls":
        model.mlp.requires_grad_(False)  # the MLP head is used by the cls pooler only
    return model


def load_data(config: TrainConfig, tokenizer, accelerator: Accelerator) -> tuple[list[Examples], DataLoader]:
    """The examples of every source, tokenized once, and their shuffled loader: each process takes
    ``batch_size / num_processes`` examples per batch, in an order of its own seed (the global RNG, which draws
    dropout, is kept out of it). With several sources (or a source weight), every batch comes from one source, as
    :class:`~simcse_hub.sources.SourceBatchSampler` draws them."""
    with accelerator.main_process_first():
        sources = load_examples(config)
    datasets = [TokenizedDataset(examples, tokenizer, config.max_seq_length) for examples in sources]
    collator = SimCSECollator(tokenizer.pad_token_id, token_type_ids="token_type_ids" in tokenizer.model_input_names)
    local_batch = config.batch_size // accelerator.num_processes
    if len(datasets) == 1 and config.source_weights is None:
        loader = DataLoader(datasets[0], batch_size=local_batch, shuffle=True, collate_fn=collator,
                            generator=torch.Generator().manual_seed(config.seed))
    else:
        try:
            sampler = SourceBatchSampler([len(dataset) for dataset in datasets], local_batch,
                                         accelerator.num_processes, config.source_weights, config.sampling,
                                         config.seed)
        except ValueError as error:
            raise ConfigError(f"{error} (sources, in order: {', '.join(map(public_name, config.sources()))})") \
                from None
        loader = DataLoader(ConcatDataset(datasets), batch_sampler=sampler, collate_fn=collator,
                            generator=torch.Generator().manual_seed(config.seed))  # the iterator's seed, not dropout's
        logger.info("%d sources, %s sampling: %s batches per epoch", len(datasets), config.sampling,
                    " + ".join(str(count) for count in sampler.batches_per_source()))
    for examples in sources:
        logger.info("%d %s examples from %s (%d skipped: empty sentence)", len(examples.rows),
                    "supervised" if examples.supervised else "unsupervised", public_name(examples.source),
                    examples.skipped)
    return sources, loader


def make_optimizer(model: SimCSEModel, config: TrainConfig, accelerator: Accelerator) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights; fused (one kernel per parameter group)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        fused=accelerator.device.type in ("cpu", "cuda"),
    )


def load_examples(config: TrainConfig) -> list[Examples]:
    """The examples of every source: the train files, then the Hub datasets."""
    sources = [read_examples(resolve_train_file(path), config.columns, config.max_train_samples)
               for path in config.train_files()]
    return sources + [load_hub_examples(name, config.dataset_split, config.dataset_config_name, data_files,
                                        config.columns, config.max_train_samples)
                      for name, data_files in config.hub_datasets()]


def find_eval_data(config: TrainConfig, accelerator: Accelerator) -> tuple[bool, Path | None]:
    """Whether STS-B dev can be read (from ``data_dir``, ``$SIMCSE_DATA_DIR``, ``../shared/data`` or the Hub), and
    the data folder to read it from; the main process decides, and says why when evaluation is skipped."""
    from simcse_hub.sts_data import (
        STSDataError,
        TaskUnavailableError,
        default_data_dir,
        load_sts_task,
    )

    if config.data_dir is not None and not Path(config.data_dir).is_dir():
        raise ConfigError(f"data_dir={config.data_dir!r} is not a folder (expected one holding stsb/dev.tsv.gz); fix "
                          "the path, or set eval_steps=0 to train without evaluation.")
    data_dir = Path(config.data_dir) if config.data_dir is not None else default_data_dir()
    available = None
    if accelerator.is_main_process:
        try:
            load_sts_task("STSBenchmark", data_dir, split="dev")
            available = True
        except TaskUnavailableError as error:
            logger.warning("Skipping evaluation: no STS-B dev set (%s). The last model is exported.", error)
            available = False
        except (STSDataError, OSError) as error:
            raise ConfigError(f"{error} (the STS-B dev set of data_dir; set eval_steps=0 to train without "
                              "evaluation)") from None
    return broadcast_object_list([available])[0], data_dir


def trackers(report_to: str) -> str | list[str] | None:
    """Accelerate's ``log_with`` for ``report_to``: ``auto`` is TensorBoard when it is installed."""
    if report_to == "none":
        return None
    if report_to == "auto":
        import importlib.util

        found = any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))
        return "tensorboard" if found else None
    return [name.strip() for name in report_to.split(",")]


def tracker_config(config: TrainConfig) -> dict[str, str | int | float | bool]:
    """The settings as flat scalars (TensorBoard's hparams take no lists or None)."""
    flat = {}
    for key, value in config.to_dict().items():
        flat[key] = ",".join(map(str, value)) if isinstance(value, list) else ("none" if value is None else value)
    return flat
