"""Follow-up steps under load, in a real browser: an app in this process with slowed steps.

A click's download files and an image's encode run as follow-up events in their own queue
groups. These tests slow those steps down (a sleep before the real work) so that the visitor's
next action always lands while the previous follow-up is still running, and check that the
newest action still gets its own follow-up: files offered for the mask on screen, "Ready" for
the image on screen.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.app_fixtures import TEST_POINTS_PER_SIDE, free_port, random_vit_t_checkpoint  # noqa: F401
from tests.test_browser import _BUTTON_DISABLED, browser, image_point, new_page, pick_example, wait_text  # noqa: F401


@pytest.fixture(scope="module")
def slowed_app(random_vit_t_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """``(url, delays)``: the demo served from this process; ``delays["files"|"encode"]`` in seconds."""
    from demo import services
    from demo.app import build_app, launch
    from demo.config import DemoConfig

    delays = {"files": 0.0, "encode": 0.0}

    class SlowStore(services.OutputStore):
        def write_prompt_outputs(self, *args, **kwargs):
            time.sleep(delays["files"])
            return super().write_prompt_outputs(*args, **kwargs)

    real_encode = services.encode_image

    def slow_encode(*args, **kwargs):
        time.sleep(delays["encode"])
        return real_encode(*args, **kwargs)

    config = DemoConfig(host="127.0.0.1", port=free_port(), model="vit_t", checkpoint=str(random_vit_t_checkpoint),
                        points_per_side=TEST_POINTS_PER_SIDE, warm_up=False)
    models = services.ModelService("vit_t", str(random_vit_t_checkpoint))
    app = build_app(config, models=models, store=SlowStore(tmp_path_factory.mktemp("slow_outputs")))
    services.encode_image = slow_encode  # looked up at call time by the encode step
    try:
        launch(app, config, prevent_thread_lock=True, quiet=True)
        yield f"http://127.0.0.1:{config.port}/", delays
    finally:
        services.encode_image = real_encode
        app.close()


def test_fast_clicks_while_older_files_are_written_still_offer_the_newest_files(slowed_app, new_page) -> None:
    url, delays = slowed_app
    delays["files"], delays["encode"] = 1.5, 0.0
    page = new_page(url)
    pick_example(page, "chelsea")
    spots = [image_point(page, "#points-canvas", fx, fy)[0] for fx, fy in ((0.5, 0.45), (0.3, 0.3), (0.7, 0.6))]
    for x, y in spots:  # the first click's files take 1.5 s; the other two are answered meanwhile
        page.mouse.click(x, y)
    info = wait_text(page, "#points-info", lambda t: "3 points" in t, timeout_s=60)
    page.wait_for_function(f"!{_BUTTON_DISABLED % 'points-download-rle'}", timeout=30_000)
    with page.expect_download() as download:
        page.locator("#points-download-rle").click()
    doc = json.loads(Path(download.value.path()).read_text())
    shown_iou = info.split("IoU")[1].split("·")[0].strip()
    assert f"{doc['annotations'][0]['predicted_iou']:.3f}" == shown_iou, (doc["annotations"][0], info)


def test_a_new_image_chosen_during_an_encode_is_encoded_too(slowed_app, new_page) -> None:
    url, delays = slowed_app
    delays["files"], delays["encode"] = 0.0, 2.0
    page = new_page(url)
    page.locator("#examples button:has(img[src*='/chelsea.'])").first.click()
    wait_text(page, "#encode-status", lambda t: "Encoding 451×300" in t)
    # chelsea's encode is still running (2 s head start) when the coffee photo is chosen
    page.locator("#examples button:has(img[src*='/coffee.'])").first.click()
    status = wait_text(page, "#encode-status", lambda t: t.startswith("Ready") and "600×400" in t, timeout_s=60)
    assert "MobileSAM" in status, status
