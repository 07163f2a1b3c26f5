"""Answer extraction and grading: a table of hand-checked cases."""

from __future__ import annotations

import threading

import pytest

from avar.grading import answers_match, extract_answer, extract_choice, grade, parse_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>2+2</think>\n<answer>4</answer>", "4"),
        ("<answer>3</answer> then <answer> 5 </answer>", "5"),  # the last tag wins
        ("<answer> </answer> so \\boxed{7}", "7"),  # an empty tag falls through
        ("so the result is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),  # nested braces
        ("Thinking... The answer is 12.", "12"),
        ("Final answer: B. 45 degrees", "B. 45 degrees"),
        ("The answer is C. No wait, the answer is D", "D"),  # the last phrase, not the first
        ("The answer is: 7", "7"),
        ("no answer here", None),
        ("<answer>unterminated", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "answer, choices, expected",
    [
        ("B", ["x", "y", "z"], "B"),
        ("(c)", ["x", "y", "z"], "C"),
        ("B. 45 degrees", ["30 degrees", "45 degrees"], "B"),
        ("45 degrees", ["30 degrees", "45 degrees"], "B"),  # the option's text
        ("D", ["x", "y", "z"], None),  # no option D
        ("Because", ["x", "y"], None),  # a word, not a letter
        ("a triangle", ["circle", "square", "triangle"], "C"),  # the article, not option A
        ("a triangle", ["circle", "square"], None),
        ("A triangle", ["circle", "square", "triangle"], "C"),
        ("A. 45 degrees", ["30 degrees", "45 degrees"], "A"),  # a marked letter wins
        ("(b) square", ["circle", "square"], "B"),
        ("not C, it is D", ["w", "x", "y", "z"], "D"),
        ("not C nor D", ["w", "x", "y", "z"], None),
    ],
)
def test_extract_choice(answer, choices, expected):
    assert extract_choice(answer, choices) == expected


@pytest.mark.parametrize(
    "answer, reference, kind, equal",
    [
        # numbers: formatting and tolerance
        ("1,000", "1000", "number", True),
        ("1,234,567.5", "1234567.5", "number", True),
        ("1,5", "15", "number", False),  # a separator only before three digits
        ("1,5", "1.5", "number", False),
        ("45%", "45", "number", True),
        ("3.00001", "3", "number", True),  # within 1e-4 relative
        ("3.01", "3", "number", False),
        ("-2", "2", "number", False),
        # expressions, through math-verify
        ("\\frac{2}{4}", "0.5", "number", True),
        ("\\frac{1}{2}", "\\frac{2}{4}", "text", True),
        ("\\pi", "3.14159265", "number", True),
        ("2\\sqrt{2}", "\\sqrt{8}", "text", True),
        ("x+1", "1+x", "text", True),
        ("\\frac{1}{3}", "0.33", "number", False),
        ("x-1", "1+x", "text", False),
        # text
        ("Purple.", "purple", "text", True),
        ("the same number", "Same number", "text", True),
        ("red", "blue", "text", False),
        ("Yes.", "yes", "text", True),  # HallusionBench-style yes/no
        ("Yes, it is.", "Yes", "text", True),  # the first clause answers
        ("No, it is not.", "Yes", "text", False),
        ("red, not blue", "blue", "text", False),
        ("No", "Yes", "text", False),
        ("2.50", "2.5", "number", True),  # MathVista float answers
        ("2.53", "2.5", "number", False),
        # choices
        ("B. circles", "B", "choice", True),
        ("circles", "B", "choice", False),  # text is matched only against the given options
        ("A", "B", "choice", False),
    ],
)
def test_answers_match(answer, reference, kind, equal):
    assert answers_match(answer, reference, kind) is equal


def test_choice_text_matches_with_options():
    assert answers_match("circles", "B", "choice", ["squares", "circles"])


def test_grade_reads_the_final_answer():
    assert grade("<think>3 shapes</think><answer>3</answer>", "3", "number")
    assert grade("3", "3", "number")  # a bare one-line answer is its own final answer
    assert grade(" red ", "red", "text")
    assert not grade("3\nor 4", "3", "number")  # more than an answer
    assert not grade("4", "3", "number")
    assert grade("Answer: a triangle", "C", "choice", ["circle", "square", "triangle"])
    assert grade("The answer is not C, it is D", "D", "choice", ["w", "x", "y", "z"])
    with pytest.raises(ValueError, match="answer_type"):
        grade("<answer>3</answer>", "3", "vector")


def test_math_equivalence_works_off_the_main_thread():
    results = []
    thread = threading.Thread(
        target=lambda: results.append(answers_match("\\frac{2}{4}", "0.5", "number"))
    )
    thread.start(), thread.join()
    assert results == [True]


def test_parse_number():
    assert parse_number("$12") == 12.0 and parse_number("1e3") == 1000.0
    assert parse_number("12 apples") is None
    assert parse_number("1,500") == 1500.0 and parse_number("1,5") is None
