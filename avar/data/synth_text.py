"""Text-only reasoning tasks: arithmetic word problems and ordering logic, with steps.

Categories: arithmetic (a chain of +/- events; more events when harder), multiply
(groups of items, optionally with a remainder), ordering (who is tallest/shortest from
pairwise comparisons; a multiple-choice question).
"""

from __future__ import annotations

import random

from avar.data.scenes import plural
from avar.data.schema import DIFFICULTIES, question_fields

NAMES = ("Ann", "Ben", "Cal", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Leo")
ITEMS = ("apples", "marbles", "stickers", "coins", "pencils", "cards", "shells", "books")
CONTAINERS = ("box", "bag", "jar", "crate", "basket")
CATEGORIES = ("arithmetic", "multiply", "ordering")
STEPS_PER_DIFFICULTY = {"easy": 1, "medium": 2, "hard": 3}


def t_arithmetic(rng: random.Random, difficulty: str) -> dict:
    name, friend = rng.sample(NAMES, 2)
    item = rng.choice(ITEMS)
    total = rng.randint(5, 20)
    sentences = [f"{name} has {total} {item}."]
    steps = [f"{name} starts with {total} {item}."]
    for _ in range(STEPS_PER_DIFFICULTY[difficulty]):
        if rng.random() < 0.5 and total > 1:
            amount = rng.randint(1, total - 1)
            sentences.append(f"Then {name} gives {amount} to {friend}.")
            steps.append(f"After giving {amount} away: {total} - {amount} = {total - amount}.")
            total -= amount
        else:
            amount = rng.randint(1, 12)
            sentences.append(f"Then {name} finds {amount} more.")
            steps.append(f"After finding {amount} more: {total} + {amount} = {total + amount}.")
            total += amount
    sentences.append(f"How many {item} does {name} have now?")
    steps.append(f"So {name} has {total} {item}.")
    return question_fields(" ".join(sentences), total, steps)


def t_multiply(rng: random.Random, difficulty: str) -> dict:
    item, container = rng.choice(ITEMS), rng.choice(CONTAINERS)
    per, count = rng.randint(2, 9), rng.randint(2, 9)
    product = per * count
    containers = plural(container)
    question = f"Each {container} holds {per} {item}. How many {item} are in {count} {containers}?"
    steps = [f"{count} {containers} with {per} {item} each: {count} x {per} = {product}."]
    answer = product
    if difficulty != "easy":
        extra = rng.randint(1, 9)
        question = question.replace("How many", f"There are also {extra} loose {item}. How many")
        question = question.replace("?", " in total?")
        steps.append(f"Adding the {extra} loose {item}: {product} + {extra} = {product + extra}.")
        answer = product + extra
    steps.append(f"So there are {answer} {item}.")
    return question_fields(question, answer, steps)


def t_ordering(rng: random.Random, difficulty: str) -> dict:
    n = {"easy": 3, "medium": 4, "hard": 5}[difficulty]
    people = rng.sample(NAMES, n)  # tallest first
    facts = [(people[i], people[i + 1]) for i in range(n - 1)]
    rng.shuffle(facts)
    ask_tallest = rng.random() < 0.5
    target = people[0] if ask_tallest else people[-1]
    options = sorted(people)
    letter = "ABCDE"[options.index(target)]
    stem = " ".join(f"{a} is taller than {b}." for a, b in facts)
    word = "tallest" if ask_tallest else "shortest"
    choices = "\n".join(f"{'ABCDE'[i]}. {p}" for i, p in enumerate(options))
    question = f"{stem} Who is the {word}?\n{choices}\nAnswer with the option's letter."
    steps = [
        "Chaining the comparisons from tallest to shortest: " + " > ".join(people) + ".",
        f"The {word} is {target}, option {letter}.",
    ]
    return question_fields(question, letter, steps, options)


GENERATORS = {"arithmetic": t_arithmetic, "multiply": t_multiply, "ordering": t_ordering}


def text_record(rng: random.Random, index: int) -> dict:
    difficulty = DIFFICULTIES[index % len(DIFFICULTIES)]
    category = CATEGORIES[rng.randrange(len(CATEGORIES))]
    fields = GENERATORS[category](rng, difficulty)
    return {
        "id": f"text-{index:06d}",
        "kind": "text",
        "source": "synthetic",
        "category": category,
        "difficulty": difficulty,
        "images": [],
        "scene": None,
        **fields,
    }
