"""Registry, checkpoint loading and its errors, the embedding cache, predictor argument checks."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam

from mobile_sam_core import (
    CachedEmbedding,
    CheckpointError,
    EmbeddingCache,
    SamPredictor,
    build_model,
    count_parameters,
    default_embedding_cache,
    sam_model_registry,
    warm_up,
)
from tests.conftest import make_photo_like


@pytest.fixture(scope="module")
def vit_t(official_vit_t_checkpoint):
    return sam_model_registry["vit_t"](checkpoint=str(official_vit_t_checkpoint))


def test_registry_returns_segment_anything_models(vit_t, official_vit_t_checkpoint):
    assert isinstance(vit_t, Sam)
    for part in ("image_encoder", "prompt_encoder", "mask_decoder"):
        assert hasattr(vit_t, part)
    assert vit_t.image_encoder.img_size == 1024
    assert not vit_t.training
    # Paper: TinyViT encoder 5.78M parameters (ours lacks the unused ImageNet head).
    assert count_parameters(vit_t.image_encoder) == pytest.approx(5.78e6, rel=0.03)
    state = torch.load(official_vit_t_checkpoint, weights_only=True)
    official_total = sum(v.numel() for k, v in state.items() if ".head." not in k and "norm_head" not in k
                         and "running_" not in k and "num_batches" not in k and "gaussian_matrix" not in k)
    assert count_parameters(vit_t) == official_total
    assert set(sam_model_registry) >= {"vit_t", "vit_b", "vit_l", "vit_h", "lite_medsam", "default"}
    with pytest.raises(KeyError, match="choose one of"):
        sam_model_registry["vit_x"]


def test_official_layout_loads_through_plain_load_state_dict(official_vit_t_checkpoint, vit_t):
    # segment-anything users call model.load_state_dict(torch.load(...)) themselves.
    model = sam_model_registry["vit_t"]()
    state = torch.load(official_vit_t_checkpoint, weights_only=True)
    assert any(k.startswith("image_encoder.head.") for k in state)  # unused head present...
    model.load_state_dict(state, strict=True)  # ...and accepted
    for (k, a), b in zip(model.state_dict().items(), vit_t.state_dict().values()):
        assert torch.equal(a, b), k


def test_loading_checkpoint_changes_outputs(official_vit_t_checkpoint, vit_t):
    random_model = sam_model_registry["vit_t"]()
    x = torch.randn(1, 3, 1024, 1024)
    with torch.no_grad():
        assert not torch.allclose(random_model.image_encoder(x), vit_t.image_encoder(x))


def test_truncated_checkpoint_names_file_and_expectation(official_vit_t_checkpoint, tmp_path):
    data = official_vit_t_checkpoint.read_bytes()
    bad = tmp_path / "mobile_sam.pt"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as info:
        sam_model_registry["vit_t"](checkpoint=str(bad))
    message = str(info.value)
    assert str(bad) in message and "MobileSAM" in message and "truncated" in message


def test_foreign_checkpoint_says_what_it_found(official_vit_t_checkpoint):
    with pytest.raises(CheckpointError) as info:
        sam_model_registry["lite_medsam"](checkpoint=str(official_vit_t_checkpoint))
    message = str(info.value)
    assert "LiteMedSAM" in message and "MobileSAM (vit_t)" in message and "shape mismatch" in message


def test_unrelated_network_is_refused(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(OrderedDict(("layer1.0.conv1.weight", torch.zeros(3, 3)) for _ in range(1)), path)
    with pytest.raises(CheckpointError, match="some other network"):
        sam_model_registry["vit_t"](checkpoint=str(path))


class _Payload:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        sam_model_registry["vit_t"](checkpoint=str(path))


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        sam_model_registry["vit_t"](checkpoint=str(path))


def test_wrapped_state_dict_is_accepted(official_vit_t_checkpoint, tmp_path):
    path = tmp_path / "wrapped.pt"
    torch.save({"model": torch.load(official_vit_t_checkpoint, weights_only=True)}, path)
    sam_model_registry["vit_t"](checkpoint=str(path))


def test_build_model_offline_falls_back_to_lite_medsam(monkeypatch, tmp_path):
    monkeypatch.setenv("MOBILE_SAM_OFFLINE", "1")
    monkeypatch.setenv("MOBILE_SAM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MOBILE_SAM_CHECKPOINT_VIT_T", raising=False)
    loaded = build_model("vit_t")
    assert loaded.name == "lite_medsam"
    assert loaded.checkpoint.source == "fallback"
    assert "mobile_sam.pt" in loaded.checkpoint.warning
    assert loaded.model.image_encoder.img_size == 256


def test_second_set_image_hits_cache_across_predictors(vit_t, monkeypatch):
    cache = EmbeddingCache(64 * 2**20)
    image = make_photo_like(120, 160, seed=1)
    first = SamPredictor(vit_t, cache=cache)
    first.set_image(image)
    assert not first.last_set_image_from_cache

    calls = []
    monkeypatch.setattr(vit_t.image_encoder, "forward", lambda x: calls.append(x) or None)
    second = SamPredictor(vit_t, cache=cache)
    second.set_image(image.copy())
    assert second.last_set_image_from_cache and not calls
    assert torch.equal(second.get_image_embedding(), first.get_image_embedding())
    point = dict(point_coords=np.array([[50.0, 60.0]]), point_labels=np.array([1]))
    for a, b in zip(first.predict(**point), second.predict(**point)):
        np.testing.assert_array_equal(a, b)
    assert cache.hits == 1
    # Same pixels in the other channel order are a different image for the model: a miss.
    monkeypatch.undo()
    second.set_image(image, image_format="BGR")
    assert not second.last_set_image_from_cache


def test_cache_is_bounded_by_bytes():
    item = lambda: CachedEmbedding(torch.zeros(1, 256, 64, 64), (10, 10), (1024, 1024))  # noqa: E731
    size = item().nbytes
    cache = EmbeddingCache(max_bytes=int(2.5 * size))
    for key in "abc":
        cache.put(key, item())
    assert len(cache) == 2 and "a" not in cache and cache.nbytes == 2 * size
    cache.get("b")  # b becomes most recent; d evicts c
    cache.put("d", item())
    assert "b" in cache and "c" not in cache
    tiny = EmbeddingCache(max_bytes=size - 1)
    tiny.put("x", item())
    assert len(tiny) == 0


def test_cache_is_thread_safe():
    cache = EmbeddingCache(max_bytes=10 * 4 * 16)
    make = lambda: CachedEmbedding(torch.zeros(16), (1, 1), (1, 1))  # noqa: E731

    def worker(offset: int) -> None:
        for i in range(500):
            cache.put((offset, i % 37), make())
            cache.get((offset, (i * 7) % 37))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.nbytes == len(cache) * 64 <= cache.max_bytes


def test_concurrent_set_image_of_one_image_encodes_once(vit_t, monkeypatch):
    """A click arriving while the upload is still being encoded waits for that encode."""
    import mobile_sam_core.predictor as predictor_module

    real_encode = predictor_module.encode
    calls = []

    def slow_encode(*args, **kwargs):
        calls.append(threading.get_ident())
        threading.Event().wait(0.3)  # keep the other callers arriving while this one runs
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "encode", slow_encode)
    cache = EmbeddingCache(64 * 2**20)
    image = make_photo_like(90, 120, seed=5)
    predictors = [SamPredictor(vit_t, cache=cache) for _ in range(3)]
    start = threading.Barrier(len(predictors))

    def run(p: SamPredictor) -> None:
        start.wait()
        p.set_image(image)

    threads = [threading.Thread(target=run, args=(p,)) for p in predictors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1, "the encoder ran more than once for one image"
    assert sorted(p.last_set_image_from_cache for p in predictors) == [False, True, True]
    for p in predictors[1:]:
        assert torch.equal(p.get_image_embedding(), predictors[0].get_image_embedding())
    assert (cache.misses, cache.hits) == (1, 2)


def _item() -> CachedEmbedding:
    return CachedEmbedding(torch.ones(1, 4, 2, 2), (8, 8), (8, 8))


def _in_flight(cache: EmbeddingCache, key, compute) -> tuple[threading.Thread, list]:
    """Start get_or_compute(key, compute) on a thread; returns it and a list for its outcome."""
    out: list = []

    def run() -> None:
        try:
            out.append(cache.get_or_compute(key, compute))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_get_or_compute_hands_a_result_to_waiters_and_retries_after_a_failure():
    # Too large to keep (max_bytes=0): the waiter still gets the running computation's result.
    cache = EmbeddingCache(max_bytes=0)
    release = threading.Event()
    first, first_out = _in_flight(cache, "k", lambda: (release.wait(5), _item())[1])
    while "k" not in cache._flights:
        threading.Event().wait(0.01)
    second, second_out = _in_flight(cache, "k", lambda: pytest.fail("computed twice"))
    threading.Event().wait(0.1)
    release.set()
    first.join(5)
    second.join(5)
    assert first_out[0][1] is False and second_out[0][1] is True
    assert second_out[0][0] is first_out[0][0] and len(cache) == 0

    # The computing caller fails: a waiter computes instead of hanging or failing too.
    cache = EmbeddingCache()
    release = threading.Event()

    def failing() -> CachedEmbedding:
        release.wait(5)
        raise RuntimeError("encoder crashed")

    first, first_out = _in_flight(cache, "k", failing)
    while "k" not in cache._flights:
        threading.Event().wait(0.01)
    second, second_out = _in_flight(cache, "k", _item)
    threading.Event().wait(0.1)
    release.set()
    first.join(5)
    second.join(5)
    assert isinstance(first_out[0], RuntimeError)
    item, cached = second_out[0]
    assert cached is False and "k" in cache and not cache._flights


def test_predictor_argument_errors(vit_t):
    predictor = SamPredictor(vit_t, cache=False)
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="HxWx3"):
        predictor.set_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        predictor.set_image(np.zeros((10, 10, 3), np.float32))
    predictor.set_image(make_photo_like(40, 50))
    with pytest.raises(ValueError, match="no prompt"):
        predictor.predict()
    with pytest.raises(ValueError, match="point_labels"):
        predictor.predict(point_coords=np.array([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="Nx2"):
        predictor.predict(point_coords=np.array([1.0, 1.0, 2.0]), point_labels=np.array([1]))


def test_warm_up_prepares_the_fast_paths_and_caches_no_image(official_vit_t_checkpoint):
    model = sam_model_registry["vit_t"](checkpoint=str(official_vit_t_checkpoint))  # fresh: nothing built yet
    assert "_msc_encoders" not in model.__dict__ and "_msc_fast_decoders" not in model.__dict__
    shared = default_embedding_cache()
    before = len(shared)
    seconds = warm_up(model, (96, 128))
    assert seconds > 0
    # the encoder snapshot and the decoder the predictor uses were built and are reused later
    encoders = model.__dict__["_msc_encoders"]
    decoders = model.__dict__["_msc_fast_decoders"]
    assert list(encoders) == [("fp32", "torch")] and list(decoders) == [torch.float32]
    runner = encoders[("fp32", "torch")][1]
    predictor = SamPredictor(model, cache=False)
    predictor.set_image(make_photo_like(64, 80, seed=3))
    predictor.predict(point_coords=np.array([[40, 30]]), point_labels=np.array([1]))
    assert model.__dict__["_msc_encoders"][("fp32", "torch")][1] is runner
    assert len(shared) == before  # the synthetic image left nothing in the shared cache
