"""Offline stand-ins for SQuAD v2 and SpanBERT, built from nothing: the demo and the tests run the real pipeline.

- `make_squad_v2(n, seed)`: SQuAD-v2-format articles. Each context tells facts about a person (sometimes also
  one fact about a second person) between filler sentences, long enough to need several windows at demo
  sizes. About 40% of the questions are unanswerable (a fact the context does not tell, or a stranger).
- `train_tokenizer(texts, dir)`: a cased WordPiece tokenizer trained with `tokenizers`, saved like a Hub one.
- `save_tiny_bert(dir, vocab_size)`: a randomly initialised 2-layer BertForQuestionAnswering, saved as safetensors.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vos", "dru", "fel", "gan", "hol", "jun", "pex", "quo", "sul", "tor", "zy"]
CITIES = ["Arnhem", "Bilbao", "Cusco", "Dakar", "Esbjerg", "Fargo", "Graz", "Hue", "Izmir", "Jaipur", "Kobe", "Lagos"]
JOBS = ["baker", "pilot", "surgeon", "welder", "lawyer", "painter", "farmer", "teacher", "chemist", "sailor"]
COLORS = ["red", "green", "amber", "violet", "teal", "crimson", "ochre", "navy", "silver", "olive"]
FILLER = [
    "The weather that season was unusually mild.",
    "Local newspapers covered many stories that year.",
    "Several roads in the region were rebuilt after the floods.",
    "The market opened early on most days of the week.",
    "Historians still argue about the details of that period.",
    "A small museum near the harbour keeps old maps and letters.",
    "Trains between the two towns ran twice a day.",
    "Most families in the valley kept a garden behind the house.",
]
# (fact sentence, question, value list): the answer is the value, always a single word of the sentence.
RELATIONS = [
    ("{p} was born in {v}.", "Where was {p} born?", CITIES),
    ("{p} worked as a {v} for many years.", "What was the job of {p}?", JOBS),
    ("The favourite colour of {p} was {v}.", "Which colour did {p} like best?", COLORS),
]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _paragraph(rng: random.Random, qid_prefix: str) -> dict[str, Any]:
    """One context about a main person (two of the three relations told), sometimes a second person with one
    fact (a distractor for name matching), between filler sentences; four questions about it."""
    main = _name(rng)
    told = rng.sample(range(len(RELATIONS)), k=2)
    facts = [(main, r, rng.choice(RELATIONS[r][2])) for r in told]
    other = _name(rng)
    if other != main and rng.random() < 0.5:
        r = rng.randrange(len(RELATIONS))
        facts.append((other, r, rng.choice(RELATIONS[r][2])))
    sentences = [RELATIONS[r][0].format(p=p, v=v) for p, r, v in facts]
    sentences += rng.sample(FILLER, k=rng.randint(3, 6))
    rng.shuffle(sentences)
    context = " ".join(sentences)
    qas = []
    for i in range(4):
        roll = rng.random()
        if roll < 0.6:
            person, r, value = facts[rng.randrange(len(facts))]
            template = RELATIONS[r][0]
            offset_in_sentence = len(template[: template.index("{v}")].format(p=person))
            start = context.index(template.format(p=person, v=value)) + offset_in_sentence
            answers = [{"text": value, "answer_start": start}]
        else:  # a fact the context does not tell about its main person, or a person it never mentions
            person = main if roll < 0.85 else _stranger(rng, {p for p, _, _ in facts})
            told_about = {r for p, r, _ in facts if p == person}
            r = rng.choice([r for r in range(len(RELATIONS)) if r not in told_about])
            answers = []
        qas.append(
            {
                "id": f"{qid_prefix}-{i}",
                "question": RELATIONS[r][1].format(p=person),
                "answers": answers,
                "is_impossible": not answers,
            }
        )
    return {"context": context, "qas": qas}


def _stranger(rng: random.Random, known: set[str]) -> str:
    while (name := _name(rng)) in known:
        pass
    return name


def make_squad_v2(n_questions: int, seed: int, title: str = "demo", per_article: int = 5) -> dict[str, Any]:
    """An official-format SQuAD v2 dict with at least n_questions questions, `per_article` paragraphs per article
    (titled `<title>-<k>`), as SQuAD groups them."""
    rng = random.Random(seed)
    paragraphs: list[dict[str, Any]] = []
    count = 0
    while count < n_questions:
        paragraph = _paragraph(rng, f"{title}{seed}-{len(paragraphs)}")
        paragraphs.append(paragraph)
        count += len(paragraph["qas"])
    articles = [paragraphs[i : i + per_article] for i in range(0, len(paragraphs), per_article)]
    return {"version": "v2.0", "data": [{"title": f"{title}-{k}", "paragraphs": ps} for k, ps in enumerate(articles)]}


def train_tokenizer(texts: list[str], out_dir: Path, vocab_size: int = 1000) -> None:
    """A cased BERT-style WordPiece tokenizer (pairs get token_type_ids 0/1), saved with save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(out_dir)


def save_tiny_bert(out_dir: Path, vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2) -> None:
    """A randomly initialised BertForQuestionAnswering: a stand-in for SpanBERT with the same architecture."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 4,
        max_position_embeddings=512,
    )
    BertForQuestionAnswering(config).save_pretrained(out_dir)


def build_demo_assets(out_dir: str | Path, train_examples: int, dev_examples: int, seed: int) -> Path:
    """Write train.json, dev.json and tiny-bert/ (model + tokenizer) once; later calls reuse them."""
    out = Path(out_dir)
    stamp = {"train_examples": train_examples, "dev_examples": dev_examples, "seed": seed, "format": 3}
    if (out / "assets.json").is_file() and json.loads((out / "assets.json").read_text()) == stamp:
        return out
    out.mkdir(parents=True, exist_ok=True)
    train = make_squad_v2(train_examples, seed=seed, title="demo-train")
    dev = make_squad_v2(dev_examples, seed=seed + 1, title="demo-dev")
    for name, blob in (("train.json", train), ("dev.json", dev)):
        (out / name).write_text(json.dumps(blob))
    texts = [p["context"] for blob in (train, dev) for a in blob["data"] for p in a["paragraphs"]]
    texts += [qa["question"] for a in train["data"] for p in a["paragraphs"] for qa in p["qas"]]
    train_tokenizer(texts, out / "tiny-bert")
    from transformers import AutoTokenizer

    save_tiny_bert(out / "tiny-bert", vocab_size=len(AutoTokenizer.from_pretrained(out / "tiny-bert")), seed=seed)
    # Written last: an interrupted build is redone rather than half-reused.
    (out / "assets.json").write_text(json.dumps(stamp))
    return out
