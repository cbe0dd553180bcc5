"""Which split an emoji belongs to, the fixed protocols, and evenly spread subsets.

Splits are by group through a hash of the group key, so an emoji's split never changes
when other emojis are added or a subset of groups is taken.
"""

from __future__ import annotations

import hashlib

from linebridge.core.config import ConfigError

SPLITS = ("train", "val", "test")
PROTOCOLS = ("self", "cross_gt", "cross_random")
PROTOCOL_SPLITS = ("test", "val")  # the splits `prepare` fixes protocol references for
GRID_ITEMS = 8  # items a sample grid shows, spread over the evaluated set


def key_fraction(key: str) -> float:
    """A stable number in [0, 1) from sha256 of `key` (Python's hash() is salted per process)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) / 16**16


def split_of(key: str, fractions: tuple[float, float, float]) -> str:
    """train / val / test for the group `key`, by where its hash falls in `fractions`."""
    u, total = key_fraction(key), sum(fractions)
    if u < fractions[0] / total:
        return "train"
    return "val" if u < (fractions[0] + fractions[1]) / total else "test"


def stratify_toned(splits: dict[str, str], toned: set[str], n_val: int, n_test: int) -> dict[str, str]:
    """`splits` with the drawings that have skin-tone variants (`toned`) re-split by count, the rest untouched.

    The cross-reference protocol with ground truth lives on toned drawings alone, so their number in validation
    and test decides its power; a hash split gives them whatever share chance gives. Validation and test take
    `n_val` and `n_test` toned drawings, in the order of a second hash of their key, from those the hash split puts
    in training; the toned drawings the hash split puts in validation or test go to training instead. So no toned
    drawing of this split's validation or test sits in the hash split's validation or test, which earlier
    choices may have looked at.
    """
    pool = sorted((g for g in toned if splits[g] == "train"), key=lambda g: key_fraction(f"toned/{g}"))
    if len(pool) < n_val + n_test:
        raise ConfigError(
            f"data.toned_groups asks for {n_val} + {n_test} toned drawings in validation and test, but only "
            f"{len(pool)} are available: lower data.toned_groups"
        )
    out = dict(splits)
    out.update(dict.fromkeys((g for g in toned if splits[g] != "train"), "train"))
    out.update(dict.fromkeys(pool[:n_test], "test"))
    out.update(dict.fromkeys(pool[n_test : n_test + n_val], "val"))
    return out


def parse_fractions(value: object) -> tuple[float, float, float]:
    """data.split_fractions as three floats (train, val, test), or a ConfigError."""
    try:
        fractions = tuple(float(f) for f in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        fractions = ()
    if len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0 or fractions[2] <= 0:
        raise ConfigError(f"data.split_fractions={value!r}: give three numbers [train, val, test], train and test > 0")
    return fractions  # type: ignore[return-value]


def protocol_dir(split: str) -> str:
    """Where the protocols of `split` live inside the prepared data: `protocols` (test) or `protocols/val`."""
    if split not in PROTOCOL_SPLITS:
        raise ValueError(f"split {split!r} has no protocols: use one of {', '.join(PROTOCOL_SPLITS)}")
    return "protocols" if split == "test" else f"protocols/{split}"


def spread(count: int, n: int) -> list[int]:
    """Up to `n` indices evenly spaced over `count` items, first and last included (deterministic).

    Sample grids show items spread over a set, because the first ones often come from one group.
    """
    if count <= n:
        return list(range(count))
    return [round(i * (count - 1) / (n - 1)) for i in range(n)] if n > 1 else [0] * min(n, count)
