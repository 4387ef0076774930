"""A built-in, deterministic corpus of short movie reviews (the ``tiny`` data source).

Pure Python and ``random.Random(seed)``: the same seed gives the same reviews in
every process and on every machine, in a few milliseconds, with no files.

The reviews are built so that a bag of words is *not* enough and word order is:
every sentiment adjective shows up in both classes (plainly in one, negated or
conceded in the other), the clause after "but" decides ("the acting was great,
but the plot was dull" is negative), and "although X, Y" is decided by Y.
Intensifiers ("absolutely", "slightly") and mixed reviews follow the star
rating (1-4 negative, 7-10 positive, as in IMDB), so a teacher's confidence
carries real information ("dark knowledge") beyond the hard label.
Labels are clean: each one follows from the generating rules.

Measured (seed 0, test split): a unigram bag-of-words logistic regression trained on the
1,200 train reviews scores 74%; the tiny BERT of the ``tiny`` profile, trained from scratch
(8 epochs), 70% from 300 labels and 87% from 1,200; 90% from 5,200 labels in the same number
of steps. More reviews negated throughout (``STYLES["litotes"]``) make the task harder for
the bag of words and easier for the transformer (25%: 60% vs 92%).
"""
from __future__ import annotations

import random

STARS = {0: (4, 3, 2, 1), 1: (7, 8, 9, 10)}  # label -> stars, mildest first

ASPECTS = ["acting", "plot", "script", "direction", "soundtrack", "score", "cinematography", "pacing",
           "dialogue", "ending", "editing", "story", "screenplay", "humor", "camera work", "final act",
           "lead performance", "supporting cast", "production design", "opening scene", "climax",
           "romance", "villain", "premise", "dialogue in the second half", "music", "photography"]
PLURAL_ASPECTS = ["characters", "visual effects", "action scenes", "performances", "costumes",
                  "jokes", "battle scenes", "songs", "twists", "sets"]
# adjectives: (mild, strong) for each polarity. Few on purpose: a model from scratch must learn
# each one's polarity from 1,200 reviews; variety comes from the rest of the text.
ADJ = {
    1: (["good", "decent", "solid", "nice", "enjoyable", "funny"],
        ["great", "excellent", "brilliant", "wonderful", "moving", "gripping"]),
    0: (["bad", "weak", "flat", "bland", "predictable", "forgettable"],
        ["terrible", "awful", "boring", "dull", "tedious", "painful"]),
}
# degree words, by strength: 0 mild, 1 medium, 2 strong
DEGREE = [["", "fairly", "somewhat", "slightly", "rather", "mostly", "a bit", "pretty", "reasonably"],
          ["", "very", "really", "quite", "genuinely", "consistently"],
          ["absolutely", "truly", "incredibly", "utterly", "extremely", "remarkably", "totally"]]
NEGATION = [["not", "not very", "not particularly", "not exactly", "hardly", "not really", "not quite"],
            ["not", "never", "not at all", "far from", "not remotely"],
            ["never", "not at all", "by no means", "in no way", "not even slightly", "not for a moment"]]
VERDICT = {1: ["worth watching", "worth your time", "worth the ticket", "a film I would recommend",
               "a must see", "a pleasant surprise", "a film to watch again", "a success"],
           0: ["a waste of time", "a waste of money", "a letdown", "a disappointment", "a mess",
               "a chore to sit through", "a failure", "a film to forget"]}
VERDICT_OPEN = ["Overall, it is", "All in all, it is", "In the end, this is", "Honestly, it is",
                "For me, it is", "In short, the film is", "To sum up, it is"]
VERDICT_NEG = [["not", "not really", "not exactly", "hardly"], ["not", "never", "not at all"],
               ["by no means", "in no way", "not at all"]]

TITLE_A = ["Silent", "Broken", "Last", "Crimson", "Distant", "Hidden", "Northern", "Paper", "Golden",
           "Frozen", "Midnight", "Electric", "Quiet", "Lost", "Burning", "Hollow", "Iron", "Winter",
           "Summer", "Shallow", "Velvet", "Wild", "Second", "Endless"]
TITLE_B = ["River", "Harbor", "Witness", "Garden", "Empire", "Signal", "Orchard", "Highway", "Letters",
           "Island", "Mirror", "Kingdom", "Frontier", "Station", "Promise", "Tide", "Lantern", "Hours",
           "Valley", "Crown", "Engine", "Shadows", "Reunion", "Archive"]
GENRE = ["thriller", "comedy", "drama", "western", "horror film", "war movie", "musical", "romance",
         "science fiction film", "documentary", "crime drama", "family film", "mystery", "biopic",
         "road movie", "period piece", "heist movie", "animated feature", "courtroom drama", "sequel"]
WHO = ["a retired detective", "two sisters", "a young nurse", "an old boxer", "a small town teacher",
       "a group of students", "a lonely pilot", "a struggling chef", "a former spy", "three friends",
       "a widowed farmer", "a famous painter", "a rookie journalist", "an aging actor", "a stubborn lawyer",
       "a runaway teenager", "a ship captain", "a family of musicians", "a quiet librarian", "twin brothers"]
DOES = ["returns home after twenty years", "searches for a missing brother", "plans one final job",
        "tries to save a failing restaurant", "falls in love during a long winter", "uncovers a local scandal",
        "crosses the country by train", "trains for a championship", "hides a dangerous secret",
        "inherits an old hotel", "investigates a strange murder", "fights to keep the family farm",
        "joins a touring band", "survives a storm at sea", "prepares for a wedding", "escapes from prison"]
WHERE = ["in Lisbon", "in rural Ohio", "in post-war Berlin", "in a coastal village", "in New York",
         "in the desert", "on a remote island", "in Tokyo", "in nineteenth century London", "in Montreal",
         "in a mining town", "in the Scottish highlands", "in Mexico City", "in a space station",
         "in Chicago", "in southern Italy"]
FIRST = ["Emma", "James", "Sofia", "Daniel", "Maya", "Oliver", "Clara", "Victor", "Nora", "Samuel",
         "Iris", "Leo", "Grace", "Hugo", "Ruth", "Martin", "Alice", "Peter", "Julia", "Oscar"]
LAST = ["Hart", "Moreno", "Keller", "Brooks", "Novak", "Reyes", "Lindqvist", "Carter", "Doyle", "Bianchi",
        "Weber", "Hughes", "Tanaka", "Foster", "Blake", "Murray", "Silva", "Grant", "Porter", "Hale"]


def _title(r: random.Random) -> str:
    return f"{r.choice(TITLE_A)} {r.choice(TITLE_B)}"


def _context(r: random.Random) -> str:
    """A sentiment-free sentence about the film (plot, cast, circumstances)."""
    name = f"{r.choice(FIRST)} {r.choice(LAST)}"
    return r.choice([
        lambda: f"{_title(r)} follows {r.choice(WHO)} who {r.choice(DOES)} {r.choice(WHERE)}.",
        lambda: f"This {r.choice(GENRE)} stars {name} as {r.choice(WHO)} {r.choice(WHERE)}.",
        lambda: f"I watched {_title(r)} last {r.choice(['week', 'night', 'month', 'weekend'])} "
                f"with {r.choice(['my sister', 'a friend', 'my parents', 'my kids', 'my partner', 'coworkers'])}.",
        lambda: f"Directed by {name}, the {r.choice(GENRE)} runs about {r.randrange(80, 170, 5)} minutes.",
        lambda: f"{name} plays {r.choice(WHO)} who {r.choice(DOES)}.",
    ])()


def _strength(r: random.Random, k: int) -> int:
    """Pick a degree strength 0/1/2 for intensity k (0 = stars 4/7 ... 3 = stars 1/10)."""
    weights = [(6, 3, 0), (4, 4, 1), (2, 4, 3), (1, 3, 6)][k]
    return r.choices((0, 1, 2), weights)[0]


def _adj(r: random.Random, q: int, strong: bool) -> str:
    return r.choice(ADJ[q][strong])


def _clause(r: random.Random, q: int, k: int, negated: bool) -> str:
    """A clause judging one aspect with polarity q, plain ("was great") or negated ("was never dull")."""
    plural = r.random() < 0.25
    subject = "the " + r.choice(PLURAL_ASPECTS if plural else ASPECTS)
    be = "were" if plural else "was"
    s = _strength(r, k)
    if not negated:  # plain: degree word + adjective of polarity q
        adj = _adj(r, q, s == 2 or (s == 1 and r.random() < 0.5))
        return " ".join(w for w in (subject, be, r.choice(DEGREE[s]), adj) if w)
    adj = _adj(r, 1 - q, r.random() < 0.5)  # negated: "not" + adjective of the other polarity
    neg = r.choice(NEGATION[s])
    if neg == "not" and r.random() < 0.4:
        be, neg = ("wasn't" if be == "was" else "weren't"), ""
    return " ".join(w for w in (subject, be, neg, adj) if w)


def _opinion(r: random.Random, q: int, k: int, p_neg: float, p_contrast: float) -> str:
    """One opinion sentence with overall polarity q, possibly after a concession of the other polarity."""
    main = _clause(r, q, k, r.random() < p_neg)
    if r.random() >= p_contrast:
        return main[0].upper() + main[1:] + "."
    other = _clause(r, 1 - q, 0, r.random() < p_neg)
    form = r.random()
    if form < 0.45:
        return f"{other[0].upper()}{other[1:]}, but {main}."
    if form < 0.8:
        return f"Although {other}, {main}."
    return f"{other[0].upper()}{other[1:]}; however, {main}."


def _verdict(r: random.Random, q: int, k: int, negated: bool) -> str:
    if not negated:
        return f"{r.choice(VERDICT_OPEN)} {r.choice(VERDICT[q])}."
    return f"{r.choice(VERDICT_OPEN)} {r.choice(VERDICT_NEG[_strength(r, k)])} {r.choice(VERDICT[1 - q])}."


# reviewer styles: (weight, probability that a clause is negated)
STYLES = {"plain": (0.85, 0.05), "litotes": (0.15, 1.0)}


def make_review(r: random.Random, label: int, stars: int | None = None, *,
                styles: dict | None = None, p_contrast: float = 0.1) -> dict:
    """One review with the given label (stars drawn if not given): {text, label, stars}.

    A reviewer style sets how often clauses are negated: "plain" ("the plot was dull") or
    "litotes" ("the plot was never gripping"). Litotes reviews reuse the other class's words,
    so a bag of words misreads them; a transformer can pair each adjective with its negation.
    """
    styles = styles or STYLES
    stars = stars if stars is not None else r.choice(STARS[label])
    k = STARS[label].index(stars)  # intensity 0 (4 or 7 stars) .. 3 (1 or 10 stars)
    p_neg = r.choices([p for _, p in styles.values()], [w for w, _ in styles.values()])[0]
    p_con = p_contrast + 0.2 * (k == 0) - 0.1 * (k == 3)  # mild reviews are more mixed
    while True:
        n_op = r.choice((1, 2, 2, 3))
        sents = [_opinion(r, label, k, p_neg, p_con) for _ in range(n_op)]
        if r.random() < 0.4:
            sents.append(_verdict(r, label, k, r.random() < p_neg))
        if len(sents) < 4 and (r.random() < 0.6 or len(sents) < 2):
            sents.insert(0, _context(r))
        text = " ".join(sents)
        if 12 <= len(text.split()) <= 45:
            return {"text": text, "label": label, "stars": stars}


def generate_corpus(seed: int = 0, n_train: int = 1200, n_unsupervised: int = 4000, n_test: int = 1000,
                    **review_kwargs) -> dict[str, list[dict]]:
    """The built-in corpus: {"train", "unsupervised", "test"} lists of {text, label, stars}.

    Each split is balanced (half positive), texts are unique across splits, and
    "unsupervised" rows have label -1 (their ``stars`` are kept for analysis only).
    """
    r = random.Random(seed)
    seen: set[str] = set()
    out = {}
    for split, n in (("train", n_train), ("unsupervised", n_unsupervised), ("test", n_test)):
        rows = []
        while len(rows) < n:
            row = make_review(r, len(rows) % 2, **review_kwargs)
            if row["text"] not in seen:
                seen.add(row["text"])
                rows.append(row)
        r.shuffle(rows)
        if split == "unsupervised":
            rows = [dict(row, label=-1) for row in rows]
        out[split] = rows
    return out


if __name__ == "__main__":
    for row in generate_corpus()["train"][:12]:
        print(row["stars"], row["text"])
