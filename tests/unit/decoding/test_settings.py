"""The typed settings object: wire names, defaults, and fallback on bad values."""

from decoding.settings import Settings


def test_wire_names_map_to_fields() -> None:
    s, warnings = Settings.from_dict({"maxNewTokens": 10, "timeBudgetMs": 500, "stopOnUncertain": True})
    assert (s.max_new_tokens, s.time_budget_ms, s.stop_on_uncertain) == (10, 500, True)
    assert warnings == []
    assert Settings().to_wire()["contextTokens"] == Settings().context_tokens


def test_bad_values_fall_back_to_defaults_with_a_warning() -> None:
    base = Settings.from_dict({"drafts": 5})[0]
    s, warnings = Settings.from_dict(
        {"drafts": "many", "mode": "paragraph", "maxNewTokens": -3, "monitors": "yes", "bogus": 1}, base
    )
    d = Settings()
    assert (s.drafts, s.mode, s.max_new_tokens, s.monitors) == (d.drafts, d.mode, d.max_new_tokens, d.monitors)
    assert len(warnings) == 5
    assert any("bogus" in w for w in warnings)


def test_floats_and_integral_floats() -> None:
    s, warnings = Settings.from_dict({"drafts": 2.0, "temperature": 1})
    assert s.drafts == 2 and isinstance(s.drafts, int) and s.temperature == 1.0 and not warnings


def test_speculation_loads_float32_where_quantize_is_auto() -> None:
    """int8's activation rounding differs between a one-token step and a verify pass, so
    speculation asks for float32 unless the user set the weights; `auto` goes on to the loader."""
    assert Settings().load_quantize == "auto"
    assert Settings(speculative=True).load_quantize == "none"
    assert Settings(speculative=True, quantize="int8").load_quantize == "int8"
    assert Settings(quantize="int4").load_quantize == "int4"
