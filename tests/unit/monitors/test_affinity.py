"""Name affinity: the assignment target before `obj.` and the valid names it points to."""

from __future__ import annotations

from pathlib import Path

import pytest

from decoding.engine import CompletionRequest, Engine
from decoding.settings import Settings
from monitors import affinity
from monitors.affinity import CLOSE, EQUAL, assignment_target, preferred
from monitors.analysis import Analysis
from monitors.names import NameMonitor
from monitors.vocab import VocabIndex


@pytest.mark.parametrize(("before", "target"), [
    ("        root_path = self.", "root_path"),
    ("x: int = self.config.", "x"),
    ("self.cli.name = self.", "name"),
    ("total += self.", "total"),
    ("auth = await self.backend.", "auth"),
    ("return f(a, response_class=current_app.", "response_class"),
    ("if (n := self.", "n"),
    ("first line\nenc = self.", "enc"),
])
def test_the_target_of_an_assignment_or_keyword(before: str, target: str) -> None:
    assert assignment_target(before) == target


@pytest.mark.parametrize("before", [
    "if a == b.",  # a comparison, not an assignment
    "ok = a != b.",
    "x <= self.",
    "k, v = parser.",  # which element gets the value is not known
    "logger = logging.getLogger(app.",  # the value is a call's result, not the attribute
    "y = foo().",
    "url = url.",  # a method that transforms the value (`url.replace(...)`)
    "self.node = self.node.",
    "x = a + self.",
    "enc = x\nself.",  # only the cursor's line counts
    "self.",
])
def test_no_target_where_the_value_is_not_the_attribute(before: str) -> None:
    assert assignment_target(before) is None


@pytest.mark.parametrize(("name", "target", "bonus"), [
    ("root_path", "root_path", EQUAL),
    ("Config", "config", EQUAL),  # case and leading underscores do not matter
    ("_cache", "cache", EQUAL),
    ("lastChild", "last_child", EQUAL),  # the same words
    ("encoding", "enc", CLOSE),  # the target starts the name
    ("response_class", "resp", CLOSE),
    ("strongly_connected_components", "scc", CLOSE),  # acronym
    ("shortest_path_length", "spl", CLOSE),
    ("maxWeightMatching", "mwm", CLOSE),  # camelCase words
    ("cut_size", "potential_cut_size", CLOSE),  # the target ends with the name's words
    ("connection_timeout", "timeout", CLOSE),  # or the name with the target's
    ("connection_timeout", "out", 0.0),  # words, not characters
    ("encoding", "en", 0.0),  # two characters say too little
    ("shortest_path", "sp", 0.0),
    ("size", "potential_cut_size2", 0.0),
    ("hostname", "netloc", 0.0),
    ("path", "cut_size", 0.0),
    ("response_class", "classes", 0.0),
])
def test_affinity_relations(name: str, target: str, bonus: float) -> None:
    assert affinity.affinity(name, target) == bonus


def test_preferred_groups_the_related_names_by_strength() -> None:
    names = frozenset({"encoding", "encode", "errors", "enc", "buffer"})
    assert preferred(names, "enc = self.") == {EQUAL: {"enc"}, CLOSE: {"encoding", "encode"}}
    assert preferred(names, "if self.") == {}
    assert preferred(names, "x = self.") == {}


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return Analysis(timeout=60)


def _id(index: VocabIndex, piece: bytes) -> int:
    found = index.ids_of(piece)
    assert found, piece
    return found[0]


def test_the_name_monitor_adds_the_bonus_on_the_path_to_related_names(smol_index: VocabIndex,
                                                                       analysis: Analysis) -> None:
    m = NameMonitor(smol_index, analysis, "import os\n\nsep = os.", "\n", None, None, affinity=5.0)
    mask, bias = m.allowed(), m.bias()
    assert mask is not None and bias is not None and bias.shape == mask.shape
    sep, se, s, get = (_id(smol_index, p) for p in (b"sep", b"se", b"s", b"get"))
    # Only the natural next token of `sep` (the longest on its path) gets the bonus, and the
    # tokens that finish it and break (`sep(`, `sep.`); not `s`, `se`, nor other names.
    assert bias[sep] == 5.0 and bias[se] == 0 and bias[s] == 0 and bias[get] == 0
    assert bias[_id(smol_index, b"sep.")] == 5.0 if smol_index.ids_of(b"sep.") else True
    assert bool((bias[~mask] == 0).all())  # never a bonus for a token the constraint forbids
    m.accept(se)  # the model went another way along the name: the bonus follows it
    after = m.bias()
    assert after is not None and after[_id(smol_index, b"p")] == 5.0
    m.accept(_id(smol_index, b"p"))
    m.accept(_id(smol_index, b"\n"))
    assert m.bias() is None  # the name is finished: no constraint, no bonus
    plain = NameMonitor(smol_index, analysis, "import os\n\nvalue = os.", "\n", None, None, affinity=5.0)
    assert plain.allowed() is not None and plain.bias() is None  # no related name: no bonus
    off = NameMonitor(smol_index, analysis, "import os\n\nsep = os.", "\n", None, None, affinity=0.0)
    assert off.allowed() is not None and off.bias() is None  # the setting switched it off


def test_the_bonus_follows_a_healed_dot(smol_index: VocabIndex, analysis: Analysis) -> None:
    m = NameMonitor(smol_index, analysis, "import os\nsep = os", "\n", None, None, heal=".", affinity=2.0)
    bias = m.bias()
    longest = max(smol_index.prefixes_of(b".sep"), key=lambda i: len(smol_index.token_bytes(i)))
    assert bias is not None and bias[longest] == 2.0
    assert bias[_id(smol_index, b".__")] == 0  # `.__file__` is valid but unrelated
    m.accept(_id(smol_index, b"."))
    bias = m.bias()
    assert bias is not None and bias[_id(smol_index, b"sep")] == 2.0
    fork = m.fork()
    m.rollback(1)
    assert fork.bias() is not None and fork.bias()[_id(smol_index, b"sep")] == 2.0
    assert m.bias()[longest] == 2.0


def test_the_bonus_steers_the_real_model_to_the_named_attribute(smol_engine: Engine, tmp_path: Path) -> None:
    """With the real default model: `level = config.` goes on with `log_level` (the same last
    word), and does only because of the bonus: without it the model picks another valid name."""
    (tmp_path / "settings.py").write_text(
        "class Settings:\n"
        "    def __init__(self) -> None:\n"
        "        self.connection_timeout = 30.0\n"
        "        self.request_retries = 3\n"
        "        self.user_agent = 'draftls'\n"
        "        self.cache_directory_path = '/var/cache/app'\n"
        "        self.log_level = 'INFO'\n"
        "        self.max_pool_size = 8\n"
    )
    text = ("from settings import Settings\n\nconfig = Settings()\n\n\ndef start() -> None:\n"
            "    level = config.")
    main = tmp_path / "main.py"
    main.write_text(text)

    def complete(bonus: float) -> str:
        settings = Settings.from_dict({"drafts": 1, "maxNewTokens": 8, "timeBudgetMs": 600_000,
                                       "nameAffinity": bonus})[0]
        smol_engine.last, smol_engine.cached = None, []
        req = CompletionRequest(text, len(text), settings=settings, path=str(main), workspace=str(tmp_path))
        return smol_engine.complete(req).drafts[0].text

    assert Settings().name_affinity > 0  # on by default
    assert complete(Settings().name_affinity).startswith("log_level")
    without = complete(0.0)
    assert not without.startswith("log_level")
    assert without.startswith(("connection", "request", "user", "cache", "max"))  # another valid name
