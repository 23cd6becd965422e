"""The objective: each term's formula, and a few optimizer steps on a tiny model reduce each term."""
from __future__ import annotations

import copy
import math
import os

import pytest
import torch

from emoloom.labels import TAXONOMIES
from emoloom.train import losses
from emoloom.train.appraisal import DIMENSIONS, PROTOTYPES, AppraisalClassifier, prototype, sentiment
from emoloom.train.config import TrainConfig
from emoloom.train.model import TERMS


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """Built-in models and data go to the session's temp folder unless EMOLOOM_CACHE is set."""
    old = os.environ.get("EMOLOOM_CACHE")
    if not old:
        os.environ["EMOLOOM_CACHE"] = str(tmp_path_factory.getbasetemp() / "emoloom-cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second OpenMP thread only costs on a busy 2-core box
    yield
    torch.set_num_threads(threads)
    if not old:
        os.environ.pop("EMOLOOM_CACHE", None)


# -- formulas -------------------------------------------------------------------------------------


def test_rationale_vad_matches_the_documented_formula():
    torch.manual_seed(0)
    b, length, vocab = 3, 7, 11
    logits = torch.randn(b, length, vocab)
    mask = torch.zeros(b, length, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[2, 1] = True  # example 1 has no rationale
    ids = torch.tensor([1, 4, 6, 9])
    table = torch.rand(4, 3)
    implied, has = losses.rationale_vad(logits, mask, ids, table)
    assert has.tolist() == [True, False, True]
    p = torch.softmax(logits, dim=-1)
    for i in (0, 2):
        positions = mask[i].nonzero(as_tuple=True)[0]
        mass = p[i, positions][:, ids]  # (T, M): p(v | t) for lexicon tokens only
        expected = (mass.unsqueeze(-1) * table).sum((0, 1)) / mass.sum()
        assert torch.allclose(implied[i], expected, atol=1e-6)
    assert implied[1].tolist() == [0.5, 0.5, 0.5]


def test_rationale_vad_survives_tiny_probabilities():
    logits = torch.zeros(1, 4, 50)
    logits[0, :, 0] = 200.0  # nearly all mass on a non-lexicon token
    mask = torch.ones(1, 4, dtype=torch.bool)
    implied, _ = losses.rationale_vad(logits.requires_grad_(), mask, torch.tensor([3, 7]),
                                      torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    assert torch.isfinite(implied).all() and implied[0, 0].item() == pytest.approx(0.5, abs=1e-4)
    implied.sum().backward()


def test_polarity_term():
    v = torch.tensor([0.5, 0.9, 0.1, 0.9])
    pol = torch.tensor([0.8, 0.8, 0.8, 0.1])  # the last one is below the threshold: ignored
    per = torch.nn.functional.softplus(-10 * (v[:3] - 0.5))
    assert losses.polarity_agreement(v, pol, 0.3).item() == pytest.approx(per.mean().item())
    assert per[0].item() == pytest.approx(math.log(2))
    assert per[1] < per[0] < per[2]  # agreeing valence costs less
    assert losses.polarity_agreement(v, torch.zeros(4), 0.3).item() == 0.0


def test_sft_loss_ignores_masked_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 9)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 2, 8]])
    flat_logits = torch.cat([logits[0, 1:3], logits[1, 0:4]])
    expected = torch.nn.functional.cross_entropy(flat_logits, torch.tensor([3, 4, 1, 2, 2, 8]))
    assert losses.sft_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_token_vad_table_uses_the_lexicon():
    from emoloom.lexicon import load_lexicon
    from emoloom.models import load_base

    lexicon = load_lexicon(None)
    tok = load_base("tiny-qwen2").tokenizer
    ids, table = losses.token_vad_table(tok, lexicon)
    assert 20 < ids.numel() < len(tok)  # some tokens are words of the lexicon, most are not
    for token_id, vad in zip(ids.tolist()[:50], table.tolist()):
        word = tok.decode([token_id]).strip().lower()
        assert vad == pytest.approx(list(lexicon.lookup(word)))


# -- appraisal guidance -------------------------------------------------------------------------------


def test_prototypes_cover_every_label():
    for tax, labels in TAXONOMIES.items():
        for label in labels:
            assert len(PROTOTYPES[label]) == len(DIMENSIONS)
            assert all(0.0 <= x <= 1.0 for x in PROTOTYPES[label])
    assert prototype(["joy", "sadness"]) == pytest.approx(tuple((a + b) / 2 for a, b in
                                                                zip(PROTOTYPES["joy"], PROTOTYPES["sadness"])))


def test_appraisal_classifier_learns_goal_attainment():
    from emoloom.data import synthetic_records
    from emoloom.lexicon import load_lexicon

    train = synthetic_records("goemotions", 600, seed=0)
    clf = AppraisalClassifier(load_lexicon(None)).fit([r.text for r in train], [r.labels for r in train])
    scores = clf.predict(["i am so happy about the wedding !", "i am heartbroken about the funeral ."])
    assert scores.shape == (2, 4) and ((scores >= 0) & (scores <= 1)).all()
    assert scores[0, 0] > scores[1, 0] + 0.3  # goal attainment: joy far above sadness
    assert sentiment("i am so happy")[0] > 0.3 > sentiment("this is terrible")[0]


# -- every term moves the right way on a tiny model ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny-qwen2 EmoModel on synthetic GoEmotions + DailyDialog data and one fixed batch."""
    from emoloom.config import load_config
    from emoloom.train.loop import Trainer, WorkerContext

    cfg = load_config(TrainConfig, None, [
        f"out={tmp_path_factory.mktemp('losses')}", "data.synthetic_size=120", "data.dev_size=8",
        "data.sources=[{taxonomy: goemotions}, {taxonomy: dailydialog}]", "augment.flip_rate=0.5"])
    trainer = Trainer(cfg, WorkerContext(), {})
    trainer.setup()
    examples = trainer.pools["A"]
    # a batch with both taxonomies and some confident TextBlob polarity
    confident = [e for e in examples if abs(e.polarity) >= 0.3]
    other = [e for e in examples if e.taxonomy != confident[0].taxonomy]
    batch = trainer._collate(confident[:6] + other[:4], trainer.pad_id, trainer.n_labels_max)
    return trainer, batch


def test_one_head_per_training_taxonomy(tiny):
    trainer, batch = tiny
    heads = trainer.model.heads
    assert heads.taxonomies == ["dailydialog", "goemotions"]
    assert {k: m.out_features for k, m in heads.emotion.items()} == {"dailydialog": 7, "goemotions": 28}
    assert set(batch["taxonomy"].tolist()) == {0, 1}
    assert batch["rationale_mask"].any(dim=1).all()  # every example has a rationale span


@pytest.mark.parametrize("term", TERMS)
def test_a_few_steps_reduce_each_term(tiny, term):
    trainer, batch = tiny
    model = copy.deepcopy(trainer.model)
    model.weights = {t: (1.0 if t == term else 0.0) for t in TERMS}
    model.train()
    torch.manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)  # higher rates made the polarity term oscillate
    values = []
    for _ in range(10):
        out = model(batch)
        assert set(out["terms"]) == {term}  # only the enabled term is computed and logged
        values.append(out["terms"][term].item())
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert all(math.isfinite(v) for v in values)
    assert values[-1] < 0.9 * values[0], (term, values)


def test_total_is_the_weighted_sum(tiny):
    trainer, batch = tiny
    model = trainer.model
    model.eval()
    with torch.no_grad():
        out = model(batch)
    expected = sum(model.weights[t] * v for t, v in out["terms"].items())
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(out["terms"]) == set(TERMS)
    assert len(out["pred_keys"]) == batch["input_ids"].shape[0]
