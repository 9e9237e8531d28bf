"""Sample-quality metrics against references: scipy's sqrtm, closed forms, torchmetrics, worked examples."""

import math
import warnings

import numpy as np
import pytest
import torch

from dulab.data.base import DataSpec, TensorDataset
from dulab.errors import UserError
from dulab.metrics import fid, frechet_distance, inception_score, kid, precision_recall, sample_quality


def _spd(f: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(f, 2 * f, generator=g, dtype=torch.float64)
    return a @ a.T / (2 * f) + 0.1 * torch.eye(f, dtype=torch.float64)


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    # The reference formula of Heusel et al. (2017) with scipy's general matrix square root, in float64.
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize("f", [1, 3, 16, 64])
def test_frechet_distance_matches_scipy_sqrtm(f):
    g = torch.Generator().manual_seed(f)
    mu1, mu2 = torch.randn(f, generator=g, dtype=torch.float64), torch.randn(f, generator=g, dtype=torch.float64)
    s1, s2 = _spd(f, g), _spd(f, g)
    expected = _scipy_frechet(*(t.numpy() for t in (mu1, s1, mu2, s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_diagonal_closed_form():
    # Diagonal covariances commute: tr sqrt(S1 S2) = sum sqrt(a_i b_i), so
    # d^2 = ||mu1 - mu2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    a = torch.rand(10, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(10, generator=g, dtype=torch.float64) + 0.1
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_fid_is_zero_for_identical_sets_and_symmetric():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, 8, generator=g, dtype=torch.float64)
    b = torch.randn(300, 8, generator=g, dtype=torch.float64) * 1.5 + 0.3
    assert abs(fid(a, a)) < 1e-10
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-10)
    assert fid(a, b) > 0.1


def test_fid_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.image.fid")

    class Identity(torch.nn.Module):
        num_features = 6

        def forward(self, x):
            return x

    g = torch.Generator().manual_seed(2)
    a = torch.randn(120, 6, generator=g, dtype=torch.float64)
    b = torch.randn(150, 6, generator=g, dtype=torch.float64) + 0.5
    metric = tm.FrechetInceptionDistance(feature=Identity())
    metric.update(a, real=True)
    metric.update(b, real=False)
    assert fid(a, b) == pytest.approx(float(metric.compute()), rel=1e-6)


def test_fid_with_singular_covariance_is_finite_and_non_negative():
    # 20 samples of 50 features: both covariances have rank <= 19.
    g = torch.Generator().manual_seed(3)
    a = torch.randn(20, 50, generator=g, dtype=torch.float64)
    b = torch.randn(20, 50, generator=g, dtype=torch.float64)
    value = fid(a, b)
    assert math.isfinite(value) and value >= 0
    assert abs(fid(a, a)) < 1e-8
    # Exact-rank reference: with centred data A, B, tr((S1^(1/2) S2 S1^(1/2))^(1/2)) = ||S1^(1/2) S2^(1/2)||_*
    # = ||A B^T||_* / sqrt((n-1)(m-1)), the nuclear norm of a 20 x 20 matrix with no 30-dim null space.
    ac, bc = a - a.mean(0), b - b.mean(0)
    tr_covmean = torch.linalg.svdvals(ac @ bc.T).sum() / 19
    diff = a.mean(0) - b.mean(0)
    expected = float(diff @ diff + (ac ** 2).sum() / 19 + (bc ** 2).sum() / 19 - 2 * tr_covmean)
    assert value == pytest.approx(expected, rel=1e-9)


def _biased_mmd2(x, y):
    # The V-statistic (diagonal kept), for contrast with the unbiased estimator: its mean is > 0 even for P = Q.
    def k(u, v):
        return (u @ v.T / u.shape[1] + 1) ** 3

    return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


def test_kid_is_unbiased_for_one_distribution():
    # With subset_size = N and one subset, kid is exactly the unbiased MMD^2 of the two samples: E = 0 when P = Q.
    g = torch.Generator().manual_seed(4)
    unbiased, biased = [], []
    for _ in range(200):
        x = torch.randn(40, 4, generator=g, dtype=torch.float64)
        y = torch.randn(40, 4, generator=g, dtype=torch.float64)
        unbiased.append(kid(x, y, num_subsets=1, subset_size=40)[0])
        biased.append(_biased_mmd2(x, y))
    u, b = np.array(unbiased), np.array(biased)
    se_u, se_b = u.std(ddof=1) / np.sqrt(len(u)), b.std(ddof=1) / np.sqrt(len(b))
    assert abs(u.mean()) < 4 * se_u
    assert b.mean() > 10 * se_b


def test_kid_positive_for_shifted_distributions_and_deterministic():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 8, generator=g, dtype=torch.float64)
    y = torch.randn(300, 8, generator=g, dtype=torch.float64) + 1.0
    mean, std = kid(x, y, num_subsets=20, subset_size=100)
    assert mean > 5 * std > 0  # a shift of 1 per coordinate: the subsets' spread is far below the mean
    assert kid(x, y, num_subsets=20, subset_size=100) == (mean, std)  # default generator: a fixed seed


def test_kid_matches_torchmetrics_on_full_sets():
    tm = pytest.importorskip("torchmetrics.image.kid")
    g = torch.Generator().manual_seed(6)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = torch.randn(60, 5, generator=g, dtype=torch.float64) * 1.3
    # One subset holding every row: the estimate does not depend on the order torchmetrics draws.
    expected = tm.poly_mmd(x, y)
    assert kid(x, y, num_subsets=1, subset_size=60)[0] == pytest.approx(float(expected), rel=1e-10)


def test_kid_clips_subset_size_with_a_warning():
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(30, 3, generator=g), torch.randn(50, 3, generator=g)
    with pytest.warns(UserWarning, match="subset_size=30"):
        clipped = kid(x, y, num_subsets=3, subset_size=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kid(x, y, num_subsets=3, subset_size=30) == clipped


def test_inception_score_closed_forms():
    k = 7
    uniform = torch.full((70, k), 1 / k, dtype=torch.float64)
    assert inception_score(uniform, splits=5)[0] == pytest.approx(1.0, abs=1e-12)
    # Confident and balanced: each split holds every class equally, p(y) uniform, KL = log K, score = K.
    confident = torch.eye(k, dtype=torch.float64).repeat(10, 1)
    mean, std = inception_score(confident, splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0, abs=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchmetrics: feature buffer, std of a single split
def test_inception_score_matches_torchmetrics_single_split():
    tm = pytest.importorskip("torchmetrics.image.inception")

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    g = torch.Generator().manual_seed(8)
    logits = torch.randn(100, 10, generator=g, dtype=torch.float64) * 3
    metric = tm.InceptionScore(feature=Identity(), splits=1)
    metric.update(logits)
    assert inception_score(logits.softmax(1), splits=1)[0] == pytest.approx(float(metric.compute()[0]), rel=1e-8)


def test_inception_score_rejects_logits():
    with pytest.raises(UserError, match="softmax"):
        inception_score(torch.randn(20, 3), splits=2)
    with pytest.raises(UserError, match="at least 10"):
        inception_score(torch.full((5, 2), 0.5), splits=10)


def test_precision_recall_identical_sets():
    x = torch.randn(100, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_worked_example():
    # Real points 0, 1, 2, 3 on a line: with k = 1 every real ball has radius 1. Fake points 0.5, 2.9, 10, 20:
    # 0.5 and 2.9 lie in real balls, 10 and 20 do not -> precision 2/4. Fake radii (k = 1): 2.4, 2.4, 7.1, 10;
    # every real point is within 2.4 of 0.5 or 2.9 -> recall 1.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    fake = torch.tensor([[0.5], [2.9], [10.0], [20.0]], dtype=torch.float64)
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    far = fake + 100
    assert precision_recall(real, far, k=1) == (0.0, 0.0)


def test_precision_recall_is_chunk_independent(monkeypatch):
    import importlib

    sq = importlib.import_module("dulab.metrics.sample_quality")  # the attribute of dulab.metrics is the function
    g = torch.Generator().manual_seed(10)
    real, fake = torch.randn(300, 4, generator=g), torch.randn(250, 4, generator=g) + 0.5
    whole = precision_recall(real, fake)
    monkeypatch.setattr(sq, "_CHUNK", 7)
    assert precision_recall(real, fake) == whole
    assert 0 < whole[0] < 1 and 0 < whole[1] < 1


class _TinyExtractor(torch.nn.Module):
    """A fixed random linear map of the pixels: features (B, 6), logits (B, 4)."""

    def __init__(self, num_dims: int):
        super().__init__()
        g = torch.Generator().manual_seed(11)
        self.proj = torch.nn.Parameter(torch.randn(num_dims, 6, generator=g), requires_grad=False)
        self.head = torch.nn.Parameter(torch.randn(6, 4, generator=g), requires_grad=False)
        self.calls = 0

    def features(self, x):
        self.calls += 1
        return x.flatten(1).float() @ self.proj

    def forward(self, x):
        return self.features(x) @ self.head


def _toy_reference(n=120):
    g = torch.Generator().manual_seed(12)
    x = torch.randint(0, 4, (n, 1, 3, 3), generator=g)
    return TensorDataset(x, None, DataSpec((1, 3, 3), "discrete", 4), name="toy")


def test_sample_quality_keys_and_values():
    ref = _toy_reference()
    ex = _TinyExtractor(9)
    out = sample_quality(ref.x, ref, extractor=ex, batch_size=50)
    assert set(out) == {"fid", "kid", "kid_std", "inception_score", "inception_score_std", "precision", "recall",
                        "num_samples", "num_reference", "upsampling"}
    assert out["upsampling"] == 1
    assert abs(out["fid"]) < 1e-6 and out["precision"] == out["recall"] == 1.0
    assert out["num_samples"] == out["num_reference"] == 120
    assert ex.calls == 2 * 2 * 3  # features + logits, two sets, 3 batches of 50
    g = torch.Generator().manual_seed(13)
    noisy = (ref.x + torch.randint(0, 2, ref.x.shape, generator=g)).clamp(0, 3)
    out2 = sample_quality(noisy, ref, extractor=ex)
    assert out2["fid"] > 0.01 and out2["kid"] > 0
    feats, logits = ex.features(ref.x), ex(noisy)
    assert out2["inception_score"] == pytest.approx(inception_score(logits.double().softmax(1))[0], rel=1e-6)
    assert out2["fid"] == pytest.approx(fid(feats, ex.features(noisy)), rel=1e-6)


def test_sample_quality_user_errors():
    ref = _toy_reference()
    ex = _TinyExtractor(9)
    with pytest.raises(UserError, match="shape"):
        sample_quality(torch.zeros(50, 1, 4, 4, dtype=torch.long), ref, extractor=ex)
    with pytest.raises(UserError, match="at least 10 samples"):
        sample_quality(ref.x[:5], ref, extractor=ex)
    with pytest.raises(UserError, match="integer levels"):
        sample_quality(ref.x.float(), ref, extractor=ex)
    with pytest.raises(UserError, match="differ in width"):
        fid(torch.randn(10, 3), torch.randn(10, 4))


class _ShapedExtractor(_TinyExtractor):
    """``_TinyExtractor`` for 1x6x6 images that rejects any other shape, as the shipped classifiers do."""

    input_shape = (1, 6, 6)

    def features(self, x):
        assert tuple(x.shape[1:]) == self.input_shape, x.shape
        return super().features(x)


def test_upsampling_factor():
    from dulab.metrics.sample_quality import upsampling_factor

    assert upsampling_factor((1, 32, 32), (1, 64, 64)) == 2
    assert upsampling_factor((1, 16, 16), (1, 64, 64), 2, 2) == 4
    assert upsampling_factor((1, 8, 8), (1, 8, 8)) == 1
    for shape, levels in (((3, 32, 32), 2), ((1, 24, 24), 2), ((1, 32, 16), 2), ((1, 128, 128), 2),
                          ((1, 32, 32), 256)):
        assert upsampling_factor(shape, (1, 64, 64), levels, 2) is None, shape


def test_smaller_images_are_enlarged_for_the_extractor():
    """3x3 images scored by a 6x6 extractor: each pixel a 2x2 block, in samples and reference alike."""
    ref = _toy_reference()
    ex = _ShapedExtractor(36)
    g = torch.Generator().manual_seed(14)
    fake = (ref.x + torch.randint(0, 2, ref.x.shape, generator=g)).clamp(0, 3)
    out = sample_quality(fake, ref, extractor=ex)
    assert out["upsampling"] == 2
    big = lambda x: x.repeat_interleave(2, -2).repeat_interleave(2, -1)  # noqa: E731
    assert big(ref.x)[0, 0, :2, :2].unique().numel() == 1
    assert out["fid"] == pytest.approx(fid(ex.features(big(ref.x)), ex.features(big(fake))), rel=1e-6)
    assert sample_quality(ref.x, ref, extractor=ex)["fid"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(UserError, match="integer enlargement"):
        sample_quality(ref.x, ref, extractor=type("E", (_ShapedExtractor,), {"input_shape": (1, 7, 7)})(49))


def test_sample_quality_loads_a_named_reference():
    import dulab

    test = dulab.load_dataset("digits", "test")
    ex = _TinyExtractor(64)
    by_name = sample_quality(test.x[:100], "digits", extractor=ex)
    assert by_name == sample_quality(test.x[:100], test, extractor=ex)
    assert by_name["num_reference"] == len(test) and by_name["num_samples"] == 100
