"""Contract symbols (``ESZ4``, ``6AH25``, spreads) and the shipped contract map."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pine.contracts import ContractMapError, ContractSymbol, is_spread, load_contract_map, parse_contract_symbol

REPO = Path(__file__).resolve().parents[1]
CONTRACT_MAP = REPO / "data" / "contract_map.yml"
ALL_ROOTS = {
    "ES", "NQ", "RTY", "YM", "6A", "6B", "6C", "6E", "6J", "6M", "6N", "6S",
    "CL", "NG", "PL", "GC", "SI", "HG", "ZC", "ZS", "ZW", "ZB",
}


@pytest.mark.parametrize(
    ("raw", "root", "month", "year"),
    [
        ("ESZ4", "ES", 12, 2024),
        ("6AH25", "6A", 3, 2025),
        ("NQM5", "NQ", 6, 2025),
        ("RTYZ4", "RTY", 12, 2024),
        ("ZBH5", "ZB", 3, 2025),
        ("GCJ5", "GC", 4, 2025),
        ("HGK5", "HG", 5, 2025),
        ("6JU4", "6J", 9, 2024),
        ("CLF25", "CL", 1, 2025),
    ],
)
def test_parse_outright(raw: str, root: str, month: int, year: int) -> None:
    parsed = parse_contract_symbol(raw, reference_year=2024)
    assert parsed == ContractSymbol(year=year, month=month, root=root, raw=raw)
    assert not is_spread(raw)


@pytest.mark.parametrize(
    ("raw", "reference_year", "year"),
    [
        ("ESZ4", 2024, 2024),
        ("ESZ3", 2024, 2023),  # recently expired: stays in this decade
        ("ESZ2", 2024, 2022),
        ("ESZ1", 2024, 2031),  # three years back is too old: next decade
        ("ESZ9", 2024, 2029),
        ("ESH0", 2029, 2030),
        ("ESZ4", 2029, 2034),
        ("ESZ9", 2030, 2029),
        ("ESH25", 2031, 2025),  # two digits are never shifted
    ],
)
def test_one_digit_year_resolves_to_the_nearest_decade(raw: str, reference_year: int, year: int) -> None:
    parsed = parse_contract_symbol(raw, reference_year=reference_year)
    assert parsed is not None
    assert parsed.year == year


def test_default_reference_year_is_now() -> None:
    now = datetime.now(UTC).year
    parsed = parse_contract_symbol("ESZ4")
    assert parsed is not None
    assert parsed.year % 10 == 4
    assert now - 2 <= parsed.year <= now + 7


@pytest.mark.parametrize("raw", [" esz4 ", "esz4", "EsZ4\n", "\tESZ4"])
def test_lowercase_and_whitespace(raw: str) -> None:
    parsed = parse_contract_symbol(raw, reference_year=2024)
    assert parsed is not None
    assert (parsed.root, parsed.month, parsed.year, parsed.month_code) == ("ES", 12, 2024, "Z")
    assert parsed.raw == raw.strip()


@pytest.mark.parametrize("raw", ["ESM5-ESU5", "6AH5-6AM5", "UD:1V: GN 0320 1234567", "ES:BF Z4-H5-M5", "ES Z4"])
def test_spreads_are_recognised_and_not_parsed(raw: str) -> None:
    assert is_spread(raw)
    assert parse_contract_symbol(raw, reference_year=2024) is None


@pytest.mark.parametrize("raw", ["", "   ", "ES", "ESZ", "Z4", "ESA4", "ESZ4X", "ESZ123", "ES.FUT", "123", "ÉSZ4"])
def test_garbage_is_not_a_contract(raw: str) -> None:
    assert parse_contract_symbol(raw, reference_year=2024) is None


def test_contract_symbols_sort_by_expiry() -> None:
    symbols = [parse_contract_symbol(s, reference_year=2024) for s in ("ESH25", "ESZ4", "ESM5")]
    assert [s.raw for s in sorted(symbols)] == ["ESZ4", "ESH25", "ESM5"]  # type: ignore[union-attr]


def test_shipped_map_has_every_root_with_its_parent_symbol() -> None:
    cmap = load_contract_map(CONTRACT_MAP)
    assert set(cmap.roots()) == ALL_ROOTS
    for root in ALL_ROOTS:
        spec = cmap[root]
        assert spec.parent == f"{root}.FUT"
        assert cmap.root_of_parent(spec.parent) == root
        assert spec.multiplier > 0
        assert spec.tick_size > 0
    assert (cmap["ES"].multiplier, cmap["ES"].tick_size, cmap["ES"].exchange) == (50, 0.25, "CME")
    assert (cmap["GC"].exchange, cmap["ZB"].tick_size) == ("COMEX", 0.03125)


def test_map_resolves_contracts_to_roots() -> None:
    cmap = load_contract_map(CONTRACT_MAP)
    assert cmap.root_of_contract("ESZ4") == "ES"
    assert cmap.root_of_contract("6AH25") == "6A"
    assert cmap.root_of_contract("ESM5-ESU5") is None
    assert cmap.root_of_contract("XXZ4") is None
    assert cmap.root_of_parent("XX.FUT") is None
    with pytest.raises(KeyError, match="XX"):
        cmap["XX"]


def _write_map(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "map.yml"
    path.write_text(body)
    return path


GOOD_ES = "{name: E-mini, parent: ES.FUT, exchange: CME, multiplier: 50, tick_size: 0.25, months: HMUZ}"


def test_map_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ContractMapError, match="not found") as exc:
        load_contract_map(missing)
    assert str(missing) in str(exc.value)


def test_map_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = _write_map(tmp_path, "contracts:\n  ES: {name: [unclosed\n")
    with pytest.raises(ContractMapError, match="not valid YAML") as exc:
        load_contract_map(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("body", ["- ES\n", "version: 1\n", "contracts: {}\n", "contracts: [ES]\n"])
def test_map_without_contracts_mapping(tmp_path: Path, body: str) -> None:
    path = _write_map(tmp_path, body)
    with pytest.raises(ContractMapError, match="contracts: expected a non-empty mapping") as exc:
        load_contract_map(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("nq_spec", "key", "message"),
    [
        ("months: HMUA", "contracts.NQ.months", "month codes"),
        ("months: ''", "contracts.NQ.months", "month codes"),
        ("tick_size: -0.25", "contracts.NQ.tick_size", "greater than 0"),
        ("multiplier: 0", "contracts.NQ.multiplier", "greater than 0"),
        ("tick: 0.25", "contracts.NQ.tick", "Extra inputs"),
    ],
)
def test_map_bad_spec_names_file_and_key(tmp_path: Path, nq_spec: str, key: str, message: str) -> None:
    fields = {"name": "E-mini Nasdaq", "parent": "NQ.FUT", "exchange": "CME", "multiplier": "20",
              "tick_size": "0.25", "months": "HMUZ"}
    bad_key, bad_value = nq_spec.split(": ")
    fields.pop(bad_key, None)
    fields[bad_key] = bad_value
    nq = "{" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"
    path = _write_map(tmp_path, f"contracts:\n  ES: {GOOD_ES}\n  NQ: {nq}\n")
    with pytest.raises(ContractMapError) as exc:
        load_contract_map(path)
    text = str(exc.value)
    assert str(path) in text
    assert f"{key}: " in text
    assert message in text
    assert "contracts.ES" not in text


def test_map_reports_every_bad_root(tmp_path: Path) -> None:
    path = _write_map(tmp_path, "contracts:\n  ES: 5\n  NQ: {parent: NQ.FUT}\n")
    with pytest.raises(ContractMapError) as exc:
        load_contract_map(path)
    text = str(exc.value)
    assert "contracts.ES: Input should be a valid dictionary" in text
    assert "contracts.NQ.tick_size: Field required" in text
