"""Prompt building and reply parsing: markers, explanations, 0/1 lists, simulation lines and their logprobs."""

from __future__ import annotations

import math

import numpy as np

from core.autointerp.examples import render
from core.autointerp.prompts import detection, explainer, simulation
from core.autointerp.scorers.base import parse_binary_list
from core.autointerp.scorers.simulation import expected_values, parse_simulation
from core.llm.client import TokenLogprob


def test_render_marks_runs_and_keeps_leading_space_outside():
    toks = [" The", " cat", " sat", " on", "\n", " mat"]
    mask = np.array([0, 1, 1, 0, 0, 1], bool)
    assert render(toks, mask) == " The <<cat sat>> on\\n <<mat>>"
    assert render(toks) == " The cat sat on\\n mat"


def test_explainer_prompt_carries_examples_activations_and_cot():
    msgs = explainer.build_messages(["a <<b>> c", "<<d>> e"], ['"b" 9', '"d" 3'], chain_of_thought=True)
    system, user = msgs[0]["content"], msgs[1]["content"]
    assert "[EXPLANATION]:" in system and "step by step" in system and "0 to 9" in system
    assert 'Example 1: a <<b>> c\nActivations: "b" 9' in user and "Example 2: <<d>> e" in user
    plain = explainer.build_messages(["x"], None, chain_of_thought=False)
    assert "step by step" not in plain[0]["content"] and "Activations" not in plain[1]["content"]


def test_explanation_parsing():
    assert explainer.parse_reply("thinking...\n[EXPLANATION]: the word 'of'") == "the word 'of'"
    assert explainer.parse_reply("[EXPLANATION]: first\n[explanation]: second ") == "second"
    assert explainer.parse_reply("no marker here") is None
    assert explainer.parse_reply("[EXPLANATION]:   ") is None
    assert explainer.parse_reply(None) is None


def test_binary_list_parsing_is_strict_about_length_and_values():
    assert parse_binary_list("[1, 0, 0, 1, 0]", 5) == [1, 0, 0, 1, 0]
    assert parse_binary_list("Sure! Here it is: [1,0,1]", 3) == [1, 0, 1]
    assert parse_binary_list("[1, 0, 1]", 5) is None  # too short
    assert parse_binary_list("[1, 2, 0]", 3) is None  # not 0/1
    assert parse_binary_list("[0.7, 1, 0]", 3) is None
    assert parse_binary_list("yes, no, yes", 3) is None
    assert "Python list of 4 integers" in detection.build_messages("x", ["a", "b", "c", "d"])[0]["content"]


def test_simulation_prompt_and_parsing():
    msgs = simulation.build_messages("cats", [" the", "\n", " cat"])
    assert "1\t the\n2\t\\n\n3\t cat" in msgs[1]["content"]
    values, spans = parse_simulation("1\t0\n2\t0\n3\t10\n", 3)
    assert values.tolist() == [0, 0, 10] and spans[2] == (10, 12)
    assert parse_simulation("1\t0\n3\t10", 3) is None  # a token missing
    assert parse_simulation("1\t0\n2\t11\n3\t1", 3) is None  # out of range
    assert parse_simulation("1\t0\n1\t0\n3\t1", 3) is None  # duplicate index
    assert parse_simulation("here you go\n1\t0\n2\t0\n3\t1", 3) is None  # extra text


def test_expected_value_from_logprobs():
    text = "1\t7\n2\t0"
    values, spans = parse_simulation(text, 2)
    lp = [
        TokenLogprob("1", 0.0),
        TokenLogprob("\t", 0.0),
        TokenLogprob("7", math.log(0.5), [("7", math.log(0.5)), ("9", math.log(0.25)), ("x", math.log(0.25))]),
        TokenLogprob("\n", 0.0),
        TokenLogprob("2", 0.0),
        TokenLogprob("\t", 0.0),
        TokenLogprob("0", 0.0, [("0", 0.0)]),
    ]
    ev, used = expected_values(lp, spans, values)
    assert used == 2
    assert abs(ev[0] - (0.5 * 7 + 0.25 * 9) / 0.75) < 1e-9 and ev[1] == 0.0
    # a number glued to the tab in one token cannot be aligned: the parsed value stays
    glued = [
        TokenLogprob("1", 0.0),
        TokenLogprob("\t7", 0.0),
        TokenLogprob("\n", 0.0),
        TokenLogprob("2", 0.0),
        TokenLogprob("\t0", 0.0),
    ]
    ev, used = expected_values(glued, spans, values)
    assert used == 0 and ev.tolist() == [7.0, 0.0]
