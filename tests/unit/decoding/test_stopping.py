"""Stopping rules: line and block ends, suffix overlap, and trimming."""

from decoding.stopping import StopRules, indent_width, resolve_mode, trim_overlap


def test_line_mode_stops_at_newline() -> None:
    rules = StopRules("line", "x = ", "")
    assert rules.cut("foo(1)") is None
    assert rules.cut("foo(1)\nbar") == 6
    assert rules.finish("foo(1)\nbar = 2\n") == "foo(1)"


def test_block_mode_after_opener_keeps_the_body_and_stops_at_dedent() -> None:
    rules = StopRules("block", "def f(x):", "")
    text = "\n    y = x + 1\n    return y\nprint(f(2))\n"
    assert rules.finish(text) == "\n    y = x + 1\n    return y"
    # While the dedented line is still growing, nothing is decided yet.
    assert rules.cut("\n    return y\npri") is None
    assert rules.cut("\n    return y\nprint(1)\n") == len("\n    return y")


def test_block_mode_on_blank_line_keeps_statements_at_the_cursor_indent() -> None:
    rules = StopRules("block", "    ", "\n")
    text = "a = 1\n    b = 2\nc = 3\n"  # `c` is dedented below the cursor's 4 columns
    assert rules.finish(text) == "a = 1\n    b = 2"


def test_block_mode_on_blank_line_stops_after_a_closed_compound_statement() -> None:
    rules = StopRules("block", "    ", "")
    text = "for x in xs:\n        print(x)\n    return 1\n"
    assert rules.finish(text) == "for x in xs:\n        print(x)"


def test_block_mode_stops_when_retyping_the_code_below() -> None:
    rules = StopRules("block", "    ", "\n    return total\n")
    text = "total = sum(xs)\n    return total\n"
    assert rules.finish(text) == "total = sum(xs)"


def test_suffix_overlap_is_trimmed() -> None:
    assert trim_overlap("x)", ")") == "x"
    assert trim_overlap("foo(a, b))", "))") == "foo(a, b"
    assert trim_overlap("abc", "") == "abc"
    assert trim_overlap("abc", "xyz") == "abc"
    rules = StopRules("line", "print(", ")\nmore")
    assert rules.finish("total)\n") == "total"


def test_mode_auto_and_indent() -> None:
    assert resolve_mode("auto", "    ") == "block"
    assert resolve_mode("auto", "def f():") == "block"
    assert resolve_mode("auto", "x = ") == "line"
    assert resolve_mode("line", "") == "line"
    assert indent_width("\t x") == 9
    assert indent_width("    x") == 4


def test_a_draft_cut_by_a_budget_drops_its_unfinished_line_in_block_mode() -> None:
    rules = StopRules("block", "    ", "")
    assert rules.finish("a = 1\n    b = items[", complete=False) == "a = 1"
    assert rules.finish("a = 1\n    b = items[", complete=True) == "a = 1\n    b = items["
    assert rules.finish("b = items[", complete=False) == "b = items["  # nothing better to show
    assert StopRules("line", "x = ", "").finish("items[0] +", complete=False) == "items[0] +"


def test_a_draft_cut_by_a_budget_does_not_end_on_a_dot() -> None:
    line = StopRules("line", "    return ", "")
    assert line.finish("items[0].price + items[2].", complete=False) == "items[0].price + items[2]"
    assert line.finish("nx.", complete=False) == "nx"
    assert line.finish("f(x).", complete=False) == "f(x)"
    assert line.finish("nx.", complete=True) == "nx."  # the model ended it there: its choice
    assert line.finish("x[...", complete=False) == "x[..."  # an Ellipsis is no attribute access
    assert line.finish("x = '.", complete=False) == "x = '."
