import pytest
import torch

from lossbook import data


def test_mnist1d_shapes_determinism_and_cache(tmp_path):
    a = data.mnist1d(num_samples=500, seed=3)
    assert a.x_train.shape == (400, 40) and a.x_test.shape == (100, 40)
    assert a.y_train.dtype == torch.int64 and set(a.y_train.tolist()) <= set(range(10))
    files = list((tmp_path / "cache" / "data").glob("mnist1d-*.npz"))
    assert len(files) == 1
    b = data.mnist1d(num_samples=500, seed=3)  # from the cache
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = data.mnist1d(num_samples=500, seed=4)
    assert not torch.equal(a.x_train, c.x_train)


def test_mnist1d_many_classes_and_bad_args():
    d = data.mnist1d(num_samples=600, num_classes=30, template_seed=1)
    assert d.num_classes == 30 and d.y_train.max() < 30
    with pytest.raises(ValueError, match="unknown mnist1d generator args"):
        data.mnist1d(num_samples=100, not_an_arg=1)


def test_digits_and_mixture():
    d = data.digits()
    assert d.x_train.shape[1] == 64 and len(d.y_train) + len(d.y_test) == 1797
    assert 0 <= d.x_train.min() and d.x_train.max() <= 1
    g1 = data.gaussian_mixture(20, 8, 10, 5, seed=1)
    g2 = data.gaussian_mixture(20, 8, 10, 5, seed=1)
    assert g1.x_train.shape == (200, 8) and torch.equal(g1.x_train, g2.x_train)
    assert torch.bincount(g1.y_test).tolist() == [5] * 20


def test_symmetric_noise_rate_and_targets():
    y = torch.arange(10).repeat(2000)
    noisy = data.symmetric_noise(y, 0.4, 10, seed=0)
    flipped = noisy != y
    assert abs(flipped.float().mean().item() - 0.4) < 0.015
    # flips go uniformly to the other nine classes
    counts = torch.bincount((noisy[flipped] - y[flipped]) % 10, minlength=10)
    assert counts[0] == 0 and (counts[1:].float() / counts.sum() - 1 / 9).abs().max() < 0.02
    assert torch.equal(noisy, data.symmetric_noise(y, 0.4, 10, seed=0))
    assert torch.equal(data.symmetric_noise(y, 0.0, 10, seed=0), y)
    with pytest.raises(ValueError):
        data.symmetric_noise(y, 1.5, 10, seed=0)


def test_asymmetric_noise():
    y = torch.zeros(10000, dtype=torch.int64)
    noisy = data.asymmetric_noise(y, 0.3, {0: 7}, 10, seed=0)
    assert set(noisy.unique().tolist()) == {0, 7}
    assert abs((noisy == 7).float().mean().item() - 0.3) < 0.02
    default = data.asymmetric_noise(torch.full((100,), 9), 1.0, None, 10, seed=0)
    assert (default == 0).all()


def test_long_tail():
    assert data.long_tail_counts(1000, 10, 100) [0] == 1000
    assert data.long_tail_counts(1000, 10, 100)[-1] == 10
    assert data.long_tail_counts(100, 4, 10, "step") == [100, 100, 10, 10]
    y = torch.arange(10).repeat(100)
    idx = data.long_tail_indices(y, 10, 10, seed=0)
    counts = torch.bincount(y[idx], minlength=10).tolist()
    assert counts == data.long_tail_counts(100, 10, 10)
    with pytest.raises(ValueError, match="valid: exp, step"):
        data.long_tail_counts(10, 3, 2, "linear")
