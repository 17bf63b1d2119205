"""``boundcheck explain`` and :mod:`empirical.explain`: nested running averages (equal to the direct
mean of the same samples, and to a fresh run of the larger m), files and shapes, symmetric colour
limits, resume after a partial run, one-line errors; on a tiny random CNN with 32x32 images."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from boundcheck.cli import main  # noqa: E402
from boundcheck.errors import InputError  # noqa: E402
from empirical import plotting  # noqa: E402
from empirical.augment import augmented_samples  # noqa: E402
from empirical.engine import Explainer  # noqa: E402
from empirical.explain import explain  # noqa: E402
from empirical.explain.average import average_maps, doubling_points  # noqa: E402
from empirical.explain.run import ExplainOptions, run_explain  # noqa: E402

METHODS = ("gradient_x_input", "lrp_beta_1", "lrp_gamma_100")
SIZE = 32


def tiny_cnn(seed: int = 0, classes: int = 5):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(6, 6, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, classes),
    )
    return net.eval()


def normalize(x):
    return (x - 0.5) / 0.5


def tiny_loaded(classes: int = 5):
    from torchvision.transforms.v2 import functional as F

    def to_unit(img):
        t = F.resize(F.pil_to_tensor(img.convert("RGB")), [SIZE], antialias=True)
        return F.to_dtype(F.center_crop(t, [SIZE]), torch.float32, scale=True)

    return SimpleNamespace(model=tiny_cnn(classes=classes), to_unit=to_unit, normalize=normalize, name="tiny", weights_file=None)


def write_images(folder: Path, n: int = 2) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These small inputs gain nothing from threads, and oversubscribed threads are slow on shared CPUs."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    lm = tiny_loaded()
    return {"paths": write_images(d), "lm": lm, "ex": Explainer(lm.model, dtype=torch.float64)}


def opts_for(out, paths, **kw):
    base = dict(out=str(out), image_files=tuple(str(p) for p in paths), methods=METHODS, augmentation="photometric",
                m_grid=(1, 2, 4), batch_size=3, progress=False, device="cpu", dtype="float64")
    base.update(kw)
    return ExplainOptions(**base)


def x01_of(setup, i=0):
    from empirical.data import load_image

    return setup["lm"].to_unit(load_image(setup["paths"][i]))


# ----------------------------------------------------------------------------- averages
@pytest.mark.parametrize("aug", ["gaussian", "photometric"])
def test_m_average_equals_the_mean_of_the_individual_maps(setup, aug):
    x01, ex = x01_of(setup), setup["ex"]
    res = average_maps(ex, normalize, x01, METHODS, (1, 3, 5), aug, seed=7, image_id="a", batch_size=4,
                       dtype=torch.float64)
    for s, maps in ((1, res.maps), (2, res.maps2)):
        xs = augmented_samples(x01, normalize, aug, 7, "a", s, 5).double()
        for k, meth in enumerate(METHODS):
            single = torch.stack([ex.attribute(xs[i:i + 1], [meth], target=torch.tensor([res.target])).maps[meth][0]
                                  for i in range(5)]).numpy()
            for m in (1, 3, 5):
                np.testing.assert_allclose(maps[meth][m], single[:m].mean(0), rtol=1e-9, atol=1e-12 * np.abs(single).max())
    # the split-half statistics are eq. (38), (39) of the two sets' means
    a, b = res.maps["lrp_beta_1"][3], res.maps2["lrp_beta_1"][3]
    assert res.stats["lrp_beta_1"][3]["s1"] == pytest.approx(np.linalg.norm(a - b))
    assert res.stats["lrp_beta_1"][3]["s2"] == pytest.approx(
        np.linalg.norm(a / np.linalg.norm(a) - b / np.linalg.norm(b)))


@pytest.mark.parametrize("aug", ["gaussian", "photometric"])
def test_nested_averages_agree_with_a_fresh_run_of_the_larger_m(setup, aug):
    x01, ex = x01_of(setup, 1), setup["ex"]
    nested = average_maps(ex, normalize, x01, METHODS, (1, 3, 8), aug, seed=3, image_id="b", batch_size=3,
                          dtype=torch.float64)
    for m in (3, 8):
        fresh = average_maps(ex, normalize, x01, METHODS, (m,), aug, seed=3, image_id="b", batch_size=5,
                             dtype=torch.float64)
        for meth in METHODS:
            np.testing.assert_allclose(nested.maps[meth][m], fresh.maps[meth][m], rtol=1e-9, atol=1e-14)
            np.testing.assert_allclose(nested.maps2[meth][m], fresh.maps2[meth][m], rtol=1e-9, atol=1e-14)
    # the two sets are different seed streams
    assert not np.allclose(nested.maps["lrp_beta_1"][8], nested.maps2["lrp_beta_1"][8])


def test_no_augmentation_gives_one_map_for_every_m(setup):
    res = average_maps(setup["ex"], normalize, x01_of(setup), METHODS, (1, 4), "none", batch_size=4,
                       dtype=torch.float64)
    for meth in METHODS:
        np.testing.assert_allclose(res.maps[meth][4], res.maps[meth][1], rtol=1e-12)
        assert res.stats[meth][4]["s1"] == 0.0


def test_target_s2_doubles_m_until_reached_or_max_m(setup):
    x01, ex = x01_of(setup), setup["ex"]
    easy = average_maps(ex, normalize, x01, METHODS, (1,), "gaussian", batch_size=2, dtype=torch.float64,
                        target_s2=2.0, max_m=16)  # s2 <= 2 always
    assert all(d["m_reached"] == 1 for d in easy.doubling.values()) and easy.samples_per_set == 1
    hard = average_maps(ex, normalize, x01, METHODS, (1,), "gaussian", batch_size=4, dtype=torch.float64,
                        target_s2=1e-12, max_m=6)
    assert hard.samples_per_set == 6 and doubling_points(6) == (1, 2, 4, 6)
    for d in hard.doubling.values():
        assert d["m_reached"] is None and sorted(d["s2"]) == [1, 2, 4, 6]


# ----------------------------------------------------------------------------- files
def _no_nan(path: Path):
    def bad(c):
        raise AssertionError(f"{path} holds {c}")

    return json.loads(path.read_text(), parse_constant=bad)


def test_files_shapes_and_json(setup, tmp_path):
    out = tmp_path / "run"
    res = run_explain(opts_for(out, setup["paths"], target_s2=0.5, max_m=8), loaded=setup["lm"], explainer=setup["ex"])
    assert res["status"] == "complete" and len(res["records"]) == 2
    for stem in ("img0.png", "img1.png"):
        d = out / stem
        for meth in METHODS:
            for m in (1, 2, 4):
                a = np.load(d / f"{meth}_m{m}.npy")
                assert a.shape == (SIZE, SIZE) and a.dtype == np.float32
                assert (d / f"{meth}_m{m}.png").stat().st_size > 1000
        assert (d / "montage.png").is_file() and (d / "convergence.png").is_file()
    doc = _no_nan(out / "explain.json")
    assert doc["config"]["depth_n"] == 4  # conv, conv, avgpool, linear
    th = doc["theory"]
    assert th["gradient_x_input"]["finite"] is False and "no finite bound" in th["gradient_x_input"]["note"]
    assert th["lrp_beta_1"]["exact"]["m"] > 0 and th["lrp_beta_1"]["paper"]["log10_m"] >= th["lrp_beta_1"]["exact"]["log10_m"]
    rec = doc["images"][0]["methods"]["lrp_beta_1"]
    assert set(rec["m"]) == {"1", "2", "4"} and rec["m"]["4"]["s2"] >= 0
    assert "not a guarantee" in rec["target_s2"]["note"]
    md = (out / "explain.md").read_text()
    assert "![montage](img0.png/montage.png)" in md and "no finite bound" in md and "not a guarantee" in md
    # the saved map is the average (float32 of it)
    np.testing.assert_allclose(np.load(out / "img0.png" / "lrp_beta_1_m4.npy"),
                               average_maps(setup["ex"], normalize, x01_of(setup), ["lrp_beta_1"], (4,), "photometric",
                                            seed=0, image_id="img0.png", batch_size=3,
                                            dtype=torch.float64).maps["lrp_beta_1"][4].astype(np.float32), rtol=1e-5)


def test_resume_after_a_partial_run(setup, tmp_path):
    out, ref = tmp_path / "part", tmp_path / "full"
    kw = {"methods": ("lrp_beta_1",), "m_grid": (1, 2)}
    r1 = run_explain(opts_for(out, setup["paths"], stop_after=1, **kw), loaded=setup["lm"], explainer=setup["ex"])
    assert r1["status"] == "stopped" and len((out / "records.jsonl").read_text().splitlines()) == 1
    first = (out / "records.jsonl").read_text()
    with open(out / "records.jsonl", "a") as fh:  # a kill in the middle of a write
        fh.write('{"index": 1, "id": "img1.p')
    r2 = run_explain(opts_for(out, setup["paths"], **kw), loaded=setup["lm"], explainer=setup["ex"])
    assert r2["written"] == 1 and r2["status"] == "complete"
    lines = (out / "records.jsonl").read_text()
    assert lines.startswith(first) and len(lines.splitlines()) == 2
    run_explain(opts_for(ref, setup["paths"], **kw), loaded=setup["lm"], explainer=setup["ex"])
    for stem in ("img0.png", "img1.png"):
        np.testing.assert_array_equal(np.load(out / stem / "lrp_beta_1_m2.npy"), np.load(ref / stem / "lrp_beta_1_m2.npy"))
    with pytest.raises(InputError, match="different configuration"):
        run_explain(opts_for(out, setup["paths"], methods=("lrp_beta_1",), m_grid=(1, 8)), loaded=setup["lm"],
                    explainer=setup["ex"])


# ----------------------------------------------------------------------------- colour limits
@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (6, 7), elements=st.floats(-1e6, 1e6, allow_nan=False)))
def test_colour_limits_are_symmetric_positive_and_sign_invariant(a):
    q = plotting.symmetric_limit(a)
    assert q > 0 and math.isfinite(q)
    assert q == plotting.symmetric_limit(-a)
    assert q <= max(np.abs(a).max(), 1.0)


def test_drawn_maps_use_symmetric_limits(tmp_path):
    plt = plotting._plt()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(SIZE, SIZE)) + 3.0  # mostly positive: limits must still be centred at 0
    fig, ax = plt.subplots()
    art = plotting.draw_map(ax, a, plotting.symmetric_limit(a), rng.uniform(size=(SIZE, SIZE, 3)))
    lo, hi = art.get_clim()
    assert lo == -hi and hi == pytest.approx(np.quantile(np.abs(a), plotting.QUANTILE))
    plt.close(fig)
    res = plotting.save_heatmap(a, tmp_path / "h.png", title="t")
    assert res["limit"] == hi and (tmp_path / "h.png").is_file()
    mon = plotting.montage({"x": {1: a, 4: a / 2}, "y": {1: -a, 4: a}}, np.zeros((SIZE, SIZE, 3)), tmp_path / "m.png")
    assert mon["limits"]["x"] == pytest.approx(plotting.symmetric_limit(a / 2))


def test_randomization_montage_rows_methods_columns_steps(tmp_path):
    from empirical.explain.randomization import cascade_maps
    from empirical.sanity.schedules import Step

    net = tiny_cnn(1)
    steps = [Step(index=0, marker="6", new=("6",), cumulative=("6",)),
             Step(index=1, marker="2", new=("2",), cumulative=("6", "2")),
             Step(index=2, marker="0", new=("0",), cumulative=("6", "2", "0"))]

    def factory(model):
        ex = Explainer(model, dtype=torch.float64)

        def run(x, methods, target):
            att = ex.attribute(x.double(), list(methods), target=torch.as_tensor(target))
            return {m: att.maps[m].numpy() for m in methods}

        return run

    x01 = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    before = [p.clone() for p in net.parameters()]
    maps, labels = cascade_maps(net, normalize(x01)[None], 2, steps, ["gradient", "lrp_beta_1"], factory,
                                evaluate={0, 2})
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the caller's model is untouched
    assert list(maps["gradient"]) == ["original", 0, 2] and list(labels) == ["original", 0, 2]
    assert not np.allclose(maps["lrp_beta_1"]["original"], maps["lrp_beta_1"][2])
    res = plotting.randomization_montage(maps, x01, tmp_path / "r.png", step_labels=labels)
    assert (tmp_path / "r.png").is_file() and set(res["limits"]) == {"gradient", "lrp_beta_1"}
    for meth in maps:  # every map its own symmetric limit
        assert res["limits"][meth] == {k: plotting.symmetric_limit(a) for k, a in maps[meth].items()}


# ----------------------------------------------------------------------------- Python API
def test_python_api_on_a_module_and_a_tensor(tmp_path):
    x01 = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    res = explain(tiny_cnn(), x01, methods=("lrp_beta_1", "gradient"), augmentation="photometric", m=(2, 4),
                  normalize=normalize, dtype="float64")
    assert res.maps["lrp_beta_1"][4].shape == (SIZE, SIZE) and isinstance(res.maps["gradient"][2], np.ndarray)
    assert res.stats["lrp_beta_1"][4]["s1"] >= 0
    assert Path(res.save_heatmap(tmp_path / "h.png", "lrp_beta_1", 4)["path"]).is_file()
    assert Path(res.save_montage(tmp_path / "m.png")["path"]).is_file()
    assert Path(res.save_convergence(tmp_path / "c.png")["path"]).is_file()
    with pytest.raises(InputError, match="no map for m=3"):
        res.save_heatmap(tmp_path / "x.png", "lrp_beta_1", 3)
    for kw, needle in (({"methods": ("nonsense",)}, "unknown method"), ({"m": (0,)}, "positive"),
                       ({"augmentation": "blur"}, "augmentation")):
        with pytest.raises(InputError, match=needle):
            explain(tiny_cnn(), x01, **kw)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        explain(tiny_cnn(), x01 * 3)


# ----------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize("extra, needle", [
    (["--m-grid", "0"], "--m-grid"),
    (["--m-grid", "a,b"], "--m-grid"),
    (["--augmentation", "blur"], "--augmentation"),
    (["--methods", "nonsense"], "unknown method"),
    (["--image", "MISSING.png"], "not found"),
    (["--image", "BAD.jpg"], "no readable image"),
    (["--images", "IMGDIR", "--image", "GOOD.png"], "give one of"),
    (["--delta", "2"], "--delta"),
    (["--deviation", "0"], "--deviation"),
    (["--target-s2", "-1"], "--target-s2"),
    (["--max-m", "0"], "--max-m"),
    (["--batch-size", "0"], "--batch-size"),
    (["--n-images", "0"], "--n-images"),
    (["--sigma", "nan"], "--sigma"),
    (["--weights", "MISSING.pth"], "not found"),
    (["--weights", "GOOD.png", "--random-weights"], "not allowed with"),
    (["--model", "vgg"], "unknown model"),
    (["--device", "tpu"], "--device"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, extra, needle):
    imgs = write_images(tmp_path / "imgdir", 1)
    (tmp_path / "BAD.jpg").write_text("not an image")
    subs = {"MISSING.png": str(tmp_path / "nope.png"), "BAD.jpg": str(tmp_path / "BAD.jpg"),
            "IMGDIR": str(tmp_path / "imgdir"), "GOOD.png": str(imgs[0]), "MISSING.pth": str(tmp_path / "w.pth")}
    argv = ["explain", "--out", str(tmp_path / "o"), "--no-progress"] + [subs.get(a, a) for a in extra]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_out_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["explain", "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a folder" in err


def test_map_recorder_keeps_the_maps_the_sanity_run_computes(tmp_path):
    """The recorder wrapped around ``sanity randomize``'s factory sees the same maps as a fresh cascade."""
    from empirical.explain.randomization import MapRecorder, cascade_maps, sanity_montage
    from empirical.sanity.randomize import randomization_rows
    from empirical.sanity.schedules import Step

    net = tiny_cnn(2)
    steps = [Step(index=0, marker="6", new=("6",), cumulative=("6",)),
             Step(index=1, marker="2", new=("2",), cumulative=("6", "2"))]

    def factory(model):
        ex = Explainer(model, dtype=torch.float64)

        def run(x, methods, target):
            att = ex.attribute(x.double(), list(methods), target=torch.as_tensor(target))
            return {m: att.maps[m].numpy() for m in methods}

        run.explainer = ex
        return run

    x01 = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    rec = MapRecorder(factory, 3)
    rows = randomization_rows(net, normalize(x01), [1, 3], steps, ["lrp_beta_1"], rec, evaluate={0, 1})
    assert rec.full and len(rows) == 2 and rec.target0 == 1
    ref, _ = cascade_maps(net, normalize(x01[:1]), 1, steps, ["lrp_beta_1"], factory, evaluate={0, 1})
    for i, key in enumerate(["original", 0, 1]):
        np.testing.assert_allclose(rec.maps[i]["lrp_beta_1"], ref["lrp_beta_1"][key], rtol=1e-9, atol=1e-15)
    ctx = {"recorder": rec, "evaluate": {0, 1}, "schedule": steps, "title": "tiny",
           "lm": SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))}
    path = sanity_montage(ctx, tmp_path)
    assert Path(path).is_file()
    assert sanity_montage({**ctx, "recorder": MapRecorder(factory, 3)}, tmp_path) is None  # nothing recorded


# ----------------------------------------------------------------------------- the shipped Lite0
README_EXAMPLE = '''\
from empirical.data import foolbox_photos
from empirical.explain import explain
photo = foolbox_photos(1)[0].path
res = explain("efficientnet-lite0", photo, methods=("lrp_beta_1",), augmentation="photometric", m=(16,))
res.save_heatmap("lrp_beta_1_m16.png", "lrp_beta_1", 16)
'''


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    import empirical.explain as pkg

    assert "\n    ".join(README_EXAMPLE.strip().splitlines()) in pkg.__doc__  # the docstring shows the same lines
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(README_EXAMPLE, ns)
    res = ns["res"]
    assert (tmp_path / "lrp_beta_1_m16.png").stat().st_size > 1000
    a = res.maps["lrp_beta_1"][16]
    assert a.shape == (224, 224) and np.isfinite(a).all() and np.abs(a).max() > 0
    assert res.target == res.pred and 0 <= res.stats["lrp_beta_1"][16]["s2"] <= 2


def test_cli_on_lite0_then_a_changed_resume_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["explain", "--out", str(out), "--m-grid", "1", "--methods", "lrp_beta_0", "--no-progress", "--threads", "1",
            "--device", "cpu"]
    assert main(argv) == 0
    doc = _no_nan(out / "explain.json")
    assert doc["config"]["depth_n"] == 60 and doc["images"][0]["target"] == 243
    assert (out / "imagenet_00_243.jpg" / "lrp_beta_0_m1.npy").is_file()
    capsys.readouterr()
    assert main(argv[:-2] + ["--device", "cpu", "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different configuration" in err and "seed" in err


def test_cli_low_memory_gives_the_same_maps_and_configuration(tmp_path):
    # a subprocess: --low-memory changes the process's allocator (empirical.runtime.return_freed_memory)
    import subprocess
    import sys

    argv = ["explain", "--m-grid", "1", "--methods", "lrp_beta_0,lrp_gamma_100", "--no-progress", "--threads", "1",
            "--device", "cpu", "--dtype", "float64"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    res = subprocess.run([sys.executable, "-m", "boundcheck", *argv, "--out", str(tmp_path / "b"), "--low-memory"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    a, b = _no_nan(tmp_path / "a" / "explain.json"), _no_nan(tmp_path / "b" / "explain.json")
    assert a["config"] == b["config"]  # the memory mode does not change the numbers: not part of a resume
    for m in ("lrp_beta_0", "lrp_gamma_100"):
        x, y = (np.load(tmp_path / d / "imagenet_00_243.jpg" / f"{m}_m1.npy") for d in "ab")
        # the same maps up to rounding: float64 runs (LRP-γ amplifies float32 rounding near its denominators'
        # zeros), maps stored in float32 (one rounding of each entry: 6e-8 relative at most)
        assert np.linalg.norm(x - y) <= 1e-7 * np.linalg.norm(x), m


def test_report_section_links_montages_that_exist(tmp_path, monkeypatch):
    import empirical.models
    from empirical.explain import REPORT_METHODS, report_section

    monkeypatch.setattr(empirical.models, "load_model", lambda name, *a, **k: tiny_loaded(1000))  # labels 243, 559
    md = report_section(tmp_path / "rep" / "explain", link_base=tmp_path / "rep", n_photos=2)
    links = [ln.split("](")[1].split(")")[0] for ln in md.split("![")[1:]]
    assert len(links) == 4 and all(lk.endswith("montage.png") for lk in links)
    for lk in links:
        assert (tmp_path / "rep" / lk).is_file()
    for meth in REPORT_METHODS:
        assert meth in md
    assert "Gaussian" in md and "photometric" in md and "no finite bound" in md


def test_samples_are_streamed_in_batches_of_at_most_batch_size(setup):
    """One pass over 2 x 32 samples in calls of <= 4 samples; only the grid's snapshots are returned."""
    ex, sizes = setup["ex"], []

    class Counting:
        def logits(self, x):
            return ex.logits(x)

        def attribute(self, x, methods, target=None):
            sizes.append(int(x.shape[0]))
            return ex.attribute(x, methods, target=target)

    res = average_maps(Counting(), normalize, x01_of(setup), ["lrp_beta_1"], (1, 32), "gaussian", batch_size=4,
                       dtype=torch.float64)
    assert max(sizes) <= 4 and sum(sizes) == 2 * 32 and res.samples_per_set == 32
    assert set(res.maps["lrp_beta_1"]) == {1, 32}


def test_without_split_half_only_one_set_is_drawn(setup, tmp_path):
    out = tmp_path / "one"
    res = run_explain(opts_for(out, setup["paths"][:1], split_half=False), loaded=setup["lm"], explainer=setup["ex"])
    row = res["records"][0]["methods"]["lrp_beta_1"]["m"]["4"]
    assert row["s1"] is None and row["null_reasons"]["s1"] == "no split half" and row["norm1"] > 0
    assert res["records"][0]["convergence"] is None and not (out / "img0.png" / "convergence.png").exists()
    with pytest.raises(InputError, match="split-half"):
        run_explain(opts_for(tmp_path / "two", setup["paths"][:1], split_half=False, target_s2=0.1),
                    loaded=setup["lm"], explainer=setup["ex"])


# ----------------------------------------------------------------------------- theory
@pytest.mark.parametrize("method, rule, param", [("lrp_beta_1", "lrp-beta", "--beta=1"),
                                                 ("lrp_gamma_100", "lrp-gamma", "--gamma=100")])
@pytest.mark.parametrize("form", ["paper", "exact"])
def test_required_m_agrees_with_the_samples_command(capsys, method, rule, param, form):
    from empirical.explain.stats import required_m

    assert main(["samples", "--rule", rule, param, "--layers", "12", "--t", "0.5", "--delta", "0.1",
                 "--bound", form, "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    got = required_m(method, 12, 0.5, 0.1)[form]
    assert got["log10_m"] == pytest.approx(ref["log10_m"], abs=1e-9)
    if got["m"] is not None:
        assert got["m"] == ref["m"]


@given(st.integers(1, 10_000))
def test_doubling_points_start_at_1_double_and_end_at_max_m(max_m):
    pts = doubling_points(max_m)
    assert pts[0] == 1 and pts[-1] == max_m and list(pts) == sorted(set(pts))
    inner = pts[:-1]  # 1, 2, 4, ... below max_m
    assert all(b == 2 * a for a, b in zip(inner, inner[1:]))
    assert len(pts) == 1 or pts[-2] < max_m <= 2 * pts[-2]
