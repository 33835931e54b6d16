"""The user groups' layout (engine/keys.py): a stable group per user, ids that name their
group and never meet across groups, every key of a group under its group's tag."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from engine import keys
from rushorder.settings import Settings


def test_a_users_group_is_a_stable_hash_of_its_id() -> None:
    layout = keys.layout(16)
    # crc32 of the decimal id: the same in every process and release (hash() is salted).
    assert [layout.of(u).index for u in (1, 2, 3, 1000)] == [
        zlib.crc32(str(u).encode()) % 16 for u in (1, 2, 3, 1000)]
    spread = Counter(layout.of(u).index for u in range(1, 16_001))
    assert set(spread) == set(range(16)) and max(spread.values()) < 1.1 * 1000


@pytest.mark.parametrize("groups", [1, 3, 16, 64])
def test_ids_carry_their_group_and_never_meet_across_groups(groups: int) -> None:
    layout = keys.layout(groups)
    made = {layout.make_id(n, g): g for g in range(groups) for n in range(1, 200)}
    assert len(made) == 199 * groups  # none made twice
    assert all(layout.owner(i).index == g and layout.make_id(layout.counter(i), g) == i
               for i, g in made.items())


def test_every_key_of_a_group_carries_its_groups_tag() -> None:
    g = keys.layout(16).all[5]
    made = [g.seq, g.outbox, g.settle, g.retention, g.sales_window, g.sales_rolled,
            g.balance(7), g.history(7), g.user_orders(7), g.user_coupons(7), g.floor(7),
            g.cart(7), g.idempotency(7, "k"), g.order(80), g.issued_coupon(80), g.holders(3),
            g.sales_hour(500_000)]
    assert all(key.startswith(g.tag + ":") for key in made)
    assert len(set(made)) == len(made)


def test_the_workers_read_every_groups_stream_then_the_catalogs() -> None:
    layout = keys.layout(4)
    assert layout.outboxes == [g.outbox for g in layout.all] + [keys.OUTBOX]
    assert layout.sources == {**{g.outbox: g.index for g in layout.all},
                              keys.OUTBOX: keys.CATALOG_SOURCE}


def test_the_settings_default_is_the_engines() -> None:
    assert Settings().groups == keys.DEFAULT_GROUPS
