"""Contract map (root → parent symbol and specification) and raw contract-symbol parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MONTH_CODES = "FGHJKMNQUVXZ"
_OUTRIGHT = re.compile(r"^(?P<root>[A-Z0-9]+?)(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{1,2})$")


@dataclass(frozen=True, order=True)
class ContractSymbol:
    """An outright futures contract such as ``ESZ4`` (root ES, December 2024)."""

    year: int
    month: int
    root: str
    raw: str

    @property
    def month_code(self) -> str:
        return MONTH_CODES[self.month - 1]


def is_spread(raw: str) -> bool:
    """Calendar spreads (``ESM5-ESU5``) and other multi-leg instruments."""
    return "-" in raw or ":" in raw or " " in raw.strip()


def parse_contract_symbol(raw: str, *, reference_year: int | None = None) -> ContractSymbol | None:
    """Parse ``ESZ4`` / ``6AH25`` into root, month and year; None for spreads and non-futures.

    A one-digit year (CME's raw symbols) is resolved to the nearest matching year in
    [reference_year - 2, reference_year + 7].
    """
    if is_spread(raw):
        return None
    m = _OUTRIGHT.match(raw.strip().upper())
    if m is None:
        return None
    ref = reference_year or datetime.now(UTC).year
    digits = m["year"]
    if len(digits) == 2:
        year = 2000 + int(digits)
    else:
        year = (ref // 10) * 10 + int(digits)
        if year < ref - 2:
            year += 10
        elif year > ref + 7:
            year -= 10
    return ContractSymbol(year=year, month=MONTH_CODES.index(m["month"]) + 1, root=m["root"], raw=raw.strip())


class ContractSpec(BaseModel):
    """One root's exchange contract specification."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    parent: str
    exchange: str
    multiplier: float = Field(gt=0)
    tick_size: float = Field(gt=0)
    months: str

    @field_validator("months")
    @classmethod
    def _months(cls, v: str) -> str:
        bad = set(v) - set(MONTH_CODES)
        if not v or bad:
            raise ValueError(f"month codes must be letters of {MONTH_CODES}, got {v!r}")
        return v


class ContractMapError(ValueError):
    """A contract map file that cannot be used; the message names file and key."""


@dataclass(frozen=True)
class ContractMap:
    """All known roots. ``root_of_parent('ES.FUT') == 'ES'``."""

    contracts: dict[str, ContractSpec]
    source: Path | None = None

    def __getitem__(self, root: str) -> ContractSpec:
        try:
            return self.contracts[root]
        except KeyError:
            raise KeyError(f"root {root!r} is not in the contract map {self.source or ''}".strip()) from None

    def __contains__(self, root: object) -> bool:
        return root in self.contracts

    def roots(self) -> list[str]:
        """Every root symbol, sorted."""
        return sorted(self.contracts)

    def root_of_parent(self, parent: str) -> str | None:
        """The root whose Databento parent symbol is ``parent`` (``ES.FUT`` → ``ES``), else None."""
        for root, spec in self.contracts.items():
            if spec.parent == parent:
                return root
        return None

    def root_of_contract(self, raw: str) -> str | None:
        """Root of an outright contract of a known root; None for spreads and unknown roots."""
        parsed = parse_contract_symbol(raw)
        if parsed is None or parsed.root not in self.contracts:
            return None
        return parsed.root


def load_contract_map(path: Path | str) -> ContractMap:
    """Read and validate a contract map YAML file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ContractMapError(f"{path}: contract map not found") from None
    except yaml.YAMLError as exc:
        raise ContractMapError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("contracts"), dict) or not doc["contracts"]:
        raise ContractMapError(f"{path}: contracts: expected a non-empty mapping of roots to specifications")
    contracts: dict[str, ContractSpec] = {}
    problems: list[str] = []
    for root, spec in doc["contracts"].items():
        try:
            contracts[str(root)] = ContractSpec.model_validate(spec)
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(["contracts", str(root), *(str(p) for p in err["loc"])])
                problems.append(f"{key}: {err['msg'].removeprefix('Value error, ')}")
    if problems:
        raise ContractMapError(f"{path}: " + "; ".join(problems))
    return ContractMap(contracts, source=path)
