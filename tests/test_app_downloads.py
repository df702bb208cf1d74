"""The app's download step offers files only for the result a tab still shows.

Clicks and file writing run in different queue groups, so a visitor's newer click can be on
screen while an older result's files are still being written. These tests drive the step's
function directly (no server): the race itself depends on timing in a browser.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.config import DemoConfig
from demo.services import EverythingResult, OutputStore, read_image
from demo.state import PackedMasks, Session, TabResult
from demo.ui import AppContext, download_update

SKIP = {"__type__": "update"}  # what gr.skip() returns: leave the buttons as they are


def _result(image_hw: tuple[int, int], offset: int) -> TabResult:
    h, w = image_hw
    masks = np.zeros((3, h, w), bool)
    for i in range(3):
        masks[i, 4 + offset: 20 + offset + 4 * i, 6: 30 + 2 * i] = True
    return TabResult(PackedMasks.pack(masks, [0.9, 0.8, 0.7]), chosen=0)


@pytest.fixture()
def ctx(tmp_path: Path) -> AppContext:
    return AppContext(config=DemoConfig(), models=None, store=OutputStore(tmp_path))  # type: ignore[arg-type]


@pytest.fixture()
def session() -> Session:
    rng = np.random.default_rng(0)
    image = read_image(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return copy.deepcopy(Session()).with_image(image, "digest", "photo")


def _enabled_files(values: list) -> list[str]:
    assert isinstance(values, list) and len(values) == 3, values
    assert all(v.interactive for v in values), values
    return [v.value["path"] for v in values]


def test_files_are_offered_for_the_result_on_screen(ctx: AppContext, session: Session) -> None:
    result = _result(session.size, 0)
    shown = replace(session, point_result=result)
    shown.shown.show("points", result)
    files = _enabled_files(download_update(ctx, shown, "points", result))
    assert [Path(f).name for f in files] == ["photo_mask.png", "photo_cutout.png", "photo_masks_rle.json"]
    assert all(Path(f).is_file() for f in files)


def test_files_of_a_replaced_result_are_not_offered(ctx: AppContext, session: Session) -> None:
    old, new = _result(session.size, 0), _result(session.size, 8)
    session.shown.show("points", new)  # a newer click was shown before this step started
    assert download_update(ctx, session, "points", old) == SKIP
    # nor when the newer result is shown while the files are being written
    session.shown.show("points", old)

    class SlowStore(OutputStore):
        def write_prompt_outputs(self, *args, **kwargs):
            files = super().write_prompt_outputs(*args, **kwargs)
            session.shown.show("points", new)
            return files

    slow = AppContext(config=ctx.config, models=None, store=SlowStore(ctx.store.root))  # type: ignore[arg-type]
    assert download_update(slow, session, "points", old) == SKIP
    # the other tab's result is unaffected
    box = _result(session.size, 4)
    session.shown.show("box", box)
    _enabled_files(download_update(ctx, session, "box", box))


def test_a_new_or_removed_image_withdraws_pending_files(ctx: AppContext, session: Session) -> None:
    result = _result(session.size, 0)
    session.shown.show("points", result)
    image = read_image(np.full((40, 40, 3), 200, np.uint8))
    session.with_image(image, "other", "other")
    assert download_update(ctx, session, "points", result) == SKIP
    session.shown.show("box", result)
    session.without_image()
    assert download_update(ctx, session, "box", result) == SKIP


def test_visitors_do_not_share_what_is_shown() -> None:
    initial = Session()  # what gr.State holds; every visitor starts from a deep copy of it
    a, b = copy.deepcopy(initial), copy.deepcopy(initial)
    assert a.shown is not b.shown
    marker = object()
    a.shown.show("points", marker)
    assert a.shown.is_shown("points", marker) and not b.shown.is_shown("points", marker)


def test_everything_files_with_and_without_masks(tmp_path: Path) -> None:
    """Zero masks: the empty union PNG and the empty RLE list, but no cut-out of nothing;
    one mask: the cut-out keeps exactly that mask's pixels."""
    store = OutputStore(tmp_path)
    image = np.full((30, 40, 3), 120, np.uint8)
    overlay = image.copy()
    none = store.write_everything_outputs("photo", image, EverythingResult([], 1.0, {}, "m"), overlay)
    assert none.cutout_png is None
    assert [Path(f).name for f in none.as_list()] == ["photo_all_masks.png", "photo_masks_rle.json"]
    mask = np.zeros((30, 40), bool)
    mask[5:15, 10:30] = True
    record = {"segmentation": mask, "area": int(mask.sum()), "bbox": [10, 5, 20, 10], "predicted_iou": 0.9}
    one = store.write_everything_outputs("photo", image, EverythingResult([record], 1.0, {}, "m"), overlay)
    assert [Path(f).name for f in one.as_list()] == ["photo_all_masks.png", "photo_cutout.png", "photo_masks_rle.json"]
    alpha = np.asarray(Image.open(one.cutout_png))[..., 3]
    assert np.array_equal(alpha > 0, mask)
