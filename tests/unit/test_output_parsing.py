"""GLM output parsing: answer, reasoning and boxes in separate fields."""

from __future__ import annotations

from workers.backends.output_parsing import parse_output


def test_plain_text_passes_through() -> None:
    parsed = parse_output("circle <|endoftext|>", ["<|endoftext|>"])
    assert parsed.answer == "circle" and parsed.reasoning is None and parsed.boxes == []


def test_thinking_answer_and_boxes() -> None:
    raw = (
        "<think>The shape has three corners.</think>"
        "<answer>It is a triangle at <|begin_of_box|>[10, 20, 30, 40]<|end_of_box|></answer>"
        "<|user|>"
    )
    parsed = parse_output(raw, ["<|user|>"])
    assert parsed.reasoning == "The shape has three corners."
    assert parsed.answer == "It is a triangle at [10, 20, 30, 40]"
    assert parsed.boxes == ["[10, 20, 30, 40]"]


def test_empty_think_block_of_non_thinking_mode() -> None:
    parsed = parse_output("<think></think>\nyes", [])
    assert parsed.answer == "yes" and parsed.reasoning is None


def test_unterminated_answer_and_think_without_opening() -> None:
    assert parse_output("reasoning here</think><answer>blue", []).answer == "blue"
    assert parse_output("reasoning here</think><answer>blue", []).reasoning == "reasoning here"
