"""Fast tests of specnb.zoo on a tiny corpus and tiny configs (seconds, in a temp dir)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from specnb import zoo
from specnb.paths import ROOT
from specnb.timing import environment

STDLIB_SAMPLES = ("textwrap.py", "shlex.py", "fnmatch.py", "colorsys.py", "bisect.py", "keyword.py")


def tiny_settings() -> zoo.TrainSettings:
    """Settings small enough for a test: short windows, tiny batches, no compile, quick eval."""
    return zoo.TrainSettings(
        seq_len=32, batch_size=2, micro_batch=1, warmup_steps=2, eval_tokens=256,
        log_every=1, compile=False, autocast=True, vocab_size=400, checkpoint_minutes=60.0,
    )


def tiny_spec(name: str = "tiny", **kw) -> zoo.ModelSpec:
    """A two-layer model of a few thousand parameters with a budget of 8 steps."""
    base = dict(layers=2, hidden=32, heads=2, ffn=64, group="target", budget_tokens=8 * 64, lr=3e-3)
    base.update(kw)
    return zoo.ModelSpec(name, **base)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """A folder of a few stdlib files, copied under many names so every split gets some."""
    root = tmp_path_factory.mktemp("corpus")
    src = zoo.stdlib_dir()
    for i in range(120):
        name = STDLIB_SAMPLES[i % len(STDLIB_SAMPLES)]
        (root / f"pkg{i % 3}").mkdir(exist_ok=True)
        (root / f"pkg{i % 3}" / f"{i}_{name}").write_text((src / name).read_text()[:1500])
    (root / "bad.bin").write_bytes(b"\xff\xfe\x00binary")
    return root


@pytest.fixture(scope="module")
def prepared(corpus_dir, tmp_path_factory):
    """A layout in a temp zoo with the corpus tokenized and the manifest written."""
    layout = zoo.make_layout(corpus_dir, tmp_path_factory.mktemp("zoo"))
    manifest = zoo.prepare_corpus(layout, vocab_size=tiny_settings().vocab_size)
    return layout, manifest


def test_split_rule_is_deterministic_and_roughly_90_5_5():
    """The split depends only on the relative path and follows the sha1 % 100 rule."""
    paths = [f"pkg/mod{i}.py" for i in range(4000)]
    first = [zoo.split_of(p) for p in paths]
    assert first == [zoo.split_of(p) for p in paths]
    share = {s: first.count(s) / len(first) for s in zoo.SPLITS}
    assert 0.87 < share["train"] < 0.93 and 0.03 < share["validation"] < 0.07 and 0.03 < share["test"] < 0.07
    import hashlib
    bucket = int(hashlib.sha1(b"asyncio/tasks.py").hexdigest(), 16) % 100
    assert zoo.split_of("asyncio/tasks.py") == ("train" if bucket < 90 else "validation" if bucket < 95 else "test")


def test_stdlib_listing_skips_site_packages_and_generated_dirs():
    """The stdlib corpus has no site-packages, encodings or pydoc_data files, but keeps test/."""
    files = zoo.list_stdlib_files(zoo.stdlib_dir())
    assert "os.py" in files and any(f.startswith("test/") for f in files)
    assert not any(f.split("/")[0] in zoo.STDLIB_SKIP_DIRS for f in files)


def test_manifest_fields(prepared):
    """The manifest records version, split rule, per-split files/characters/tokens and hashes."""
    layout, manifest = prepared
    on_disk = json.loads(layout.manifest.read_text())
    assert on_disk == manifest
    assert manifest["python_version"].count(".") == 2
    assert manifest["source"]["skipped_files"] == 1
    for name in zoo.SPLITS:
        split = manifest["splits"][name]
        assert set(split) == {"files", "characters", "tokens", "sha256"}
        assert split["files"] > 0 and split["tokens"] == len(zoo.load_split(layout, name))
    assert manifest["total"]["files"] == 120
    assert len(manifest["sha256"]) == 64 and manifest["tokenizer"]["vocab_size"] == 400


def test_tokenizer_round_trip_and_vocab(prepared):
    """The cached tokenizer has the requested vocabulary, eot specials, and decodes what it encodes."""
    layout, _ = prepared
    tok = zoo.load_corpus_tokenizer(layout.tokenizer_dir)
    assert len(tok) == 400
    assert tok.bos_token == tok.eos_token == tok.pad_token == zoo.EOT
    text = "def f(x):\n    return x  # ünïcode ✓\n\n\tpass\n"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text and tok.bos_token_id not in ids
    stream = zoo.load_split(layout, "train")
    assert stream.dtype == np.uint16 and stream[0] == stream[-1] == tok.eos_token_id


def test_corpus_cache_is_reused(prepared):
    """A second prepare_corpus call reuses the cached tokenizer and arrays."""
    layout, manifest = prepared
    before = (layout.tokenizer_dir / "tokenizer.json").stat().st_mtime_ns
    assert zoo.prepare_corpus(layout, vocab_size=400) == manifest
    assert (layout.tokenizer_dir / "tokenizer.json").stat().st_mtime_ns == before


def test_budget_check_raises_clear_error():
    """Configs over the cap raise BudgetError naming the total; the real zoo fits."""
    rows = zoo.budget_table([tiny_spec()], vocab_size=400)
    assert rows[0]["params"] == sum(p.numel() for p in zoo.new_model(tiny_spec(), tiny_settings(), 0).parameters())
    with pytest.raises(zoo.BudgetError, match="over the cap"):
        zoo.check_budget(rows, max_total=rows[0]["bytes_bf16"] - 1)
    with pytest.raises(zoo.BudgetError, match="per-file cap"):
        zoo.check_budget(rows, max_file=10)
    real = zoo.budget_table(zoo.zoo_specs())
    assert zoo.check_budget(real) <= zoo.MAX_TOTAL_BYTES
    target = next(r for r in real if r["name"] == "target")
    assert 25e6 <= target["params"] <= 35e6 and target["layers"] == 12


def read_log(path: Path) -> list[dict]:
    """Rows of a loss log."""
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_train_checkpoint_resume_export_reload(prepared):
    """A tiny model trains, checkpoints, resumes where it stopped, exports, and reloads identically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    layout, _ = prepared
    settings = tiny_settings()
    spec = tiny_spec()
    assert zoo.train_group([spec], layout, settings, max_steps=3) == []
    state = torch.load(zoo.checkpoint_path(layout, "tiny"), weights_only=False)
    assert state["step"] == 3 and state["data"]["cursor"] == 6 and "optimizer" in state
    assert [int(r["step"]) for r in read_log(zoo.log_path(layout, "tiny"))] == [1, 2, 3]
    zoo.write_log(zoo.log_path(layout, "tiny"), [{"step": 4, "tokens": 256, "loss": 9.9}])  # as if it crashed

    assert zoo.train_group([spec], layout, settings) == ["tiny"]
    rows = read_log(zoo.log_path(layout, "tiny"))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert set(rows[0]) >= {"step", "tokens", "loss", "lr", "tokens_per_s"}

    out = layout.zoo / "tiny"
    info = json.loads((out / "training.json").read_text())
    assert info["training_steps"] == 8 and info["training_tokens"] == 8 * 64
    assert 0 <= info["val_next_token_accuracy"] <= 1 and info["final_val_loss"] > 0
    assert zoo.is_finished(layout, "tiny")

    final = torch.load(zoo.checkpoint_path(layout, "tiny"), weights_only=False)
    model = zoo.new_model(spec, settings, 0)
    model.load_state_dict(final["model"])
    expected = zoo.bf16_copy(model).float().eval()
    loaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:  # shipped as bf16: half the bytes of float32
        assert {f.get_slice(n).get_dtype() for n in f.keys()} == {"BF16"}
    assert next(loaded.parameters()).dtype == torch.float32
    ids = torch.tensor([tok("import os\nprint(os.sep)\n")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(expected(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert zoo.train_group([spec], layout, settings) == []


def test_distilled_group_shares_teacher_and_snapshots(prepared):
    """Two drafts distil from the finished tiny target together; snapshots export as their own models."""
    from transformers import AutoTokenizer

    layout, _ = prepared
    settings = tiny_settings()
    if not zoo.is_finished(layout, "tiny"):
        zoo.train_group([tiny_spec()], layout, settings)
    drafts = [
        tiny_spec("da", layers=1, hidden=16, heads=1, group="width", teacher="tiny", budget_tokens=4 * 64, snapshots=(0.5,)),
        tiny_spec("db", layers=2, hidden=16, heads=1, group="width", teacher="tiny", budget_tokens=4 * 64),
    ]
    exported = zoo.train_group(drafts, layout, settings)
    assert sorted(exported) == ["da", "da-step2", "db"]
    assert json.loads((layout.zoo / "da-step2" / "training.json").read_text())["training_steps"] == 2
    assert "KL" in json.loads((layout.zoo / "db" / "training.json").read_text())["objective"]
    for name in exported:  # one tokenizer file: each draft's is a link to its teacher's, and loads
        link = layout.zoo / name / "tokenizer.json"
        assert link.is_symlink() and link.resolve() == (layout.zoo / "tiny" / "tokenizer.json").resolve()
    assert AutoTokenizer.from_pretrained(str(layout.zoo / "db")).vocab_size == settings.vocab_size
    assert not zoo.link_tokenizer(layout.zoo / "db", layout.zoo / "tiny")  # already a link: left alone
    like = zoo.resolve_budget(tiny_spec("dc", budget_tokens=None, budget_like="db"), layout)
    assert like.budget_tokens == 4 * 64


def test_lr_schedule_warms_up_then_decays():
    """LR rises linearly over the warm-up steps, then follows a cosine down to min_ratio."""
    assert zoo.lr_factor(0, 0.0, 10, 0.1) == pytest.approx(0.1)
    assert zoo.lr_factor(10, 0.0, 10, 0.1) == pytest.approx(1.0)
    assert zoo.lr_factor(50, 0.5, 10, 0.1) == pytest.approx(0.55)
    assert zoo.lr_factor(99, 1.0, 10, 0.1) == pytest.approx(0.1)
    spec = tiny_spec(budget_tokens=None, budget_minutes=2.0)
    assert zoo.budget_progress(spec, 10**9, 60.0) == pytest.approx(0.5)


def test_build_orders_groups_and_only_selects():
    """The full build trains the target first; --only picks one model or one group."""
    specs = zoo.zoo_specs()
    groups = zoo.training_groups(specs)
    assert [[s.name for s in g] for g in groups][0] == ["target"] and groups[-1][0].name == "d2-data"
    assert len(groups) == 3 and {s.group for s in groups[1]} == {"width", "depth", "shallow"}
    assert all(s.teacher == "target" for s in groups[1])
    assert [s.name for s in zoo.training_groups(specs, "d2")[0]] == ["d2"]
    assert {s.name for s in zoo.training_groups(specs, "depth")[0]} == {"d1", "d2", "d4", "d8"}
    d2, d2_data = (next(s for s in specs if s.name == n) for n in ("d2", "d2-data"))
    assert replace(d2_data, name="d2", group="depth", teacher="target", budget_like=None,
                   budget_minutes=d2.budget_minutes) == d2
    assert next(s for s in specs if s.name == "target").budget_minutes >= 150


def test_window_stream_is_resumable():
    """The batch of a step depends only on (seed, step), so a resumed run sees the same data."""
    tokens = np.arange(1000, dtype=np.uint16)
    a = zoo.WindowStream(tokens, 16, 4, seed=7)
    b = zoo.WindowStream(tokens, 16, 4, seed=7)
    assert torch.equal(a.batch(20), b.batch(20)) and a.batch(3).shape == (4, 17)
    assert not torch.equal(a.batch(0), a.batch(1))


def test_distillation_loss_matches_kl_div():
    """The shared-teacher KL term equals torch's kl_div(target || draft), mixed 50/50 with CE."""
    torch.manual_seed(0)
    teacher_logits, draft_logits = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    y = torch.randint(0, 11, (2, 5))

    class Fixed(torch.nn.Module):
        """A stand-in draft that always returns the same logits."""

        def forward(self, input_ids):
            """Return the fixed logits."""
            return type("Out", (), {"logits": draft_logits})()

    teacher = lambda input_ids: type("Out", (), {"logits": teacher_logits})()  # noqa: E731
    settings = replace(tiny_settings(), autocast=False)
    member = zoo.Member(tiny_spec(), Fixed(), Fixed(), None)
    got = zoo.member_loss(member, None, y, zoo.teacher_targets(teacher, None, settings), settings)
    t, d = teacher_logits.log_softmax(-1).flatten(0, 1), draft_logits.log_softmax(-1).flatten(0, 1)
    kl = torch.nn.functional.kl_div(d, t, log_target=True, reduction="batchmean")
    ce = torch.nn.functional.cross_entropy(draft_logits.flatten(0, 1), y.flatten())
    assert got.item() == pytest.approx((0.5 * kl + 0.5 * ce).item(), rel=1e-5)


def test_busy_time_skips_the_compiling_step():
    """With torch.compile, an invocation's first step (compilation) is kept out of the busy budget."""
    spec = tiny_spec(budget_tokens=None, budget_minutes=1.0)
    member = zoo.Member(spec, None, None, None, threads=2, warm=False)
    zoo.record_loss(member, 1.0, 1e-3, seconds=50.0, cpu=100.0, settings=tiny_settings())
    zoo.record_loss(member, 1.0, 1e-3, seconds=10.0, cpu=20.0, settings=tiny_settings())
    assert member.compile_seconds == 50.0 and member.busy_seconds == 10.0 and member.train_seconds == 60.0
    assert member.progress == pytest.approx(10.0 / 60)


@pytest.mark.slow
def test_second_build_on_same_zoo_is_refused(tmp_path):
    """A build holds a lock on its checkpoints; a concurrent one exits with a clear message."""
    layout = zoo.make_layout(zoo=tmp_path)
    lock = zoo.acquire_build_lock(layout)
    import subprocess
    import sys
    code = f"from specnb import zoo; zoo.acquire_build_lock(zoo.make_layout(zoo={str(tmp_path)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "another build is running" in out.stderr
    lock.close()
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_model_card_is_measured(prepared):
    """The card lists every exported model with measured held-out metrics, agreement and latency."""
    layout, _ = prepared
    settings = tiny_settings()
    for spec in (tiny_spec("target"), tiny_spec("dx", layers=1, hidden=16, heads=1, group="width", teacher="target",
                                                  budget_tokens=2 * 64)):
        if not zoo.is_finished(layout, spec.name):
            zoo.train_group([spec], layout, settings)
    rows = zoo.card_rows(layout, settings, split="validation", max_tokens=256, context=8, min_run_time=0.01, rounds=2)
    by_name = {r["model"]: r for r in rows}
    assert list(by_name)[0] == "target" and {"target", "dx"} <= set(by_name)
    assert by_name["target"]["top1_agreement_with_target"] == 1.0
    assert 0 <= by_name["dx"]["top1_agreement_with_target"] <= 1
    assert all(r["decode_ms"] > 0 and 0 <= r["validation_accuracy"] <= 1 for r in rows)
    assert all(r["decode_ms_min"] <= r["decode_ms"] <= r["decode_ms_max"] and r["decode_rounds"] == 2 for r in rows)
    text = zoo.write_model_card(layout, rows, split="validation").read_text()
    assert "| target |" in text and "| dx |" in text and "validation accuracy" in text
    assert f"{rows[0]['env_cpu_isa']} kernels" in text and "in 2 rotated rounds" in text  # where latency was taken
    table = [line for line in text.splitlines() if line.startswith("|")]
    cells = {len(re.split(r"(?<!\\)\|", line)) for line in table}
    assert len(cells) == 1, f"a row's cell count differs from the header's (unescaped '|' in a cell?): {cells}"
    assert "KL(teacher\\|\\|draft)" in text  # dx is distilled: its objective's '||' is escaped


def test_kind_of_names_every_zoo_model():
    kinds = {s.name: zoo.kind_of(s.name) for s in zoo.zoo_specs()}
    assert kinds["target"] == "target" and kinds["d2-data"] == "data only"
    assert {kinds[n] for n in zoo.WIDTH_LADDER} == {"width ladder"} and {kinds[n] for n in zoo.DEPTH_LADDER} == {"depth ladder"}
    assert zoo.kind_of("zoo/w0.1-step120") == "training snapshot"
    assert zoo.kind_of("depth-25%") == "pruned" and zoo.kind_of("width-25%+heal") == "pruned + healed"
    assert {kinds[n] for n in zoo.SHALLOW_LADDER if n != "d1"} == {"shallow ladder"}  # d1 is on both ladders
    assert set(zoo.WIDTH_LADDER + zoo.DEPTH_LADDER + zoo.SHALLOW_LADDER) <= set(kinds)  # the ladders name real specs


def test_every_distilled_draft_trains_on_the_same_tokens():
    """A ladder compares sizes only if size is all that differs: every distilled draft's budget is
    the group's 75 busy minutes (the depth ladder, one shared batch stream) or as many tokens; the
    width ladder is pruned from the target, then distilled on as many tokens."""
    specs = {s.name: s for s in zoo.zoo_specs()}
    for name in zoo.SHALLOW_LADDER + zoo.DEPTH_LADDER:
        s = specs[name]
        assert s.teacher == "target" and s.budget_like is None and s.init == "random", name
        assert s.budget_tokens == zoo.MATCHED_TOKENS if s.budget_minutes is None else s.budget_minutes == 75, name
    for name in zoo.WIDTH_LADDER:
        s = specs[name]
        assert (s.teacher, s.init, s.budget_tokens, s.budget_minutes) == ("target", "pruned", zoo.MATCHED_TOKENS, None), name
        assert s.layers == specs["target"].layers and s.dims_per_head == specs["target"].dims_per_head, name
    assert specs["d2"].budget_minutes == 75 and specs["d1"].budget_tokens == zoo.MATCHED_TOKENS
    # what the 75-minute group bought, as recorded by the committed zoo
    if (ROOT / "data" / "zoo" / "d2" / "training.json").exists():
        assert json.loads((ROOT / "data" / "zoo" / "d2" / "training.json").read_text())["training_tokens"] == zoo.MATCHED_TOKENS
    assert [specs[n].layers for n in zoo.SHALLOW_LADDER] == [1, 1, 1, 1]
    widths = [specs[n].hidden for n in zoo.SHALLOW_LADDER]
    assert widths == sorted(widths, reverse=True) and widths[0] == specs["target"].hidden  # up to the target's width


COMMITTED = sorted(p.parent for p in (ROOT / "data" / "zoo").glob("*/config.json"))


@pytest.mark.skipif(not COMMITTED, reason="no zoo model committed in data/zoo")
def test_committed_zoo_loads_with_auto_classes_and_fits_the_size_caps():
    """Every committed zoo model: plain transformers Auto* loading, bf16 safetensors, a training
    record, one shared tokenizer, no file over 95 MB and at most 120 MB in all."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    total = 0
    vocab = None
    for d in COMMITTED:
        files = list(d.iterdir())
        assert all(f.lstat().st_size <= 95 * 2**20 for f in files), d
        total += sum(f.lstat().st_size for f in files)  # a link counts as the link, its target once where it lives
        assert all(f.resolve().is_relative_to((ROOT / "data" / "zoo").resolve()) for f in files if f.is_symlink()), d
        with safe_open(d / "model.safetensors", framework="pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}, d
        assert json.loads((d / "training.json").read_text())["training_tokens"] > 0, d
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(d)
        assert model.config.vocab_size == tok.vocab_size == (vocab or tok.vocab_size), d
        vocab = tok.vocab_size
        ids = torch.tensor([tok.encode("def main():\n    return 0\n")])
        with torch.no_grad():
            assert torch.isfinite(model(ids).logits).all(), d
    assert total <= 120e6, f"zoo is {total / 1e6:.1f} MB"
    assert {"target", "d1", "d2-data"} <= {d.name for d in COMMITTED}


def test_evaluate_scores_whole_split_and_agreement_against_reference_predictions():
    """``evaluate`` counts every full window when asked for the whole split, its accuracy and agreement
    match a direct computation, and reference predictions of another cap are refused."""
    settings = replace(tiny_settings(), autocast=False)
    torch.manual_seed(0)
    a = zoo.new_model(tiny_spec("a"), settings, eot_id=0).eval()
    b = zoo.new_model(tiny_spec("b", layers=1), settings, eot_id=0).eval()
    tokens = np.random.default_rng(0).integers(0, settings.vocab_size, size=10 * 32 + 5)
    whole = zoo.evaluate_lm(a, tokens, settings, float("inf"))
    assert whole["tokens"] == 10 * 32 and whole["predictions"].shape == (10, 32)
    assert zoo.evaluate_lm(a, tokens, settings)["tokens"] == settings.eval_tokens // 32 * 32  # default cap
    scored = zoo.evaluate_lm(b, tokens, settings, float("inf"), reference=whole["predictions"])
    windows = torch.from_numpy(tokens[:320].reshape(10, 32).astype(np.int64))
    with torch.no_grad():
        pa, pb = a(input_ids=windows).logits.argmax(-1), b(input_ids=windows).logits.argmax(-1)
    assert scored["agreement"] == pytest.approx((pa == pb).float().mean().item())
    nxt = torch.from_numpy(np.stack([tokens[i * 32 + 1:i * 32 + 33] for i in range(10)]).astype(np.int64))
    assert scored["accuracy"] == pytest.approx((pb == nxt).float().mean().item())
    assert zoo.evaluate_lm(a, tokens, settings, float("inf"), reference=whole["predictions"])["agreement"] == 1.0
    with pytest.raises(ValueError, match="same tokens and max_tokens"):
        zoo.evaluate_lm(b, tokens, settings, 64, reference=whole["predictions"])


@pytest.mark.slow
def test_card_of_another_zoo_leaves_the_committed_results_alone(prepared, corpus_dir):
    """``python -m specnb.zoo card --zoo DIR`` writes DIR/README.md and DIR/zoo_card.csv, never data/results/zoo_card.csv."""
    from specnb.results import result_path

    layout, _ = prepared
    if not zoo.is_finished(layout, "target"):
        zoo.train_group([tiny_spec("target")], layout, tiny_settings())
    committed = result_path("zoo_card")
    before = committed.read_bytes() if committed.exists() else None
    (layout.zoo / "zoo_card.csv").write_text("model,test_loss\nretired-draft,1.0\n")  # a model this zoo no longer holds
    assert zoo.main(["card", "--corpus", str(corpus_dir), "--zoo", str(layout.zoo)]) == 0
    assert (committed.read_bytes() if committed.exists() else None) == before
    rows = list(csv.DictReader((layout.zoo / "zoo_card.csv").open()))
    assert rows[0]["model"] == "target" and float(rows[0]["top1_agreement_with_target"]) == 1.0
    assert "retired-draft" not in {r["model"] for r in rows}  # the card is the zoo as exported now
    assert "| target |" in (layout.zoo / "README.md").read_text()
    with pytest.raises(SystemExit, match="move that folder aside"):  # an exported model is finished: --budget-minutes refuses
        zoo.main(["build", "--only", "target", "--budget-minutes", "5", "--corpus", str(corpus_dir), "--zoo", str(layout.zoo)])


def test_extend_budget_resumes_one_model_into_its_cosine_tail():
    """``--budget-minutes`` changes one model's budget only: a 150-min model resumed at 230 is 65% through
    its schedule, so the learning rate rises above the floor again; bad names and budgets are refused."""
    specs = zoo.zoo_specs()
    longer = zoo.extend_budget(specs, "target", 230)
    target = next(s for s in longer if s.name == "target")
    assert target.budget_minutes == 230 and [s for s in longer if s.name != "target"] == [s for s in specs if s.name != "target"]
    progress = zoo.budget_progress(target, tokens=0, busy_seconds=150 * 60)
    assert progress == pytest.approx(150 / 230)
    settings = zoo.TrainSettings()
    assert zoo.lr_factor(10_000, progress, settings.warmup_steps, settings.min_lr_ratio) > 3 * settings.min_lr_ratio
    with pytest.raises(ValueError, match="--only naming one model"):
        zoo.extend_budget(specs, "width", 100)
    with pytest.raises(ValueError, match="> 0"):
        zoo.extend_budget(specs, "target", 0)


def test_extended_model_records_every_budget_it_trained_under(prepared):
    """A model trained to one budget and resumed under a longer one keeps both in its checkpoint,
    ``training.json`` and the model card (the shipped target was extended this way)."""
    layout, _ = prepared
    settings = tiny_settings()
    short, longer = tiny_spec("ext", budget_tokens=4 * 64), tiny_spec("ext", budget_tokens=6 * 64)
    assert zoo.train_group([short], layout, settings) == ["ext"]
    assert json.loads((layout.zoo / "ext" / "training.json").read_text())["budget_history"] == ["256 tok"]
    shutil.move(str(layout.zoo / "ext"), str(layout.zoo.parent / "ext-short"))  # an export counts as finished
    assert zoo.train_group([longer], layout, settings) == ["ext"]
    info = json.loads((layout.zoo / "ext" / "training.json").read_text())
    assert info["training_steps"] == 6 and info["budget_history"] == ["256 tok", "384 tok"]
    assert torch.load(zoo.checkpoint_path(layout, "ext"), weights_only=False)["budgets"] == ["256 tok", "384 tok"]
    row = {"model": "ext", "params": 1, "layers": 2, "hidden": 32, "heads": 2, "objective": "CE", "training_tokens": 384,
           "training_minutes": 0.1, "test_loss": 5.0, "test_accuracy": 0.1, "test_tokens": 64,
           "top1_agreement_with_target": 1.0, "decode_ms": 1.0, "decode_ms_min": 0.9, "decode_ms_max": 1.2, "decode_rounds": 5,
           "budget_history": "256 tok -> 384 tok", **environment("cpu")}
    card = zoo.write_model_card(layout, [row]).read_text()
    assert "- ext: 256 tok → 384 tok" in card


def test_a_large_distillation_group_stays_compiled(monkeypatch):
    """Ten compiled copies of one architecture need more than dynamo's default 8 cached graphs;
    ``allow_recompiles`` raises the limit (never lowers it) so none falls back to eager."""
    import torch._dynamo.config as dynamo_config

    monkeypatch.setattr(dynamo_config, "recompile_limit", 8)
    monkeypatch.setattr(dynamo_config, "accumulated_recompile_limit", 256)
    assert zoo.allow_recompiles(10) == 40 and dynamo_config.recompile_limit == 40
    assert dynamo_config.accumulated_recompile_limit >= 160
    monkeypatch.setattr(dynamo_config, "recompile_limit", 100)
    assert zoo.allow_recompiles(2) == 100


@pytest.mark.skipif(not (ROOT / "data" / "results" / "zoo_card.csv").exists(), reason="no committed zoo card")
def test_committed_card_reads_the_latest_rows_and_both_ladders_improve_with_width():
    for ladder, tokens in ((zoo.SHALLOW_LADDER, zoo.MATCHED_TOKENS), (zoo.WIDTH_LADDER, zoo.MATCHED_TOKENS)):
        card = zoo.read_card(list(ladder))
        assert list(card.index) == list(ladder) and (card["training_tokens"] == tokens).all()
        losses = card["test_loss"].tolist()  # widest first: the loss must rise down the ladder
        assert losses == sorted(losses), dict(zip(card.index, losses))
    with pytest.raises(KeyError, match="python -m specnb.zoo card"):
        zoo.read_card(["no-such-model"])
    listed = {r["model"] for r in csv.DictReader((ROOT / "data" / "results" / "zoo_card.csv").open())}
    exported = {p.parent.name for p in (ROOT / "data" / "zoo").glob("*/config.json")}
    assert listed == exported, f"card rows without a model: {sorted(listed - exported)}; models without a row: {sorted(exported - listed)}"


def test_a_pruned_draft_starts_as_its_teacher_width_pruned(prepared):
    """``init="pruned"``: before its first step the draft is the teacher narrowed by Minitron's
    activation ranking on the first training batch, logit for logit; a spec whose head width is
    not the teacher's is refused with the width to set."""
    from specnb.pruning import prune_width

    layout, _ = prepared
    settings = tiny_settings()
    if not zoo.is_finished(layout, "tiny"):
        zoo.train_group([tiny_spec()], layout, settings)
    teacher = zoo.load_teacher(layout, "tiny")
    spec = tiny_spec("pw", hidden=16, heads=1, ffn=32, head_dim=16, group="width", teacher="tiny", init="pruned",
                     budget_tokens=4 * 64, warmup_steps=1)
    assert zoo.train_group([spec], layout, settings, max_steps=0) == []  # no step: checkpointed as initialised
    start = zoo.new_model(spec, settings, 0)
    start.load_state_dict(torch.load(zoo.checkpoint_path(layout, "pw"), weights_only=False)["model"])
    calib = zoo.WindowStream(zoo.load_split(layout, "train"), settings.seq_len, settings.batch_size, settings.seed).batch(0)[:, :-1]
    pruned = prune_width(teacher, calib, hidden_size=16, num_heads=1, intermediate_size=32)
    ids = calib[:1]
    with torch.no_grad():
        assert torch.equal(start.eval()(input_ids=ids).logits, pruned(input_ids=ids).logits)
        assert not torch.equal(zoo.new_model(spec, settings, 0).eval()(input_ids=ids).logits, pruned(input_ids=ids).logits)
    wrong = replace(spec, name="pw2", head_dim=8)
    with pytest.raises(ValueError, match="head_dim=16"):
        zoo.prune_into(zoo.new_model(wrong, settings, 0), wrong, teacher, calib)
    assert zoo.warmup_of(spec, settings) == 1 and zoo.warmup_of(tiny_spec(), settings) == settings.warmup_steps
    with pytest.raises(ValueError, match="init must be 'random' or 'pruned'"):
        tiny_spec("bad", init="prune")
    with pytest.raises(ValueError, match="give it one"):
        tiny_spec("orphan", init="pruned")
