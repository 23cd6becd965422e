"""A synthetic corpus for smoke tests, demos and tiny-model runs: all text written for this project.

No sentence or phrase comes from the real datasets. Every label of each taxonomy has its own cue
words (joy: "delighted", "thrilled"; sadness: "heartbroken", ...), and the rest of the sentence
(topic, event, dialogue mood) has the label's valence, so a tiny model can learn both the labels
and valence. A share of examples is negated ("i am not happy about ...") and labelled to match
(GoEmotions disappointment, EmpatheticDialogues disappointed, DailyDialog sadness; "not worried
... anymore" -> relief / content / happiness). Sentences are short (at most 20 words), lower-case,
with punctuation split off as in DailyDialog.

`write_synthetic` writes the three corpora in their ORIGINAL file formats so they are read back
through the real readers:

    <out>/goemotions/{train,dev}.tsv                     text<TAB>ids<TAB>comment id
    <out>/empathetic/{train,valid}.csv                   text,aug_text,label
    <out>/dailydialog/{train,validation}/dialogues_<split>.txt,
                     dialogues_emotion_<split>.txt, dialogues_act_<split>.txt

The same seed gives byte-identical files; `size` is the number of train examples per corpus
(DailyDialog: utterances, about size // 4 dialogues); dev/valid get size // 5 (at least one
example of every label).
"""
from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from emoloom.atomic import atomic_write
from emoloom.contract import Record
from emoloom.labels import DAILYDIALOG, EMPATHETIC, GOEMOTIONS, VAD_ANCHORS

DEFAULT_SIZE = 2000
MAX_WORDS = 20
NEGATION_SHARE = 0.5  # share of the negation targets' examples that are negated sentences

# ----------------------------------------------------------------------------------------------
# Word lists (valence-graded). {t} = topic (noun phrase), {p} = person, {e} = event (clause).
# ----------------------------------------------------------------------------------------------

TOPICS = {
    "pos": ["the wedding", "my new job", "the puppy", "the beach trip", "your painting", "the concert",
            "the birthday party", "the garden", "the new baby", "the holiday", "our picnic",
            "the award", "the reunion", "the sunny weekend", "the gift", "the promotion"],
    "neg": ["the layoffs", "the flat tire", "the funeral", "the broken phone", "the flood",
            "the rude landlord", "the parking ticket", "the hospital bill", "the cancelled flight",
            "the rent increase", "the lost keys", "the car crash", "the burnt dinner", "the leaking roof",
            "the late bus", "the stolen bike"],
    "neu": ["the bus schedule", "the meeting", "the weather report", "the new policy", "the grocery list",
            "the train", "the homework", "the library", "the form", "the timetable", "the office",
            "the street map", "the printer", "the menu", "the lecture", "the report"],
}
PEOPLE = ["my sister", "my brother", "my mom", "my dad", "my friend", "my neighbor", "my boss",
          "my son", "my daughter", "my uncle", "my aunt", "my cousin", "my roommate", "my coach"]
EVENTS = {
    "pos": ["i got a promotion at work", "my daughter took her first steps", "we adopted a puppy",
            "my team won the final", "i passed my exam", "my friend threw me a party",
            "we bought our first house", "i finished my first marathon", "my brother got married",
            "i got into my dream school", "my garden bloomed", "we won a trip to the coast"],
    "neg": ["my car broke down on the highway", "i lost my wallet", "my dog got sick",
            "i failed my driving test", "my flight was cancelled", "someone stole my bike",
            "my boss yelled at me", "the roof started leaking", "i missed the last train",
            "my phone fell in the lake", "my friend moved away", "i got a parking ticket"],
    "neu": ["i moved to a new city", "i started a new class", "we changed our routine",
            "i cleaned out the garage", "i got a new desk at work", "we had a long meeting",
            "i took the bus to town", "i signed up for a course", "my cousin visited last week",
            "i renewed my passport"],
}

# ----------------------------------------------------------------------------------------------
# GoEmotions: short comment-like sentences. Each label's frames carry its own cue words.
# ----------------------------------------------------------------------------------------------

GOEMOTIONS_FRAMES = {
    "admiration": ["you are amazing at {t} , truly impressive work .", "i really admire how you handled {t} .",
                   "such brilliant work on {t} , respect ."],
    "amusement": ["haha {t} is hilarious , lol .", "lol i laughed so hard at {t} .",
                  "that joke about {t} is so funny haha ."],
    "anger": ["i am so angry about {t} , this is outrageous .", "{t} makes my blood boil .",
              "i am furious , {t} is unacceptable !"],
    "annoyance": ["ugh , {t} is so annoying .", "{t} is really irritating me .",
                  "so tired of {t} , it bugs me ."],
    "approval": ["i agree , {t} was a good call .", "yes exactly , good point about {t} .",
                 "i support {t} , well said ."],
    "caring": ["take care of yourself after {t} .", "sending hugs , i hope you feel better after {t} .",
               "please rest , i care about you and {t} can wait ."],
    "confusion": ["i am confused about {t} , what do you mean ?", "{t} makes no sense to me ?",
                  "wait , i do not understand {t} at all ."],
    "curiosity": ["i wonder how {t} works ?", "i am curious , what happened with {t} ?",
                  "tell me more about {t} , how did it start ?"],
    "desire": ["i really want {t} so badly .", "i wish i had {t} , i would love that .",
               "i am craving {t} right now ."],
    "disappointment": ["i am disappointed by {t} .", "what a letdown , {t} .",
                       "i expected more from {t} , sadly ."],
    "disapproval": ["i disagree with {t} , it is not okay .", "{t} is wrong , i do not approve .",
                    "that is not acceptable , {t} should not happen ."],
    "disgust": ["{t} is gross , so disgusting .", "ew , {t} makes me sick .", "{t} is revolting , yuck ."],
    "embarrassment": ["so embarrassing , my face went red at {t} .", "cringe , i was so awkward at {t} .",
                      "i felt so embarrassed during {t} ."],
    "excitement": ["so excited about {t} , woohoo !", "i cannot wait for {t} !", "{t} is going to be epic , so pumped !"],
    "fear": ["i am scared of {t} .", "{t} terrifies me , i am afraid .", "i am frightened about {t} ."],
    "gratitude": ["thank you so much for {t} .", "thanks for {t} , i am grateful .",
                  "i really appreciate {t} , thanks ."],
    "grief": ["rest in peace , i miss {p} so much .", "i am mourning {p} since {t} .",
              "my heart aches , {p} is gone forever ."],
    "joy": ["i am so happy about {t} !", "delighted with {t} , i am thrilled .", "{t} filled me with joy ."],
    "love": ["i love {t} so much .", "i adore {t} , it warms my heart .", "{t} is lovely , i love it ."],
    "nervousness": ["i am nervous about {t} .", "butterflies in my stomach before {t} .",
                    "{t} makes me so anxious and jittery ."],
    "optimism": ["fingers crossed , {t} will work out .", "i am hopeful things will get better after {t} .",
                 "i believe {t} will turn out fine ."],
    "pride": ["i am so proud of {t} .", "so proud of myself for {t} .", "{t} makes me proud ."],
    "realization": ["i just realized {t} is today .", "oh , now i see why {t} changed .",
                    "it dawned on me that {t} moved ."],
    "relief": ["phew , {t} is finally over , what a relief .", "i am relieved about {t} .",
               "thank goodness {t} went okay , relieved ."],
    "remorse": ["i am sorry about {t} , my fault .", "i regret {t} , my apologies .",
                "i feel terrible , i should have fixed {t} ."],
    "sadness": ["i am heartbroken about {t} .", "{t} makes me so sad .", "feeling down and blue since {t} ."],
    "surprise": ["wow , i did not expect {t} !", "i am shocked by {t} , omg .", "whoa , {t} was a total surprise !"],
    "neutral": ["{t} is on tuesday .", "i read about {t} this morning .", "the link for {t} is below .",
                "{t} starts at noon ."],
}

# ----------------------------------------------------------------------------------------------
# EmpatheticDialogues: situation descriptions ("i felt X when ...").
# ----------------------------------------------------------------------------------------------

EMPATHETIC_FRAMES = {
    "sad": ["i felt so sad when {e} .", "i was sad and down for days after {e} ."],
    "trusting": ["i trusted {p} completely when {e} .", "i could rely on {p} after {e} , i trust them ."],
    "terrified": ["i was terrified when {e} .", "i was petrified , scared to death when {e} ."],
    "caring": ["i took care of {p} when {e} .", "i looked after {p} and comforted them when {e} ."],
    "disappointed": ["i was disappointed when {e} .", "i felt let down when {e} ."],
    "faithful": ["i stayed faithful to {p} even when {e} .", "i remained loyal to {p} when {e} ."],
    "joyful": ["i was joyful when {e} .", "i was overjoyed and full of joy when {e} ."],
    "jealous": ["i was jealous of {p} when {e} .", "i felt envious of {p} after {e} ."],
    "disgusted": ["i was disgusted when {e} .", "i felt grossed out and nauseous when {e} ."],
    "surprised": ["i was surprised when {e} .", "i was caught off guard when {e} ."],
    "ashamed": ["i was ashamed of myself when {e} .", "i felt deep shame when {e} ."],
    "afraid": ["i was afraid when {e} .", "i felt scared and afraid after {e} ."],
    "impressed": ["i was impressed by {p} when {e} .", "i was amazed by how well {p} did when {e} ."],
    "sentimental": ["i felt sentimental looking at old photos after {e} .",
                    "i got sentimental and teary reading old letters when {e} ."],
    "devastated": ["i was devastated when {e} .", "i was crushed and devastated after {e} ."],
    "excited": ["i was so excited when {e} .", "i could not wait , i was excited when {e} ."],
    "anticipating": ["i am looking forward to next week since {e} .",
                     "i am counting the days now that {e} ."],
    "annoyed": ["i was annoyed when {e} .", "i felt irritated when {e} ."],
    "anxious": ["i was anxious when {e} .", "i felt on edge and anxious after {e} ."],
    "furious": ["i was furious when {e} .", "i was livid and enraged when {e} ."],
    "content": ["i felt content and at peace when {e} .", "i was satisfied and content after {e} ."],
    "lonely": ["i felt lonely when {e} .", "i was all alone and lonely after {e} ."],
    "angry": ["i was angry when {e} .", "i got so mad when {e} ."],
    "confident": ["i felt confident when {e} .", "i was sure of myself and confident after {e} ."],
    "apprehensive": ["i was apprehensive when {e} .", "i felt uneasy and had doubts when {e} ."],
    "guilty": ["i felt guilty when {e} .", "i felt bad and guilty after {e} ."],
    "embarrassed": ["i was embarrassed when {e} .", "my face turned red , so embarrassed when {e} ."],
    "grateful": ["i was grateful to {p} when {e} .", "i felt thankful for {p} after {e} ."],
    "hopeful": ["i felt hopeful when {e} .", "i hope things get better now that {e} ."],
    "proud": ["i was proud when {e} .", "i felt so proud of {p} when {e} ."],
    "prepared": ["i was prepared , i packed everything before {e} .", "i felt ready and prepared when {e} ."],
    "nostalgic": ["i felt nostalgic about the good old days when {e} .",
                  "i was nostalgic remembering my childhood when {e} ."],
}

# ----------------------------------------------------------------------------------------------
# DailyDialog: two-speaker dialogues; a mood (valence) chosen per dialogue, neutral turns between.
# ----------------------------------------------------------------------------------------------

DAILYDIALOG_FRAMES = {
    "neutral": ["did you hear about {t} ?", "any news about {t} ?", "i will check {t} tomorrow .",
                "okay , tell me about {t} .", "i see . what about {t} ?", "we talked about {t} at lunch ."],
    "anger": ["i am so angry about {t} !", "{t} makes me furious !", "this is outrageous , {t} again !"],
    "disgust": ["{t} is disgusting .", "yuck , {t} makes me sick .", "that is gross , {t} is revolting ."],
    "fear": ["i am scared about {t} .", "{t} frightens me .", "i am afraid of {t} ."],
    "happiness": ["i am so happy about {t} !", "{t} makes me glad , i am delighted .", "great , i am thrilled about {t} !"],
    "sadness": ["i am so sad about {t} .", "{t} broke my heart .", "i feel miserable since {t} ."],
    "surprise": ["wow , {t} ? really ?", "no way , {t} ? i am shocked !", "what a surprise , {t} !"],
}
DAILYDIALOG_FOLLOWUPS = ["really ? tell me more .", "i see .", "what happened next ?", "how about you ?",
                         "okay , i understand .", "and then what ?"]

# ----------------------------------------------------------------------------------------------
# Negation: the positive cue negated flips the label; labels chosen to match in each taxonomy.
# ----------------------------------------------------------------------------------------------

_NOT_POSITIVE = ["i am not happy about {t} .", "i am not glad about {t} at all .",
                 "honestly , i am not pleased with {t} .", "i am not excited about {t} anymore ."]
_NOT_NEGATIVE = ["i am not worried about {t} anymore .", "i am not scared of {t} now .",
                 "i am not nervous about {t} anymore , it went fine ."]
NEGATION = {  # taxonomy -> label -> (frames, topic valence)
    "goemotions": {"disappointment": (_NOT_POSITIVE, "neg"), "relief": (_NOT_NEGATIVE, "pos")},
    "empathetic": {
        "disappointed": (["i was not happy when {e} .", "i was not pleased at all when {e} ."], "neg"),
        "content": (["i was not worried anymore after {e} .", "i was not nervous at all when {e} ."], "pos"),
    },
    "dailydialog": {"sadness": (_NOT_POSITIVE, "neg"), "happiness": (_NOT_NEGATIVE, "pos")},
}

FRAMES = {"goemotions": GOEMOTIONS_FRAMES, "empathetic": EMPATHETIC_FRAMES, "dailydialog": DAILYDIALOG_FRAMES}
LABELS = {"goemotions": GOEMOTIONS, "empathetic": EMPATHETIC, "dailydialog": DAILYDIALOG}
SPLITS = {"goemotions": ("train", "dev"), "empathetic": ("train", "valid"), "dailydialog": ("train", "validation")}


def valence(label: str) -> str:
    """pos / neg / neu from the label's VAD anchor (v >= 0.6, v <= 0.4, else neutral)."""
    v = VAD_ANCHORS[label][0]
    return "pos" if v >= 0.6 else "neg" if v <= 0.4 else "neu"


def _fill(frame: str, rng: random.Random, val: str, topic: str | None = None) -> str:
    text = frame.format(t=topic or rng.choice(TOPICS[val]), p=rng.choice(PEOPLE), e=rng.choice(EVENTS[val]))
    return " ".join(text.split())


def _sentence(tax: str, label: str, rng: random.Random, topic: str | None = None) -> str:
    neg = NEGATION[tax].get(label)
    if neg and rng.random() < NEGATION_SHARE:
        frames, val = neg
        return _fill(rng.choice(frames), rng, val, topic)
    return _fill(rng.choice(FRAMES[tax][label]), rng, valence(label), topic)


def _label_stream(labels: tuple[str, ...], rng: random.Random):
    """Labels in shuffled rounds: every label once per round (so all occur once n >= len)."""
    while True:
        order = list(labels)
        rng.shuffle(order)
        yield from order


def _rng(seed: int, tax: str, split: str) -> random.Random:
    return random.Random(f"emoloom-synthetic/{seed}/{tax}/{split}")  # str seeds are stable


def goemotions_examples(n: int, rng: random.Random) -> list[tuple[str, list[str]]]:
    """(text, labels); about 10% carry a second label of the same valence."""
    stream = _label_stream(GOEMOTIONS, rng)
    out = []
    for _ in range(n):
        label = next(stream)
        text, labels = _sentence("goemotions", label, rng), [label]
        others = [l for l in GOEMOTIONS if l not in (label, "neutral") and valence(l) == valence(label)
                  and l not in NEGATION["goemotions"]]
        if label != "neutral" and others and rng.random() < 0.1:
            second = rng.choice(others)
            combo = text + " " + _fill(rng.choice(GOEMOTIONS_FRAMES[second]), rng, valence(second))
            if len(combo.split()) <= MAX_WORDS:
                text, labels = combo, [label, second]
        out.append((text, labels))
    return out


def empathetic_examples(n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """(situation, paraphrase, label)."""
    stream = _label_stream(EMPATHETIC, rng)
    out = []
    for _ in range(n):
        label = next(stream)
        out.append((_sentence("empathetic", label, rng), _sentence("empathetic", label, rng), label))
    return out


def dailydialog_dialogues(n_utterances: int, rng: random.Random) -> list[list[tuple[str, str]]]:
    """Dialogues of (utterance, label) turns, about n_utterances turns in all.

    Each dialogue has a focus label (every label in turn); its mood (valence) fixes the topic and
    the labels of the emotional turns, and neutral openers/follow-ups sit between them.
    """
    stream = _label_stream(DAILYDIALOG, rng)
    dialogues, total = [], 0
    while total < n_utterances or not dialogues:
        focus = next(stream)
        mood = valence(focus) if focus != "neutral" else "neu"
        topic = rng.choice(TOPICS[mood])
        same_mood = [l for l in DAILYDIALOG if l != "neutral" and valence(l) == mood] or ["neutral"]
        turns = [(_fill(rng.choice(DAILYDIALOG_FRAMES["neutral"][:2]), rng, mood, topic), "neutral"),
                 (_sentence("dailydialog", focus, rng, topic), focus)]
        for _ in range(rng.randint(0, 4)):
            if focus == "neutral" or rng.random() < 0.5:
                turns.append((rng.choice(DAILYDIALOG_FOLLOWUPS), "neutral"))
            else:
                label = rng.choice(same_mood + [focus])
                turns.append((_sentence("dailydialog", label, rng, topic), label))
        dialogues.append(turns)
        total += len(turns)
    return dialogues


# ----------------------------------------------------------------------------------------------
# Writers (original file formats)
# ----------------------------------------------------------------------------------------------


def _sizes(size: int, tax: str) -> dict[str, int]:
    train, dev = SPLITS[tax]
    n_labels = len(LABELS[tax])
    return {train: max(size, n_labels), dev: max(size // 5, n_labels)}


def _write(path: Path, text: str) -> Path:
    with atomic_write(path, "wb") as f:  # bytes: the exact "\n" line ends of the originals
        f.write(text.encode("utf-8"))
    return path


def write_synthetic(out_dir: str | Path, seed: int = 0, size: int = DEFAULT_SIZE) -> dict[str, Path]:
    """Write the three synthetic corpora; returns {"<corpus>/<split>[/<kind>]": path} of every file."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file; the synthetic corpora are written into a folder")
    files: dict[str, Path] = {}

    for split, n in _sizes(size, "goemotions").items():
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n")
        for i, (text, labels) in enumerate(goemotions_examples(n, _rng(seed, "goemotions", split))):
            ids = ",".join(str(GOEMOTIONS.index(l)) for l in sorted(labels, key=GOEMOTIONS.index))
            w.writerow([text, ids, f"syn{split[0]}{i:06d}"])
        files[f"goemotions/{split}"] = _write(out / "goemotions" / f"{split}.tsv", buf.getvalue())

    for split, n in _sizes(size, "empathetic").items():
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["text", "aug_text", "label"])
        for text, aug, label in empathetic_examples(n, _rng(seed, "empathetic", split)):
            w.writerow([text, aug, EMPATHETIC.index(label)])
        files[f"empathetic/{split}"] = _write(out / "empathetic" / f"{split}.csv", buf.getvalue())

    for split, n in _sizes(size, "dailydialog").items():
        rng = _rng(seed, "dailydialog", split)
        dia, emo, act = [], [], []
        for turns in dailydialog_dialogues(n, rng):
            dia.append(" __eou__ ".join(t for t, _ in turns) + " __eou__\n")
            emo.append("".join(f"{DAILYDIALOG.index(l)} " for _, l in turns) + "\n")
            act.append("".join(("2 " if t.endswith("?") else "1 ") for t, _ in turns) + "\n")
        folder = out / "dailydialog" / split
        files[f"dailydialog/{split}/dialogues"] = _write(folder / f"dialogues_{split}.txt", "".join(dia))
        files[f"dailydialog/{split}/emotion"] = _write(folder / f"dialogues_emotion_{split}.txt", "".join(emo))
        files[f"dailydialog/{split}/act"] = _write(folder / f"dialogues_act_{split}.txt", "".join(act))
    return files


def synthetic_records(taxonomy: str, n: int, seed: int = 0, split: str = "train", context_turns: int = 5) -> list[Record]:
    """`n` synthetic records of one taxonomy in memory (no files); same seed, same records."""
    if taxonomy not in LABELS:
        raise ValueError(f"synthetic taxonomy must be one of {', '.join(LABELS)}, got {taxonomy!r}")
    rng = _rng(seed, taxonomy, split)
    common = dict(corpus="synthetic", taxonomy=taxonomy, split=split)
    if taxonomy == "goemotions":
        return [Record(id=f"syn-ge-{split}-{i:06d}", text=t, labels=ls, **common)
                for i, (t, ls) in enumerate(goemotions_examples(n, rng))]
    if taxonomy == "empathetic":
        return [Record(id=f"syn-ed-{split}-{i:06d}", text=t, labels=[l], **common)
                for i, (t, _, l) in enumerate(empathetic_examples(n, rng))]
    records = []
    for d, turns in enumerate(dailydialog_dialogues(n, rng)):
        texts = [t for t, _ in turns]
        for k, (text, label) in enumerate(turns):
            ctx = texts[max(0, k - context_turns):k] if context_turns > 0 else []
            records.append(Record(id=f"syn-dd-{split}-{d:05d}-{k:02d}", text=text, context=ctx,
                                  labels=[label], meta={"dialogue": d, "turn": k}, **common))
    return records[:n]


def root_of(source: str | Path) -> Path:
    """The synthetic root folder (holding goemotions/, empathetic/, dailydialog/)."""
    path = Path(source).expanduser()
    if not path.is_dir() or not any((path / t).is_dir() for t in LABELS):
        raise FileNotFoundError(
            f"synthetic: {str(source)!r} is not a folder written by `data synth` (expected "
            f"goemotions/, empathetic/ and dailydialog/ in it); run: python -m emoloom data synth --out DIR"
        )
    return path
