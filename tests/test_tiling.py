"""Overlapping tiles and raised-cosine blending (numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from icechart.infer.tiling import Blender, iter_tiles, ramp, tile_starts, tile_windows, window_weights


@pytest.mark.parametrize("n,tile,overlap", [(100, 32, 8), (33, 32, 8), (32, 32, 8), (10, 32, 8), (257, 64, 16)])
def test_tile_starts_cover_with_overlap(n: int, tile: int, overlap: int) -> None:
    starts = tile_starts(n, min(tile, n), min(overlap, min(tile, n) - 1))
    t = min(tile, n)
    assert starts[0] == 0 and starts[-1] + t == n
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s : s + t] = True
    assert covered.all()
    for a, b in zip(starts, starts[1:]):
        assert a + t - b >= min(overlap, t - 1)  # neighbours overlap at least `overlap`


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        tile_starts(10, 0, 0)
    with pytest.raises(ValueError):
        tile_starts(100, 16, 16)


def test_ramp_positive_and_one_at_borders() -> None:
    w = ramp(20, 6, low_edge=True, high_edge=False)
    assert w[0] == 1 and (w > 0).all() and w[-1] < 0.1
    assert np.all(np.diff(w[-6:]) < 0)
    assert (ramp(20, 6, low_edge=True, high_edge=True) == 1).all()


def test_whole_image_is_one_window() -> None:
    assert list(iter_tiles((50, 40), 64, 8)) == [(slice(0, 50), slice(0, 40))]
    assert list(iter_tiles((500, 400), None, 8)) == [(slice(0, 500), slice(0, 400))]
    assert len(list(iter_tiles((100, 40), 64, 8))) == 2
    w = window_weights((slice(0, 50), slice(0, 40)), (50, 40), 8)
    assert (w == 1).all()


def test_blending_reproduces_a_smooth_field_exactly() -> None:
    """Tiles that all agree give the field back: weights are normalised everywhere."""
    h, w = 97, 83
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.stack([np.sin(yy / 9) + xx / 50, yy * 0 + 3])
    b = Blender((2, h, w), overlap=12)
    wins = tile_windows((h, w), 40, 12)
    assert len(wins) > 4
    for win in wins:
        b.add(win, field[(slice(None), *win)])
    np.testing.assert_allclose(b.result(), field, rtol=1e-5, atol=1e-5)


def test_blending_seams_are_smooth() -> None:
    """Disagreeing tiles (constant k per tile) blend into values between them, no jumps > step."""
    h, w = 64, 64
    b = Blender((1, h, w), overlap=16)
    for k, win in enumerate(tile_windows((h, w), 40, 16)):
        b.add(win, np.full((1, 40, 40), float(k), np.float32))
    out = b.result()[0]
    assert out.min() >= 0 and out.max() <= 3
    assert np.abs(np.diff(out, axis=1)).max() < 0.5  # a hard seam would jump by 1


def test_blender_rejects_wrong_shape() -> None:
    b = Blender((1, 10, 10), overlap=2)
    with pytest.raises(ValueError):
        b.add((slice(0, 5), slice(0, 5)), np.zeros((1, 4, 5), np.float32))


def test_parallel_tiles_equal_a_one_thread_serial_pass(tmp_path: Path) -> None:
    """Tiles on parallel threads (one torch thread each) give the bytes of a one-thread serial
    pass, blended in tile order, and leave torch's thread count as it was."""
    import torch

    from icechart.infer.forward import forward
    from icechart.model.load import load_model
    from icechart.testing import random_checkpoint

    model = load_model(random_checkpoint(tmp_path / "m.safetensors"), device="cpu")
    x = np.random.default_rng(1).standard_normal((model.net.in_channels, 70, 90)).astype(np.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        sic1, p1 = forward(model, x, tile_size=32, overlap=8)
        torch.set_num_threads(2)
        sic2, p2 = forward(model, x, tile_size=32, overlap=8)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert sic1 is not None and sic2 is not None
    np.testing.assert_array_equal(sic1, sic2)
    for chart in p1:
        np.testing.assert_array_equal(p1[chart], p2[chart])


def test_thread_settings_of_forward_workers_and_decision_do_not_leak(tmp_path):
    """The forward's tile workers and a decision on another thread (icechart.infer.threads) each
    set their own one thread; the caller's setting and the value a new thread starts with stay."""
    import threading

    import torch

    from icechart.infer.forward import forward
    from icechart.infer.threads import one_thread
    from icechart.model.load import load_model
    from icechart.testing import random_checkpoint

    model = load_model(random_checkpoint(tmp_path / "m.safetensors"), device="cpu")
    x = np.random.default_rng(2).standard_normal((model.net.in_channels, 70, 90)).astype(np.float32)
    before = torch.get_num_threads()
    seen: dict[str, int] = {}
    inside = threading.Event()
    release = threading.Event()

    def decision() -> None:
        with one_thread(torch.device("cpu")):
            seen["decision"] = torch.get_num_threads()
            inside.set()
            release.wait(30)
        seen["decision after"] = torch.get_num_threads()

    def fresh() -> None:
        seen["fresh"] = torch.get_num_threads()

    tiles: set[tuple[str, int]] = set()
    net_forward = model.net.forward

    def recording(*args, **kwargs):
        tiles.add((threading.current_thread().name.split("_")[0], torch.get_num_threads()))
        return net_forward(*args, **kwargs)

    model.net.forward = recording

    try:
        torch.set_num_threads(2)
        t = threading.Thread(target=decision)
        t.start()
        assert inside.wait(30)
        forward(model, x, tile_size=32, overlap=8)  # parallel tile workers while the decision holds 1
        seen["caller"] = torch.get_num_threads()
        release.set()
        t.join(30)
        f = threading.Thread(target=fresh)
        f.start()
        f.join(30)
    finally:
        release.set()
        torch.set_num_threads(before)
    assert seen == {"decision": 1, "caller": 2, "decision after": 2, "fresh": 2}
    assert tiles == {("icechart-forward", 1)}
