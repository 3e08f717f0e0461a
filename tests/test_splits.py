import pytest

from dan.data.splits import parse_split
from dan.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "n", "expected"),
    [
        ("train", 10, range(0, 10)),
        ("test[:7000]", 10000, range(0, 7000)),
        ("test[7000:8000]", 10000, range(7000, 8000)),
        ("test[8000:]", 10000, range(8000, 10000)),
        ("train[:90%]", 60000, range(0, 54000)),
        ("train[90%:]", 60000, range(54000, 60000)),
        ("train[10%:20%]", 2250, range(225, 450)),
        ("test[-100:]", 10000, range(9900, 10000)),
        ("test[:20000]", 10000, range(0, 10000)),
    ],
)
def test_resolve(spec: str, n: int, expected: range) -> None:
    assert parse_split(spec).resolve(n) == expected


def test_percent_halves_partition_exactly() -> None:
    n = 2251
    a = parse_split("train[:10%]").resolve(n)
    b = parse_split("train[10%:]").resolve(n)
    assert len(a) + len(b) == n and a.stop == b.start


def test_base_and_str_round_trip() -> None:
    spec = parse_split("test[7000:8000]", ("train", "test"))
    assert spec.base == "test" and str(spec) == "test[7000:8000]"
    assert str(parse_split("train")) == "train"


@pytest.mark.parametrize("bad", ["test[1:2:3]", "test[a:]", "[0:5]", "test[1.5:]", "test[:150%]", ""])
def test_bad_specs_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="split"):
        parse_split(bad).resolve(100)


def test_unknown_base_lists_valid() -> None:
    with pytest.raises(ConfigError, match="valid: train, test"):
        parse_split("validation[:5]", ("train", "test"))
