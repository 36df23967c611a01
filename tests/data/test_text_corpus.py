"""Plain text corpora: reading, BERT's sentence pairs (NSP 50/50, 80/10/10), the text-only MLM stream and
the mixer that puts it beside caption batches."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from mmbert.data.batch import Batch
from mmbert.data.masking import IGNORE
from mmbert.data.text_corpus import (
    NextSentenceDataset,
    TextMLMDataset,
    TextStreamMixer,
    read_text_corpus,
)
from mmbert.data.tokenizer import Tokenizer

WORDS = ["red", "blue", "cube", "ball", "left", "right", "of", "the", "a", "is", "big", "small", "on", "near"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return Tokenizer.from_pretrained(root)


def corpus_text(docs: int = 6, sentences: int = 5) -> str:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(docs):
        lines = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (6,), generator=g))
                 for _ in range(sentences)]  # fmt: skip
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def test_read_text_corpus_splits_documents_on_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("a b\n c d \n\n\n\ne f\n\n")
    assert read_text_corpus(path) == [["a b", "c d"], ["e f"]]
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="no sentence"):
        read_text_corpus(path)
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_text_corpus(path)
    with pytest.raises(FileNotFoundError, match="no such corpus"):
        read_text_corpus(tmp_path / "missing.txt")


def test_next_sentence_pairs_are_50_50_and_masked_80_10_10(tmp_path, tokenizer):
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text(docs=20, sentences=6))
    docs = read_text_corpus(path)
    data = NextSentenceDataset(docs, tokenizer, max_length=32, seed=0)
    assert len(data) == 120
    labels, chosen, total, masked, kept = [], 0, 0, 0, 0
    for epoch in range(4):
        data.set_epoch(epoch)
        for i in range(len(data)):
            ex = data[i]
            original = ex.text_ids.where(ex.mlm_labels == IGNORE, ex.mlm_labels)
            sep = (original == tokenizer.sep_id).nonzero().squeeze(1)
            assert len(sep) == 2 and ex.segment_ids[sep[0] + 1 :].eq(1).all()  # [CLS] A [SEP] B [SEP]
            labels.append(ex.pair_label)
            d, s = data.positions[i]
            if s + 1 == len(docs[d]):
                assert ex.pair_label == 0  # after a document's last sentence only a random one
            target = ex.mlm_labels != IGNORE
            chosen += int(target.sum())
            total += int((~torch.isin(ex.text_ids.where(~target, ex.mlm_labels),
                                      torch.tensor(sorted(tokenizer.special_ids)))).sum())  # fmt: skip
            masked += int((ex.text_ids[target] == tokenizer.mask_id).sum())
            kept += int((ex.text_ids[target] == ex.mlm_labels[target]).sum())
    n, pos = len(labels), sum(labels)
    p_next = 0.5 * (5 / 6)  # 50 % of the sentences that have a next one
    assert abs(pos - n * p_next) <= 4.5 * math.sqrt(n * p_next * (1 - p_next))
    assert abs(chosen - 0.15 * total) <= 4.5 * math.sqrt(total * 0.15 * 0.85)
    assert abs(masked - 0.8 * chosen) <= 4.5 * math.sqrt(chosen * 0.16)
    assert kept >= 0.1 * chosen - 4.5 * math.sqrt(chosen * 0.09)  # 10 % kept (+ random draws of the same id)
    batch = data.collate([data[i] for i in range(5)])
    assert batch.region_feats is None and batch.pair_labels.shape == (5,)
    assert batch.mlm_labels.shape == batch.text_ids.shape
    with pytest.raises(ValueError, match="two documents"):
        NextSentenceDataset(docs[:1], tokenizer)


def test_text_stream_takes_following_sentences_up_to_the_length(tokenizer):
    docs = [["red cube", "blue ball", "the big cube is on the left"], ["small"]]
    data = TextMLMDataset(docs, tokenizer, max_length=8, seed=0, mlm_prob=0.0)
    assert tokenizer.decode(data[0].text_ids.tolist()) == "[CLS] red cube blue ball [SEP]"  # 4 words + 2 specials fit 8
    assert tokenizer.decode(data[3].text_ids.tolist()) == "[CLS] small [SEP]"  # never across documents
    assert data[0].pair_label is None


@dataclass
class _Ex:
    index: int


class _Main(torch.utils.data.Dataset):
    """A stand-in caption dataset with a task schedule hook, to check how the mixer composes keys."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, key):
        return key

    def step_keys(self, step, indices):
        return [(i, f"task{step % 2}") for i in indices]

    @property
    def collate(self):
        def collate(items):
            b = Batch(torch.zeros(len(items), 2, dtype=torch.long), torch.ones(len(items), 2, dtype=torch.bool),
                      torch.zeros(len(items), 2, dtype=torch.long))  # fmt: skip
            b.meta = {"keys": items}
            return _WithText(**{k: getattr(b, k) for k in ("text_ids", "text_mask", "segment_ids", "meta")})

        return collate


@dataclass
class _WithText(Batch):
    text_batch: Batch | None = None


def test_mixer_adds_a_text_batch_per_step_by_ratio_and_by_step(tokenizer):
    docs = [["red cube", "blue ball"], ["the big cube", "small ball near"], ["a b"]]
    text = TextMLMDataset(docs, tokenizer, max_length=8, seed=0)
    mixer = TextStreamMixer(_Main(), text, ratio=0.5, seed=3)
    keys = mixer.step_keys(5, [0, 1, 2, 3])
    assert keys[:4] == [("main", (i, "task1")) for i in range(4)]  # the main data's schedule is kept
    text_keys = [k for s, k in keys if s == "text"]
    assert len(text_keys) == 2 and len(set(text_keys)) == 2
    assert mixer.step_keys(5, [0, 1, 2, 3]) == keys  # a function of (seed, step): resumes see the same
    assert mixer.step_keys(6, [0, 1, 2, 3]) != keys
    batch = mixer.collate([mixer[k] for k in keys])
    assert batch.meta["keys"] == [(i, "task1") for i in range(4)]
    assert batch.text_batch.text_ids.shape[0] == 2 and batch.text_batch.region_feats is None
    with pytest.raises(KeyError, match="main"):
        mixer[3]
    with pytest.raises(ValueError, match="positive"):
        TextStreamMixer(_Main(), text, ratio=0)


class _Texts(torch.utils.data.Dataset):
    """A stand-in text-only stream of 64 examples (each is its own index)."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index):
        return index

    @property
    def collate(self):
        return list


class _LongMain(_Main):
    def __len__(self) -> int:
        return 24  # three steps of 2 ranks x 2 micro-batches x 2 examples


def _trainer_text_keys(world_size: int, grad_accum: int, epoch: int = 0, offset: int = 0) -> dict:
    """(rank, step) -> the text ids each of that rank's micro-batches gets, as the trainer asks for them."""
    from mmbert.train.config import TrainConfig
    from mmbert.train.loop import _epoch_batches
    from mmbert.train.sampler import StepSampler

    mixer = TextStreamMixer(_LongMain(), _Texts(), ratio=1.0, seed=7)
    config = TrainConfig(batch_size=2, grad_accum=grad_accum, num_workers=0, seed=0)
    out = {}
    for rank in range(world_size):
        sampler = StepSampler(len(mixer), 2, grad_accum, world_size, rank, seed=0)
        for j, items in enumerate(_epoch_batches(mixer, list, sampler, epoch, offset, config)):
            out.setdefault((rank, offset + j // grad_accum), []).append([e for s, e in items if s == "text"])
    return out


def test_mixer_gives_every_rank_and_micro_batch_its_own_text_examples():
    """Regression: the draw depended on (seed, step) only, so every rank and every accumulation
    micro-batch of a step got the same text examples."""
    keys = _trainer_text_keys(world_size=2, grad_accum=2)
    for step in (0, 1, 2):
        drawn = [t for rank in range(2) for micro in keys[(rank, step)] for t in micro]
        assert len(drawn) == 2 * 2 * 2 and len(set(drawn)) == len(drawn), (step, drawn)
    mixer = TextStreamMixer(_Main(), _Texts(), ratio=1.0, seed=7)
    assert mixer.step_keys(7, [0, 1, 2, 3], part=0, parts=2) != mixer.step_keys(7, [4, 5, 6, 7], part=1, parts=2)
    with pytest.raises(ValueError, match="slot 2"):
        mixer.text_indices(0, 2, part=2, parts=2)


def test_mixer_slots_resume_exactly():
    """A run resumed at step 1 draws, on every rank and micro-batch, what the uninterrupted run drew."""
    whole = _trainer_text_keys(world_size=2, grad_accum=2)
    resumed = _trainer_text_keys(world_size=2, grad_accum=2, offset=1)
    assert resumed and all(resumed[k] == whole[k] for k in resumed)
