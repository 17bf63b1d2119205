"""Region perturbation with a blurred copy ([P2] A.1) on toy models, and against Quantus 0.6.0."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from empirical.sanity import faithfulness as F  # noqa: E402


def test_box_blur_is_the_in_image_window_mean():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 20, 17, dtype=torch.float64)
    b = F.box_blur(x, 15)
    for (i, j) in [(0, 0), (7, 8), (19, 16), (10, 3)]:
        win = x[:, :, max(i - 7, 0):i + 8, max(j - 7, 0):j + 8]
        torch.testing.assert_close(b[:, :, i, j], win.mean(dim=(2, 3)))
    # commutes with the per-channel affine preprocessing: blurring pixels or network inputs is the same
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    torch.testing.assert_close(F.box_blur((x - mean) / std), (F.box_blur(x) - mean) / std)


def test_region_grid_matches_quantus_layout():
    cells = F.region_grid(224, 224, 15)
    assert len(cells) == 15 * 15  # 224 = 14 * 15 + 14: one pixel of padding after, as in quantus
    assert cells[0] == (0, 15, 0, 15) and cells[-1] == (210, 224, 210, 224)
    covered = np.zeros((224, 224), int)
    for y0, y1, x0, x1 in cells:
        covered[y0:y1, x0:x1] += 1
    assert (covered == 1).all()
    assert len(F.region_grid(224, 224, 8)) == 28 * 28


def test_linear_model_known_most_important_region():
    """logit_0 = <w, x> with w non-zero in one 8x8 cell only: that cell goes first."""
    H = W = 32
    w = torch.zeros(3, H, W, dtype=torch.float64)
    w[:, 8:16, 16:24] = 0.5
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * H * W, 2, dtype=torch.float64))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = w.ravel()
        model[1].bias.zero_()
    torch.manual_seed(1)
    x = torch.rand(3, H, W, dtype=torch.float64) + 1.0
    att = (w * x).sum(0).numpy()  # gradient x input for class 0
    cells, _ = F.region_order(att, 8)
    assert cells[0] == (8, 16, 16, 24)
    xb = F.box_blur(x, 15)
    curve = F.softmax_curve(model, x, xb, att, 0, 8, n_regions=5)
    l0 = float((w * x).sum())
    x1 = x.clone()
    x1[:, 8:16, 16:24] = xb[:, 8:16, 16:24]
    l1 = float((w * x1).sum())
    assert curve[0] == pytest.approx(1 / (1 + np.exp(-l0)))
    assert curve[1] == pytest.approx(1 / (1 + np.exp(-l1)))
    assert np.allclose(curve[1:], curve[1])  # the other cells carry no weight
    assert F.auc([1.0, 0.5, 0.0]) == pytest.approx(0.5)


def test_faithfulness_rows_and_random_reference():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 24, 24)
    maps = {"m": np.random.default_rng(0).normal(size=(2, 24, 24))}
    recs = F.faithfulness_rows(model, x, [0, 2], maps, r=8, n_regions=30)
    assert len(recs) == 2 and set(recs[0]["curves"]) == {"m", "random"}
    assert len(recs[0]["curves"]["m"]) == 10  # only 9 cells exist
    again = F.faithfulness_rows(model, x, [0, 2], maps, r=8, n_regions=30)
    assert again[0]["curves"]["random"] == recs[0]["curves"]["random"]  # seeded


def test_agrees_with_quantus_region_perturbation():
    """Same cells, same order, same blurred patches -> Quantus' y(x) - y(x_k) equals ours curve[0] - curve[k]."""
    quantus = pytest.importorskip("quantus")

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(6 * 24 * 24, 5)).eval()
    x = torch.randn(3, 3, 48, 48)
    a = np.random.default_rng(4).normal(size=(3, 48, 48))
    y = np.array([0, 3, 4])
    xb = F.box_blur(x, 15)
    blur_flat = xb.numpy().reshape(3, -1)

    def blur_replace(arr, indices, **kwargs):  # quantus perturb_func: take the patch from the blurred copy
        out = arr.copy()
        out[np.arange(arr.shape[0])[:, None], indices] = blur_flat[np.arange(arr.shape[0])[:, None], indices]
        return out

    metric = quantus.RegionPerturbation(patch_size=8, regions_evaluation=30, normalise=False, abs=False,
                                        perturb_func=blur_replace, disable_warnings=True)
    q = np.array(metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=a[:, None], device="cpu", softmax=True))
    recs = F.faithfulness_rows(model, x, y.tolist(), {"m": a}, r=8, n_regions=30, random_seed=None)
    ours = np.array([np.array(r["curves"]["m"][0]) - np.array(r["curves"]["m"][1:]) for r in recs])
    diff = float(np.abs(q - ours).max())
    print("max abs difference to quantus RegionPerturbation:", diff)
    assert q.shape == (3, 30)
    assert diff < 1e-5
