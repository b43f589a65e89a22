"""Row blocks cover every row once, run on several threads at once, and errors reach the caller."""

import threading

import pytest

from sae_assets.core.common.row_split import over_row_blocks, row_blocks


@pytest.mark.parametrize(("n_rows", "threads"), [(1, 1), (1, 4), (7, 2), (8, 3), (100, 16)])
def test_blocks_cover_every_row_once(n_rows: int, threads: int) -> None:
    blocks = row_blocks(n_rows, threads)
    assert len(blocks) == max(1, min(threads, n_rows))
    assert [row for lo, hi in blocks for row in range(lo, hi)] == list(range(n_rows))
    assert all(hi > lo for lo, hi in blocks)


def test_blocks_run_at_once_on_distinct_threads() -> None:
    seen: dict[tuple[int, int], int] = {}
    barrier = threading.Barrier(3, timeout=10)  # only passes if the three blocks run together

    def kernel(first: int, last: int) -> None:
        barrier.wait()
        seen[(first, last)] = threading.get_ident()

    over_row_blocks(kernel, 9, 3)
    assert sorted(seen) == [(0, 3), (3, 6), (6, 9)]
    assert len(set(seen.values())) == 3


def test_an_error_in_any_block_is_raised_after_all_finish() -> None:
    done: list[int] = []

    def kernel(first: int, last: int) -> None:
        if first > 0:
            raise ValueError(f"block {first}")
        done.append(first)

    with pytest.raises(ValueError, match="block"):
        over_row_blocks(kernel, 6, 3)
    assert done == [0]
