"""The metric suite and the bootstrap statistics, pinned to known values."""

from __future__ import annotations

import math

import lpips as lpips_lib
import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity
from torch import nn

from linebridge.core.pretrained import Unavailable, load_lpips
from linebridge.evaluation import metrics
from linebridge.evaluation.stats import bootstrap_ci, paired_bootstrap

# Sharma, Wu & Dalal (2005), Table 1: (L1, a1, b1, L2, a2, b2, ΔE00).
SHARMA = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def images(n: int = 4, size: int = 32, seed: int = 0, smooth: bool = True) -> torch.Tensor:
    """Random images in [-1, 1]; `smooth` ones are upsampled noise (natural-ish structure)."""
    g = torch.Generator().manual_seed(seed)
    if not smooth:
        return torch.rand(n, 3, size, size, generator=g) * 2 - 1
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g) * 2 - 1
    return nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def reference_delta_e(rgb1: tuple[float, ...], rgb2: tuple[float, ...]) -> float:
    """ΔE00 of two [0, 1] sRGB colours by scikit-image (its own sRGB → CIELAB and CIEDE2000): the reference."""
    return float(deltaE_ciede2000(rgb2lab(np.array([[rgb1]])), rgb2lab(np.array([[rgb2]])))[0, 0])


def bar(col: int, size: int = 32) -> torch.Tensor:
    """A black image with one white vertical bar (4 px wide) starting at column `col`."""
    x = -torch.ones(1, 3, size, size)
    x[..., 6:26, col : col + 4] = 1
    return x


# --------------------------------------------------------------------------- PSNR, SSIM


def test_psnr_identical_is_infinite():
    x = images()
    assert torch.isinf(metrics.psnr(x, x)).all()


def test_psnr_constant_offset_closed_form():
    target = images() * 0.5  # stays inside [-1, 1] after the offset
    # +0.2 on [-1, 1] = +0.1 on [0, 1]: MSE = 0.01 → 20 dB; +0.02 → 0.0001 → 40 dB.
    assert torch.allclose(metrics.psnr(target + 0.2, target), torch.full((4,), 20.0), atol=1e-4)
    assert torch.allclose(metrics.psnr(target - 0.02, target), torch.full((4,), 40.0), atol=1e-3)


def test_ssim_matches_scikit_image():
    target = images(3, 32, seed=1, smooth=False).double()
    pred = (target + 0.3 * images(3, 32, seed=2, smooth=False).double()).clamp(-1, 1)
    ours = metrics.ssim(pred, target)
    unit = lambda x: ((x + 1) / 2).permute(1, 2, 0).numpy()  # noqa: E731
    reference = [
        structural_similarity(
            unit(p),
            unit(t),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=2,
        )
        for p, t in zip(pred, target)
    ]
    assert ours.shape == (3,)
    assert np.allclose(ours.numpy(), reference, atol=1e-4)
    assert torch.allclose(metrics.ssim(target, target), torch.ones(3, dtype=torch.float64))


# --------------------------------------------------------------------------- CIEDE2000


def test_ciede2000_sharma_pairs():
    table = torch.tensor(SHARMA, dtype=torch.float64)
    lab1, lab2, expected = table[:, 0:3], table[:, 3:6], table[:, 6]
    assert torch.allclose(metrics.ciede2000(lab1, lab2, dim=-1), expected, atol=1e-4, rtol=0)
    assert torch.allclose(metrics.ciede2000(lab2, lab1, dim=-1), expected, atol=1e-4, rtol=0)


def test_ciede2000_agrees_with_scikit_image():
    table = np.array(SHARMA)
    assert np.allclose(deltaE_ciede2000(table[:, 0:3], table[:, 3:6]), table[:, 6], atol=1e-4)
    rng = np.random.default_rng(0)
    lab = np.stack(
        [rng.uniform(0, 100, (2, 500)), rng.uniform(-100, 100, (2, 500)), rng.uniform(-100, 100, (2, 500))], axis=-1
    )
    ours = metrics.ciede2000(torch.from_numpy(lab[0]), torch.from_numpy(lab[1]), dim=-1)
    assert np.allclose(ours.numpy(), deltaE_ciede2000(lab[0], lab[1]), atol=1e-8)


def test_ciede2000_image_layout():
    a, b = metrics.rgb_to_lab(images(2, 8, seed=3)), metrics.rgb_to_lab(images(2, 8, seed=4))
    per_pixel = metrics.ciede2000(a, b)
    flat = metrics.ciede2000(a.permute(0, 2, 3, 1).reshape(-1, 3), b.permute(0, 2, 3, 1).reshape(-1, 3), dim=-1)
    assert per_pixel.shape == (2, 8, 8)
    assert torch.allclose(per_pixel.flatten(), flat)


def test_colour_error_overall_masked_and_empty_mask():
    target = torch.zeros(3, 3, 8, 8)  # mid grey
    pred = target.clone()
    pred[:, 0, :, :4] = 0.5  # left half redder
    mask = torch.zeros(3, 8, 8, dtype=torch.bool)
    mask[:, :, :4] = True
    mask[2] = False  # third image: empty tone region
    one = reference_delta_e((0.75, 0.5, 0.5), (0.5, 0.5, 0.5))  # a redder pixel against grey, on [0, 1]
    assert one > 1
    assert torch.allclose(metrics.colour_error(pred, target), torch.full((3,), one / 2, dtype=torch.float64))
    masked = metrics.colour_error(pred, target, mask)
    assert torch.allclose(masked[:2], torch.full((2,), one, dtype=torch.float64))
    assert math.isnan(masked[2])
    assert torch.equal(metrics.colour_error(target, target), torch.zeros(3, dtype=torch.float64))


# --------------------------------------------------------------------------- Edge IoU


def test_edge_iou_identical_disjoint_and_tolerance():
    x = torch.cat([bar(4), images(3, 32, seed=5, smooth=False)])
    assert torch.equal(metrics.edge_iou(x, x), torch.ones(4))
    assert metrics.edges(bar(4)).any()
    assert metrics.edge_iou(bar(4), bar(22)).item() == 0.0
    assert metrics.edge_iou(bar(4), bar(5), tolerance=1).item() == 1.0
    assert metrics.edge_iou(bar(4), bar(5), tolerance=0).item() < 1.0


def test_edge_iou_flat_images():
    flat = torch.zeros(1, 3, 32, 32)
    assert metrics.edge_iou(flat, flat).item() == 1.0  # no edges anywhere: nothing to miss
    assert metrics.edge_iou(flat, bar(4)).item() == 0.0
    assert "t = 1 px" in metrics.EDGE_IOU_DEFINITION


# --------------------------------------------------------------------------- FID, KID


def random_features() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()


def test_fid_kid_with_a_random_feature_network():
    net = random_features()
    real, other = images(120, 16, seed=6), images(120, 16, seed=7)
    shifted = (other * 0.5 + 0.4).clamp(-1, 1)
    same = metrics.fid(real, real, feature_extractor=net)
    fresh = metrics.fid(real, other, feature_extractor=net)  # same distribution, other samples
    far = metrics.fid(real, shifted, feature_extractor=net)
    assert abs(same) < 1e-6
    assert far > 10 * fresh > 0
    kid_same = metrics.kid(real, real, feature_extractor=net, subsets=20, subset_size=50)
    kid_far = metrics.kid(real, shifted, feature_extractor=net, subsets=20, subset_size=50)
    assert set(kid_far) == {"mean", "std"}
    assert kid_far["mean"] > 20 * abs(kid_same["mean"])


def test_inception_path_runs_on_a_local_weight_file(tmp_path, monkeypatch):
    """torch-fidelity's real Inception, loaded from a (random) weight file in the hub cache."""
    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    with monkeypatch.context() as patch:  # build a random Inception once, to have a state dict to save
        patch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        state = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / tfi.URL_INCEPTION_V3.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)

    x = images(2, 16, seed=8)
    assert metrics.inception_features()(x).shape == (2, 2048)
    result = metrics.kid(x, x, subsets=2)
    assert math.isfinite(result["mean"])


# --------------------------------------------------------------------------- weights absent / LPIPS


def _no_download(*args, **kwargs):
    raise AssertionError("a metric tried to download weights")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    return tmp_path / "hub" / "checkpoints"


def test_missing_weights_are_reported_not_downloaded(empty_cache, tmp_path):
    x = images(2, 32)
    with pytest.raises(Unavailable) as err:
        metrics.lpips(x, x)
    assert "alexnet-owt-7be5be79.pth" in err.value.reason
    assert str(empty_cache / "alexnet-owt-7be5be79.pth") in err.value.how_to_fix
    assert "curl -L -o alexnet-owt-7be5be79.pth https://download.pytorch.org/models/" in err.value.how_to_fix

    record = metrics.try_metric(metrics.fid, x, x, weights_dir=tmp_path / "weights")
    assert record["unavailable"] is True
    assert "weights-inception-2015-12-05-6726825d.pth" in record["reason"]
    assert str(tmp_path / "weights") in record["reason"]
    assert str(empty_cache / "weights-inception-2015-12-05-6726825d.pth") in record["how_to_fix"]
    assert metrics.try_metric(metrics.psnr, x, x).isinf().all()  # available metrics pass through


def test_lpips_loads_the_trunk_from_weights_dir(empty_cache, tmp_path):
    import torchvision

    torch.manual_seed(0)
    trunk = {
        k: v for k, v in torchvision.models.alexnet(weights=None).state_dict().items() if k.startswith("features.")
    }
    torch.save(trunk, tmp_path / "alexnet-owt-7be5be79.pth")
    model = load_lpips("alex", weights_dir=tmp_path)
    assert torch.equal(model.net.state_dict()["slice5.10.weight"], trunk["features.10.weight"])
    x, y = images(3, 32, seed=9), images(3, 32, seed=10)
    assert torch.allclose(metrics.lpips(x, x, model=model), torch.zeros(3), atol=1e-6)
    assert (metrics.lpips(x, y, weights_dir=tmp_path) > 0).all()


@pytest.mark.filterwarnings("ignore:.*(pretrained|weights).*:UserWarning")  # torchvision, called by lpips
def test_lpips_with_an_injected_random_backbone_and_size_limit():
    model = lpips_lib.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    x, y = images(2, 16, seed=11), images(2, 16, seed=12)
    assert metrics.lpips(x, y, model=model).shape == (2,)
    with pytest.raises(Unavailable, match="at least 31 px"):
        metrics.lpips(x, y, net="alex")


# --------------------------------------------------------------------------- SWD


def test_swd_levels_identity_and_difference():
    real, other = images(32, 32, seed=13), images(32, 32, seed=14)
    grey = other.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)  # same structure, no colour
    same, fresh, far = metrics.swd(real, real), metrics.swd(real, other), metrics.swd(real, grey)
    assert set(same) == {"32px", "16px", "mean"}
    assert same == {"32px": 0.0, "16px": 0.0, "mean": 0.0}  # same patch positions in both sets
    assert 0 < fresh["mean"] < 0.07  # sampling noise of 32 images
    assert far["mean"] > 2 * fresh["mean"]
    assert metrics.swd(real, grey) == far  # fixed seed → reproducible
    assert set(metrics.swd(images(2, 64), images(2, 64, seed=1))) == {"64px", "32px", "16px", "mean"}
    assert set(metrics.swd(images(2, 16), images(2, 16, seed=1))) == {"16px", "mean"}


def test_sliced_wasserstein_in_one_dimension_is_scipys_wasserstein_distance():
    """On 1-D descriptors every direction is ±1, so the sliced distance is the plain 1-D Wasserstein-1."""
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 300).astype(np.float32), rng.gamma(2.0, 1.0, 300).astype(np.float32)
    got = metrics._sliced_wasserstein(
        torch.from_numpy(a)[:, None], torch.from_numpy(b)[:, None], 256, torch.Generator().manual_seed(0)
    )
    assert got == pytest.approx(wasserstein_distance(a, b), rel=1e-5)


def test_swd_ignores_a_global_per_channel_affine_change():
    """ProGAN normalises each set by its own channel statistics: a global tint/contrast change is invisible."""
    real = images(8, 32, seed=17) * 0.5
    tinted = real * torch.tensor([0.8, 1.0, 1.2]).view(1, 3, 1, 1) + 0.2
    assert metrics.swd(real, tinted)["mean"] < 1e-5


# --------------------------------------------------------------------------- statistics


def test_bootstrap_ci_covers_the_true_mean_and_ignores_nan():
    sample = np.random.default_rng(0).normal(3.0, 1.0, 200)
    ci = bootstrap_ci(np.append(sample, [np.nan, np.nan]))
    assert ci["n"] == 200
    assert ci["mean"] == pytest.approx(sample.mean())
    assert ci["low"] < 3.0 < ci["high"]
    assert ci["high"] - ci["low"] == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.2)
    assert bootstrap_ci([5.0]) == {"mean": 5.0, "low": 5.0, "high": 5.0, "n": 1}
    assert bootstrap_ci([np.nan])["n"] == 0


def test_paired_bootstrap_detects_a_shift_and_not_a_zero_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(20.0, 5.0, 60)  # large between-image spread, as per-image metrics have
    shifted = paired_bootstrap(a, a + 1.0 + rng.normal(0, 0.5, 60))
    assert shifted["n"] == 60
    assert 0.7 < shifted["low"] < shifted["mean_diff"] < shifted["high"] < 1.3
    assert shifted["p_value"] < 0.01
    wiggle = np.tile([0.5, -0.5], 30)  # differences with mean exactly 0
    null = paired_bootstrap(a, a + wiggle)
    assert null["low"] < 0 < null["high"]
    assert null["p_value"] > 0.5


def test_regional_colour_error_and_tint_rate():
    """Known regions: a white background, a black line, a red interior; only the background is tinted."""
    gt = torch.ones(1, 3, 8, 8)
    gt[:, :, 2:6, 2:6] = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)  # red square
    line = torch.ones(1, 1, 8, 8)
    line[:, :, 2, 2:6] = -1.0  # a line along the square's top edge
    gt[:, :, 2, 2:6] = -1.0  # drawn black in the colour image too
    pred = gt.clone()
    pred[:, 0, 0, :] = 0.6  # one row of the background turns light blue
    out = metrics.regional_colour_error(pred, gt, line)
    masks = metrics.regions(gt, line)
    assert masks["background"].sum() == 64 - 16 and masks["lines"].sum() == 4 and masks["interior"].sum() == 12
    assert out["delta_e_lines"].item() == 0 and out["delta_e_interior"].item() == 0
    expected = reference_delta_e((0.8, 1.0, 1.0), (1.0, 1.0, 1.0)) * 8 / 48  # 8 tinted of 48 background pixels
    assert out["delta_e_background"].item() == pytest.approx(expected)
    assert out["tint_rate"].item() == pytest.approx(8 / 48)  # the 8 tinted pixels are far above ΔE00 3
    assert metrics.regional_colour_error(gt, gt, line)["tint_rate"].item() == 0
