"""The workbook's own model family, trained offline on CPU from the Python standard library.

No model can be downloaded where the workbook is built, so it ships a small family of
``LlamaForCausalLM`` models (weights in bf16, safetensors) under ``data/zoo/NAME/``, each loadable
with ``AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32)`` and
``AutoTokenizer.from_pretrained(dir)``. ``python -m specnb.zoo build|corpus|table|speed|card``
builds, inspects and documents it.

Modules, lowest first (each imports only modules above it in this list):

- ``corpus``: constants, ``Layout``, the stdlib corpus and its split rule, tokenizer, manifest, cached token splits.
- ``specs``: ``ModelSpec``, ``TrainSettings``, the real zoo (``zoo_specs``, ladders, ``kind_of``), configs, size budget, random-init models of the zoo's shapes (``zoo_shaped_models``).
- ``stream``: ``WindowStream``, the resumable sampler of training windows.
- ``member``: one model in training: ``Member``, optimizer, LR schedule, distillation loss, ``train_step``, a pruned start (``prune_into``).
- ``checkpoint``: checkpoints, loss logs, ``init_member`` (resume) and ``is_finished``.
- ``export``: ``evaluate_lm`` (loss, accuracy, agreement), ``bf16_copy``, ``export_model``, snapshots.
- ``train``: ``train_group`` (the training loop), ``build``, signals, the build lock, ``measure_speed``.
- ``card``: the measured model card ``ZOO/README.md``; ``read_card``: its committed table.
- ``cli``: ``main``, the command line; ``__main__`` runs it.

Every public name of those modules is re-exported here, so ``from specnb.zoo import X`` works for all of
them (and ``write_json``, which is ``specnb.atomic.write_json``).
"""

from ..atomic import write_json
from .card import card_rows, exported_models, read_card, write_model_card
from .checkpoint import (LOG_FIELDS, checkpoint_path, flush_log, init_member, is_finished, log_path, save_checkpoint,
                         trim_log, write_log)
from .cli import build_parser, main
from ..corpus import (EOT, MAX_POSITIONS, SPLITS, STDLIB_SKIP_DIRS, VOCAB_SIZE, Layout, build_manifest, cached_manifest,
                     encode_split, hash_documents, hash_file, list_stdlib_files, list_text_files, load_corpus, load_split,
                     load_corpus_tokenizer, make_layout, prepare_corpus, read_documents, split_of, stdlib_dir, train_tokenizer,
                     wrap_tokenizer)
from .export import bf16_copy, evaluate_lm, export_model, export_snapshots, link_tokenizer, member_info
from .member import (Member, autocast_ctx, budget_progress, estimated_steps, lr_factor, make_optimizer, member_loss,
                     new_model, prune_into, record_loss, scheduler_state, set_lr, teacher_targets, train_step, warmup_of)
from .specs import (DEPTH_LADDER, MATCHED_TOKENS, MAX_FILE_BYTES, MAX_TOTAL_BYTES, SHALLOW_LADDER, WIDTH_LADDER, BudgetError, ModelSpec, TrainSettings,
                    budget_table, check_budget, spec_parameters, describe_budget, extend_budget, format_table, kind_of,
                    llama_config, shipped_models, training_groups, training_info, zoo_shaped_models, zoo_specs)
from .stream import WindowStream
from .train import (STOP, acquire_build_lock, allow_recompiles, build, checkpoint_all, group_by_step, install_signal_handlers,
                    load_teacher, measure_speed, request_stop, resolve_budget, step_together, train_group)

__all__ = [
    # corpus
    "EOT", "VOCAB_SIZE", "SPLITS", "STDLIB_SKIP_DIRS", "MAX_POSITIONS", "Layout", "make_layout", "split_of", "stdlib_dir",
    "list_stdlib_files", "list_text_files", "read_documents", "load_corpus", "hash_documents", "hash_file",
    "train_tokenizer", "wrap_tokenizer", "load_corpus_tokenizer", "encode_split", "build_manifest", "cached_manifest",
    "prepare_corpus", "load_split", "write_json",
    # specs
    "MAX_TOTAL_BYTES", "MAX_FILE_BYTES", "BudgetError", "ModelSpec", "TrainSettings", "zoo_specs", "zoo_shaped_models", "WIDTH_LADDER", "SHALLOW_LADDER", "MATCHED_TOKENS",
    "DEPTH_LADDER", "kind_of", "training_info", "llama_config", "spec_parameters", "training_groups", "extend_budget",
    "shipped_models", "describe_budget", "budget_table", "format_table", "check_budget",
    # stream
    "WindowStream",
    # member
    "Member", "budget_progress", "lr_factor", "estimated_steps", "new_model", "prune_into", "warmup_of", "make_optimizer", "set_lr",
    "scheduler_state", "autocast_ctx", "teacher_targets", "member_loss", "train_step", "record_loss",
    # checkpoint
    "LOG_FIELDS", "checkpoint_path", "log_path", "is_finished", "trim_log", "write_log", "flush_log", "init_member",
    "save_checkpoint",
    # export
    "evaluate_lm", "bf16_copy", "export_model", "link_tokenizer", "member_info", "export_snapshots",
    # train
    "STOP", "request_stop", "install_signal_handlers", "resolve_budget", "load_teacher", "allow_recompiles",
    "group_by_step", "step_together", "train_group", "checkpoint_all", "build", "acquire_build_lock", "measure_speed",
    # card
    "exported_models", "card_rows", "write_model_card", "read_card",
    # cli
    "main", "build_parser",
]
