"""Model loading (weights policy, preprocessing) and image listings (foolbox, folders, ImageNet layouts)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from boundcheck.errors import InputError  # noqa: E402
from empirical import data  # noqa: E402
from empirical.models import load_model, weights_path_for  # noqa: E402


def test_missing_torchvision_weights_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.get_dir() follows TORCH_HOME
    with pytest.raises(InputError) as ei:
        load_model("resnet50")
    msg = str(ei.value)
    path, url = weights_path_for("resnet50")
    assert "\n" not in msg and str(path) in msg and url in msg and "--weights" in msg
    assert path.name == "resnet50-0676ba61.pth" and str(path).startswith(str(tmp_path))


def test_random_weights_only_when_asked_and_bad_weights_file(tmp_path):
    lm = load_model("resnet50", pretrained=False)
    assert lm.weights_file == "random" and not lm.model.training and lm.input_size == 224
    with pytest.raises(InputError, match="not found"):
        load_model("resnet50", weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(InputError, match="resnet50 weights file .* not a state_dict of this ResNet"):
        load_model("resnet50", weights=bad)
    with pytest.raises(InputError, match=r"unknown model .vgg. \(closest: vgg1"):
        load_model("vgg")


def test_torchvision_weights_from_file_and_preprocessing(tmp_path):
    import torchvision

    state = torchvision.models.swin_v2_t(weights=None).state_dict()
    f = tmp_path / "w.pth"
    torch.save(state, f)
    lm = load_model("swin_v2_t", weights=f)
    assert lm.weights_file == str(f) and lm.input_size == 256
    from PIL import Image

    img = Image.fromarray((np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8))
    x01 = lm.to_unit(img)
    assert x01.shape == (3, 256, 256) and float(x01.min()) >= 0 and float(x01.max()) <= 1
    ref = torchvision.models.Swin_V2_T_Weights.IMAGENET1K_V1.transforms()(img)
    assert torch.allclose(lm.preprocess(img), ref, atol=1e-5)


def test_lite0_shipped_weights_and_preprocessing():
    lm = load_model("efficientnet-lite0")
    assert lm.input_size == 224 and lm.mean == (0.5, 0.5, 0.5) and len(lm.categories) == 1000
    items = data.foolbox_photos(2)
    x = torch.stack([lm.preprocess(data.load_image(it.path)) for it in items])
    assert x.shape == (2, 3, 224, 224) and float(x.min()) >= -1 and float(x.max()) <= 1
    with torch.no_grad():
        pred = lm.model(x).argmax(1).tolist()
    assert pred == [it.label for it in items]  # the first two foolbox photos are classified correctly


def test_foolbox_listing():
    items = data.foolbox_photos()
    assert len(items) == 20 and items[0].id == "imagenet_00_243.jpg" and items[0].label == 243
    assert [it.index for it in items] == list(range(20))
    assert data.list_images(n=3)[0] == items[:3]


def _png(path, seed=0):
    from PIL import Image

    arr = (np.random.default_rng(seed).random((8, 8, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


def test_plain_folder_sorted_first_n_and_corrupt_image(tmp_path):
    for name in ("b.png", "a.png", "c.png"):
        _png(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "d.jpg").write_bytes(b"garbage")
    items, src = data.list_images(images=tmp_path, n=3)
    assert [it.id for it in items] == ["a.png", "b.png", "c.png"] and all(it.label is None for it in items)
    assert src["kind"] == "folder"
    with pytest.raises(data.UnreadableImage):
        data.load_image(tmp_path / "d.jpg")
    with pytest.raises(InputError):
        data.list_images(images=tmp_path / "missing")


def test_wnid_subfolders_give_sorted_wnid_labels(tmp_path):
    for wnid, files in (("n00000002", ["ILSVRC2012_val_00000001.JPEG"]), ("n00000001", ["ILSVRC2012_val_00000002.JPEG"])):
        (tmp_path / wnid).mkdir()
        for f in files:
            _png(tmp_path / wnid / f)
    items, src = data.list_images(imagenet_val=tmp_path)
    assert src["kind"] == "imagenet-val-wnid"
    assert [(it.id, it.label) for it in items] == [("n00000002/ILSVRC2012_val_00000001.JPEG", 1),
                                                   ("n00000001/ILSVRC2012_val_00000002.JPEG", 0)]


def test_flat_val_with_devkit_labels_maps_ilsvrc_ids_to_torchvision_order(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    wnids = [f"n{k:08d}" for k in rng.permutation(np.arange(1000, 2000))]  # ILSVRC id i+1 -> wnids[i]
    rec = np.zeros(1001, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for i, w in enumerate(wnids):
        rec[i] = (i + 1, w, 0)
    rec[1000] = (1001, "n09999999", 3)  # an inner node, ignored
    devkit = tmp_path / "devkit" / "data"
    devkit.mkdir(parents=True)
    savemat(devkit / "meta.mat", {"synsets": rec})
    gt = devkit / "ILSVRC2012_validation_ground_truth.txt"
    gt.write_text("5\n1\n1000\n")
    val = tmp_path / "val"
    val.mkdir()
    for k in (3, 1, 2):
        _png(val / f"ILSVRC2012_val_{k:08d}.JPEG")
    items, src = data.list_images(imagenet_val=val, labels=gt, n=3)
    order = sorted(wnids)
    assert [it.label for it in items] == [order.index(wnids[4]), order.index(wnids[0]), order.index(wnids[999])]
    assert src["kind"] == "imagenet-val-flat"
    with pytest.raises(InputError, match="--labels"):
        data.list_images(imagenet_val=val)
    (devkit / "meta.mat").unlink()
    with pytest.raises(InputError, match="meta.mat"):
        data.list_images(imagenet_val=val, labels=gt)


def test_densenet121_for_the_sanity_schedule(tmp_path, monkeypatch):
    """DenseNet-121 loads like the other torchvision models (its [P2] randomisation schedule
    exists); missing trained weights name the file, random init only when asked."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    with pytest.raises(InputError) as ei:
        load_model("densenet121")
    assert "densenet121" in str(ei.value) and "\n" not in str(ei.value)
    lm = load_model("densenet121", pretrained=False)
    assert lm.weights_file == "random" and lm.input_size == 224
    from empirical.sanity.schedules import build_schedule, detect_architecture

    assert detect_architecture(lm.model) == "densenet121"
    assert len(build_schedule(lm.model)) > 1


# --------------------------------------------------------------------------- load_image: every PIL mode -> 8-bit RGB

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(arrays(np.uint16, (4, 5), elements=st.integers(0, 65535)))
def test_16bit_png_is_scaled_by_its_range_not_saturated(tmp_path_factory, a):
    from PIL import Image

    f = tmp_path_factory.mktemp("i16") / "g16.png"
    Image.fromarray(a).save(f)
    assert Image.open(f).mode.startswith("I")
    out = np.asarray(data.load_image(f))
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    expected = np.rint(a.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert (out == expected[..., None]).all()


def _save(tmp_path, name, im, **kw):
    f = tmp_path / name
    im.save(f, **kw)
    return f


def test_every_mode_becomes_rgb_with_the_same_picture(tmp_path):
    from PIL import Image

    gray = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    cases = {
        "l.png": (Image.fromarray(gray), gray),
        "f01.tif": (Image.fromarray(gray.astype(np.float32) / 255), gray),  # float in [0, 1]
        "f255.tif": (Image.fromarray(gray.astype(np.float32)), gray),  # float in [0, 255]
        "i8.tif": (Image.fromarray(gray.astype(np.int32)), gray),  # 32-bit int holding 8-bit values
        "i16.tif": (Image.fromarray(gray.astype(np.int32) * 257), gray),  # 32-bit int holding 16-bit values
        "one.png": (Image.fromarray(gray > 100), np.where(gray > 100, 255, 0)),
    }
    for name, (im, expected) in cases.items():
        out = np.asarray(data.load_image(_save(tmp_path, name, im)))
        assert out.shape == (2, 2, 3) and (out == np.asarray(expected)[..., None]).all(), name
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[1, 1] = (10, 20, 30, 0)  # transparent: white, not the hidden colour
    out = np.asarray(data.load_image(_save(tmp_path, "rgba.png", Image.fromarray(rgba))))
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[1, 1]) == (255, 255, 255)
    la = Image.fromarray(np.stack([gray, np.full_like(gray, 255)], -1), mode="LA")
    assert (np.asarray(data.load_image(_save(tmp_path, "la.png", la))) == gray[..., None]).all()
    pal = Image.new("P", (2, 2), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert tuple(np.asarray(data.load_image(_save(tmp_path, "p.png", pal)))[0, 0]) == (200, 100, 50)
    assert tuple(np.asarray(data.load_image(_save(tmp_path, "pt.png", pal, transparency=1)))[0, 0]) == (255,) * 3
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # red
    assert tuple(np.asarray(data.load_image(_save(tmp_path, "c.tif", cmyk)))[0, 0]) == (255, 0, 0)


def test_out_of_range_float_and_int_images_are_refused(tmp_path):
    from PIL import Image

    for name, arr in (("neg.tif", np.full((2, 2), -1.0, np.float32)), ("big.tif", np.full((2, 2), 7e4, np.float32)),
                      ("nan.tif", np.full((2, 2), np.nan, np.float32)), ("i32.tif", np.full((2, 2), 10**6, np.int32))):
        with pytest.raises(data.UnreadableImage) as ei:
            data.load_image(_save(tmp_path, name, Image.fromarray(arr)))
        assert "\n" not in str(ei.value)


def _png_header(w, h):
    import struct
    import zlib

    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 8)) + chunk(b"IEND", b""))


def test_unreadable_files_give_one_line_reasons(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
    full = (tmp_path / "full.png").read_bytes()
    files = {
        "empty.png": (b"", "empty"),
        "text.jpg": (b"not an image at all", "cannot identify"),
        "truncated.png": (full[: len(full) // 2], "truncated"),
        "bomb.png": (_png_header(10_000, 10_000), "decompression bomb"),  # 1e8 pixels: over the limit, a warning in PIL
        "bomb2.png": (_png_header(30_000, 30_000), "decompression bomb"),  # 9e8: PIL's own error
    }
    for name, (body, reason) in files.items():
        (tmp_path / name).write_bytes(body)
        with pytest.raises(data.UnreadableImage) as ei:
            data.load_image(tmp_path / name)
        msg = str(ei.value)
        assert reason in msg and name in msg and "\n" not in msg, (name, msg)


def test_single_files_listing_keeps_order_and_refuses_mixing(tmp_path):
    for name in ("b.png", "a.png"):
        _png(tmp_path / name)
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "a.png")
    items, src = data.list_images(image_files=[tmp_path / "b.png", tmp_path / "a.png"])
    assert [it.id for it in items] == ["b.png", "a.png"] and src["kind"] == "files"
    items, _ = data.list_images(image_files=[tmp_path / "a.png", tmp_path / "sub" / "a.png"], n=1)
    assert len(items) == 1 and items[0].id == (tmp_path / "a.png").as_posix()  # same names: full paths
    with pytest.raises(InputError, match="not found"):
        data.list_images(image_files=[tmp_path / "missing.png"])
    with pytest.raises(InputError, match="one of"):
        data.list_images(images=tmp_path, image_files=[tmp_path / "a.png"])
    with pytest.raises(InputError, match=">= 1"):
        data.list_images(images=tmp_path, n=0)
