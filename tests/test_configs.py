"""The one mapping -> config dataclass builder (`stage.configs.from_dict`): nested sections,
tuples, unknown keys, wrong types and missing fields, each a one-line ConfigError naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from stage.configs import from_dict, to_dict
from stage.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    rate: int = 32_000
    gain: float = 1.0
    name: str | None = None

    def __post_init__(self) -> None:
        if self.rate < 1:
            raise ConfigError(f"rate must be >= 1, got {self.rate}")


@dataclass(frozen=True)
class Outer:
    stem: str
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    pair: tuple[float, float] = (0.8, 1.2)
    many: tuple[int, ...] = ()
    flag: bool = False


def test_nested_sections_tuples_and_defaults():
    c = from_dict(Outer, {"stem": "bass", "inner": {"rate": 16_000.0, "gain": 2}, "maybe": {"name": "x"},
                          "pair": [1, 1.5], "many": [0, 1, 2], "flag": True})
    assert c == Outer("bass", Inner(16_000, 2.0), Inner(name="x"), (1.0, 1.5), (0, 1, 2), True)
    assert isinstance(c.inner.rate, int) and isinstance(c.inner.gain, float) and isinstance(c.pair, tuple)
    assert from_dict(Outer, {"stem": "drums", "inner": None}).inner == Inner()  # null: the section's defaults
    assert from_dict(Outer, {"stem": "drums", "inner": Inner(8000)}).inner == Inner(8000)  # an instance is kept
    assert from_dict(Outer, {"stem": "a", "many": []}).many == ()


def test_to_dict_reads_back_equal_with_lists_for_tuples():
    c = Outer("bass", Inner(16_000), Inner(), (0.9, 1.1), (3, 4))
    data = to_dict(c)
    assert data["pair"] == [0.9, 1.1] and data["many"] == [3, 4] and data["inner"]["rate"] == 16_000
    assert from_dict(Outer, data) == c


@pytest.mark.parametrize("data, message", [
    ({"stem": "a", "inner": {"rat": 1}}, "unknown config key 'inner.rat' (did you mean 'inner.rate'?)"),
    ({"stem": "a", "zzz": 1}, "unknown config key 'zzz'; known keys: stem, inner, maybe, pair, many, flag"),
    ({"stem": "a", "inner": {"rate": "fast"}}, "inner.rate must be an integer, got 'fast' (str)"),
    ({"stem": "a", "inner": {"rate": 1.5}}, "inner.rate must be an integer, got 1.5 (float)"),
    ({"stem": "a", "inner": {"gain": True}}, "inner.gain must be a number, got True (bool)"),
    ({"stem": "a", "flag": 1}, "flag must be true or false, got 1 (int)"),
    ({"stem": ["a"]}, "stem must be a string, got ['a'] (list)"),
    ({"stem": "a", "pair": [1.0]}, "pair must be a list of 2 values, got [1.0] (list)"),
    ({"stem": "a", "pair": [1.0, "x"]}, "pair[1] must be a number, got 'x' (str)"),
    ({"stem": "a", "many": 3}, "many must be a list, got 3 (int)"),
    ({"stem": "a", "many": [1, "two"]}, "many[1] must be an integer, got 'two' (str)"),
    ({"stem": "a", "inner": 3}, "inner must be a mapping, got 3 (int)"),
    ({"stem": "a", "maybe": [1]}, "maybe must be a mapping, got [1] (list)"),
    ({"stem": "a", "inner": {"rate": 0}}, "inner: rate must be >= 1, got 0"),  # the section's own check, named
    ({"inner": {}}, "config needs stem"),
    ([1, 2], "config must be a mapping, got [1, 2] (list)"),
])
def test_every_bad_input_is_one_line_naming_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, data)
    assert str(err.value) == message


def test_where_and_what_name_the_mapping():
    with pytest.raises(ConfigError, match=r"^unknown sample config key 'inner\.rat' \(did you mean 'inner\.rate'\?\)$"):
        from_dict(Outer, {"stem": "a", "inner": {"rat": 1}}, what="sample config")
    with pytest.raises(ConfigError, match=r"^unknown config key lm\.'inner\.rat'"):
        from_dict(Outer, {"stem": "a", "inner": {"rat": 1}}, where="lm.")
    with pytest.raises(ConfigError, match=r"^lm\.inner\.gain must be a number"):
        from_dict(Outer, {"stem": "a", "inner": {"gain": "loud"}}, where="lm.")
    with pytest.raises(ConfigError, match=r"^sample config needs stem$"):
        from_dict(Outer, {}, what="sample config")


def test_yaml_strings_for_floats_and_numbers_for_strings():
    c = from_dict(Outer, {"stem": 7, "inner": {"gain": "1e-5"}})  # YAML 1.1 reads 1e-5 as a string
    assert c.stem == "7" and c.inner.gain == 1e-5
