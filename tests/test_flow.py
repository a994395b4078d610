"""Tests of BERT-flow (simcse_hub.postprocess): the network is invertible and its log-determinant is the true one;
fitting raises the likelihood above a Gaussian's and makes the corpus isotropic; early stopping keeps the best step;
save / load is bitwise, and a flow saved by an earlier version loads with its outputs; bad files and bad inputs fail
with clear messages; a fixed seed gives a fixed flow."""

from __future__ import annotations

import base64
import json
import zlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from simcse_hub.postprocess import FLOW_FILE, Flow, FlowModel, fit_flow

DIM = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices run faster on one thread, and the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(n: int = 500, seed: int = 0) -> np.ndarray:
    """Correlated, anisotropic, non-Gaussian points: half the coordinates depend on the squares of the other half,
    then a fixed random linear map with scales from 5 to 0.2 mixes them (the map does not depend on ``seed``)."""
    g = np.random.default_rng(seed).normal(size=(n, DIM))  # (n, dim)
    half = DIM // 2
    g[:, half:] = 0.3 * g[:, half:] + g[:, :half] ** 2 - 1
    mix = np.random.default_rng(1234).normal(size=(DIM, DIM)) * np.geomspace(5.0, 0.2, DIM)[:, None]  # (dim, dim)
    return g @ mix + 3.0


def gaussian_log_likelihood(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Log-density of ``x`` under the maximum-likelihood Gaussian of ``reference`` (full covariance)."""
    mean, covariance = reference.mean(axis=0), np.cov(reference, rowvar=False, bias=True)
    centred = x - mean  # (n, dim)
    mahalanobis = (centred * np.linalg.solve(covariance, centred.T).T).sum(axis=1)
    return -0.5 * (mahalanobis + np.linalg.slogdet(covariance)[1] + x.shape[1] * np.log(2 * np.pi))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return make_data()


@pytest.fixture(scope="module")
def fitted(data) -> Flow:
    return Flow(num_steps=2, hidden_size=32).fit(data, steps=300, corpus="corpus.txt")


# ------------------------------------------------------------------------------------------------- the network


def test_network_with_random_parameters_is_invertible_and_its_logdet_is_the_jacobians():
    torch.manual_seed(0)
    model = FlowModel(6, num_steps=3, hidden_size=8)
    with torch.no_grad():  # move every parameter off its (identity-like) initialisation, zero last layers included
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
        model.input_mean.normal_()
        model.input_std.uniform_(0.5, 2.0)
    model64 = model.double()  # float64: the algebra is checked to 1e-9, not float32's rounding of a steep map
    x = 2 * torch.randn(50, 6, dtype=torch.float64)
    with torch.no_grad():
        z, _ = model64(x)
        assert (z - x).abs().max() > 1.0  # far from the identity
        assert (model64.inverse(z) - x).abs().max() < 1e-9
    for row in x[:3].double():
        jacobian = torch.autograd.functional.jacobian(lambda v: model64(v[None])[0][0], row)  # (6, 6)
        sign, expected = torch.linalg.slogdet(jacobian)
        assert sign != 0
        assert abs(float(model64(row[None])[1][0].detach()) - float(expected)) < 1e-8


def test_initialised_flow_is_invertible_and_standardises(data):
    flow = Flow(num_steps=2, hidden_size=32).fit(data, steps=0)
    z = flow.transform(data)
    assert flow.best_step == 0 and flow.log_history == []
    assert np.abs(flow.inverse(z) - data).max() < 1e-4
    assert np.abs(z.mean(axis=0)).max() < 0.3  # ActNorm set on the first batch, standardisation on the corpus


# ------------------------------------------------------------------------------------------------------ fitting


def test_fitted_flow_is_invertible_for_arrays_tensors_and_single_vectors(fitted, data):
    z = fitted.transform(data)
    assert z.shape == data.shape and z.dtype == np.float64
    assert np.abs(fitted.inverse(z) - data).max() < 1e-4
    x32 = torch.from_numpy(data).float()
    z32 = fitted(x32)
    assert isinstance(z32, torch.Tensor) and z32.dtype == torch.float32 and z32.shape == x32.shape
    assert (fitted.inverse(z32) - x32).abs().max() < 1e-4
    single = data[3].astype(np.float32)
    assert fitted.transform(single).shape == (DIM,) and fitted.transform(single).dtype == np.float32
    np.testing.assert_allclose(fitted.transform(single), fitted.transform(data[:4].astype(np.float32))[3], atol=1e-4)
    assert fitted.log_prob(single).shape == () and fitted.log_prob(data).shape == (len(data),)
    assert fitted(torch.from_numpy(data)).dtype == torch.float64


def test_fitting_raises_the_likelihood_above_the_best_gaussian(fitted, data):
    history = fitted.log_history
    assert [record["step"] for record in history] == list(range(15, 301, 15))
    assert history[-1]["nll"] < history[0]["nll"] - 0.5  # measured: 3.45 -> 2.25 nats per dimension
    assert history[-1]["val_nll"] < history[0]["val_nll"] - 0.3  # measured: 3.32 -> 2.33
    before = Flow(num_steps=2, hidden_size=32).fit(data, steps=0).log_prob(data).mean()
    after = fitted.log_prob(data).mean()
    assert after > before + 10  # measured: -56.8 -> -36.0 nats per vector
    # log_prob is a density of x, the same quantity the training curve records
    assert abs(-after / DIM - history[-1]["nll"]) < 0.1  # measured 0.0004
    # the flow captures what a full-covariance Gaussian cannot, on points it has not seen
    unseen = make_data(2000, seed=7)
    assert fitted.log_prob(unseen).mean() > gaussian_log_likelihood(unseen, data).mean() + 0.4  # measured +0.93


def test_fitted_space_is_centred_and_nearly_isotropic(fitted, data):
    z = fitted.transform(data)
    assert np.abs(z.mean(axis=0)).max() < 0.3  # measured 0.07
    off_identity = np.linalg.norm(np.cov(z, rowvar=False) - np.eye(DIM))  # measured 0.87
    standardized = np.linalg.norm(np.corrcoef(data, rowvar=False) - np.eye(DIM))  # measured 6.9
    initialised = Flow(num_steps=2, hidden_size=32).fit(data, steps=0).transform(data)
    assert off_identity < 2.0 and off_identity < standardized / 3
    assert off_identity < np.linalg.norm(np.cov(initialised, rowvar=False) - np.eye(DIM)) / 3  # measured 6.2


def test_constant_dimensions_are_tolerated(data, caplog):
    """Raw encoder outputs can have (nearly) constant dimensions (all-MiniLM-L6-v2 has three): fitting must not blow
    up on them (it did, to an NLL of 1e5 after one step, with Glow's shift-then-scale ActNorm)."""
    degenerate = data.copy()
    degenerate[:, 3] = 0.7
    degenerate[:, 5] = 1e-33 * np.random.default_rng(0).normal(size=len(data))
    with caplog.at_level("INFO", logger="simcse_hub.postprocess"):
        flow = Flow(num_steps=2, hidden_size=32).fit(degenerate, steps=60, log_every=10)
    assert "2 of 16 dimensions are (nearly) constant on the corpus (first: 3)" in caplog.text  # said, not warned
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    initialised = Flow(num_steps=2, hidden_size=32).fit(degenerate, steps=0).log_prob(degenerate).mean() / -DIM
    nll = [record["nll"] for record in flow.log_history]
    assert max(nll) < initialised + 0.1  # never above where it started (measured 2.66; 2.9e4 with Glow's ActNorm)
    assert nll[-1] < nll[0] - 0.3  # measured 2.57 -> 2.06
    z = flow.transform(degenerate)
    assert np.isfinite(z).all() and np.abs(flow.inverse(z) - degenerate).max() < 1e-4


def test_fit_is_deterministic_for_a_seed(data):
    first = Flow(num_steps=2, hidden_size=16).fit(data, steps=40, seed=3)
    again = Flow(num_steps=2, hidden_size=16).fit(data, steps=40, seed=3)
    other = Flow(num_steps=2, hidden_size=16).fit(data, steps=40, seed=4)
    assert first.log_history == again.log_history
    np.testing.assert_array_equal(first.transform(data), again.transform(data))
    assert first.log_history != other.log_history
    assert not np.allclose(first.transform(data), other.transform(data))


def test_early_stopping_keeps_the_best_held_out_step(data):
    small = data[:120]  # few points, a wide network: it overfits quickly
    flow = Flow(num_steps=2, hidden_size=64).fit(small, steps=1000, log_every=10, patience=3, learning_rate=3e-3)
    history = flow.log_history
    assert history[-1]["step"] < 1000  # stopped early
    best = min(history, key=lambda record: record["val_nll"])
    assert flow.best_step == best["step"] and history[-1]["step"] == flow.best_step + 30
    # the kept parameters are the ones reached at best_step: a run that ends there gives the same flow
    replay = Flow(num_steps=2, hidden_size=64).fit(small, steps=flow.best_step, log_every=10, patience=None,
                                                   learning_rate=3e-3)
    np.testing.assert_array_equal(flow.transform(small), replay.transform(small))
    everything = Flow(num_steps=2, hidden_size=16).fit(small, steps=20, validation_fraction=0)
    assert "val_nll" not in everything.log_history[-1] and everything.best_step == 20


# --------------------------------------------------------------------------------------------------- save / load


def test_save_load_is_bitwise_and_keeps_the_metadata(fitted, data, tmp_path):
    path = fitted.save(tmp_path / "model")
    assert path == tmp_path / "model" / FLOW_FILE and path.is_file()
    tensors = load_file(str(path))
    assert all(tensor.dtype == torch.float32 for tensor in tensors.values())
    assert {"input_mean", "input_std", "steps.1.linear.P", "steps.0.coupling.net.4.weight"} <= set(tensors)
    loaded = Flow.load(tmp_path / "model")
    assert repr(loaded) == "Flow(dim=16, num_steps=2, hidden_size=32, corpus='corpus.txt')" == repr(fitted)
    for x in (data, data.astype(np.float32)):
        np.testing.assert_array_equal(loaded.transform(x), fitted.transform(x))
        np.testing.assert_array_equal(loaded.log_prob(x), fitted.log_prob(x))
        np.testing.assert_array_equal(loaded.inverse(x), fitted.inverse(x))
    assert loaded.log_history == fitted.log_history and loaded.best_step == fitted.best_step
    assert Flow.load(path) is not None  # the file itself
    assert Flow.load(tmp_path) is None  # a folder without a flow
    assert Flow.load(tmp_path / "nowhere") is None


# A flow.safetensors written by simcse_hub before the modules were merged (Flow(num_steps=1, hidden_size=2) fitted for
# 50 steps on 200 points of dimension 4, corpus "old.txt"), zlib-compressed, and its float32 transform of OLD_INPUTS.
OLD_FLOW = (
    "eNqdlU1o01AcwDfcQMEJgoJfgxJP6rNLXpP0pWsaYW7gdChl6mErIWvSNluaxCbZh6W4g86DTgRvQz14ERSFiYID27ipoIii7CJDvHgRwYs3QcSX"
    "7sPOZZX4v7z3//rx/3ghL5sbqlIkRDGv2JIs2ZIoErEigbWcIRMxYkAp2AczmjFCAHy3bNGyFRPbGRIbZDWPrzS+aUZWtNKSpogDhqN7iTDsReRU"
    "WVZ00VLPKp4NW9JGwXQsrBiaHLZHbWzSnXwV61mpJVhOtWyjMIYtfcV+wvP2E7EQZECon9A1zVOoMEuRNISI5liGoRiK9pzDkib+CYiSiKM4BmIn"
    "SyO6BEI1NIZcRWMYNoJoErEsiRBio2tpFEkyXDSCKIajoly0lCJKgFB107Hx+CTdG5xsj5leq10Rr1krJ3laH53Cw/KGa2QylmLjRvtIQLGplXTL"
    "lgNlUyyIQC+9OrcwGZbStm4U8uEBVbICkSIQ0MiPtLLSQDgaAZauxaUNx9RUPRvWFRur9euDa4EsDaKwDnBEUbM5uw4S+ECjECC0LhQGrxIhwLF1"
    "gP9VJccCilq/dzr4sjEOUBDVQf6rUNqvUIzEr5msxWKkIhXCx+qRfN81CSCkfUgnApIwBcDVS14inQxKwsuNMNCHVP1Egn1tDAQR1q8qS83qQWEs"
    "LgzhYZVCizLXfUkQJ0yhocMRrrU5wvjQKyFp3xOGzk0JLzaZQuPEXv78hztPbl14G/81crz94RWVzzwY5F/3DvKbew7zzd2PKsn0fmFjR5O7/evz"
    "ys2LLW5naZc72cUkepr2ufnWp4lnrW8SR5I7+OL1mcrwZLw8feMof7p9a3xhz4HyzP1DZe9/Eoe9vHf+aHWq56fGbr7BR5IdG4Ra/fK3j4nZtt3u"
    "sr4w/L3SOZ1y716NLcWNCw2+UmuvH7Nty+MKkX+fkNNziWXPaEvKnZ+cKtdG/0wB92/Cl3enKrNnblc+mzsT+Z3zOH/cXeQunr8BZGwuAA=="
)
OLD_INPUTS = [[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 1.0]]
OLD_OUTPUTS = "+fNsP3Budz9yZaW/WwT5vqFk9b6WT2Q/8b+ZPl+daT8="


def test_a_flow_saved_by_an_earlier_version_loads_with_the_same_outputs(tmp_path):
    """The saved layout (tensor names, metadata, parametrisation) is a contract: an earlier model folder's flow gives
    the outputs it gave then (bitwise on the machine that wrote it; to 1e-6 here, as another CPU may round a matmul
    differently)."""
    (tmp_path / FLOW_FILE).write_bytes(zlib.decompress(base64.b64decode(OLD_FLOW)))
    flow = Flow.load(tmp_path)
    assert repr(flow) == "Flow(dim=4, num_steps=1, hidden_size=2, corpus='old.txt')" and flow.best_step == 50
    assert [record["step"] for record in flow.log_history] == [25, 50]
    expected = np.frombuffer(base64.b64decode(OLD_OUTPUTS), dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(flow.transform(np.asarray(OLD_INPUTS, dtype=np.float32)), expected, rtol=0, atol=1e-6)


def _rewrite(path, tensors=None, **metadata_changes):
    """Rewrite a saved flow with some tensors replaced or removed (value None) and some metadata changed."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata.update(metadata_changes)
    stored = load_file(str(path))
    for key, value in (tensors or {}).items():
        stored.pop(key) if value is None else stored.__setitem__(key, value)
    save_file(stored, str(path), metadata={k: v for k, v in metadata.items() if v is not None})


@pytest.mark.parametrize(
    "damage, message",
    [
        ("bytes", r"not a readable safetensors file"),
        ({"tensors": {"steps.0.linear.L": None}}, r'Missing key\(s\) in state_dict: "steps\.0\.linear\.L"'),
        ({"tensors": {"extra": torch.zeros(2)}}, r'Unexpected key\(s\) in state_dict: "extra"'),
        ({"dim": "32"}, r"describes \(dim=32, .* size mismatch for input_mean: .*Size\(\[16\]\) from checkpoint"),
        ({"num_steps": "3"}, r'Missing key\(s\) in state_dict: "steps\.2\.actnorm\.log_scale"'),
        ({"method": "bert-whitening"}, r"metadata 'method' is 'bert-whitening', not 'bert-flow'"),
        ({"hidden_size": "wide"}, r"missing or malformed metadata"),
        ({"num_steps": None}, r"missing or malformed metadata .*num_steps"),
        ({"tensors": {"steps.1.linear.P": torch.ones(DIM, DIM)}}, r"'steps\.1\.linear\.P' must be a permutation"),
        ({"tensors": {"input_std": torch.full((DIM,), float("nan"))}}, r"'input_std' must be finite float32"),
        ({"tensors": {"input_std": torch.zeros(DIM)}}, r"tensor 'input_std' must be positive"),
        ({"tensors": {"steps.0.linear.sign_s": torch.full((DIM,), 0.5)}}, r"'steps\.0\.linear\.sign_s' must hold only"),
        ({"tensors": {"input_mean": torch.zeros(DIM, dtype=torch.float64)}}, r"finite float32 .*got torch\.float64"),
    ],
)
def test_load_rejects_malformed_files_naming_them(fitted, tmp_path, damage, message):
    path = fitted.save(tmp_path / "broken")
    if damage == "bytes":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    else:
        damage = dict(damage)
        _rewrite(path, damage.pop("tensors", None), **damage)
    with pytest.raises(ValueError, match=r"broken/flow\.safetensors: .*" + message):
        Flow.load(tmp_path / "broken")


def test_saved_metadata_describes_the_flow(fitted, tmp_path):
    from safetensors import safe_open

    with safe_open(str(fitted.save(tmp_path)), framework="pt") as handle:
        metadata = handle.metadata()
    assert {k: metadata[k] for k in ("method", "dim", "num_steps", "hidden_size", "corpus")} == {
        "method": "bert-flow", "dim": "16", "num_steps": "2", "hidden_size": "32", "corpus": "corpus.txt"}
    assert json.loads(metadata["log_history"]) == fitted.log_history


# ---------------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "embeddings, kwargs, error, message",
    [
        (np.ones((1, 4)), {}, ValueError, r"Flow\.fit needs at least 2 embeddings .*; got 1\."),
        (np.ones(4), {}, ValueError, r"must have shape \(n, dim\); got shape \(4,\)"),
        (np.ones((3, 4, 2)), {}, ValueError, r"got shape \(3, 4, 2\)"),
        (np.ones((5, 1)), {}, ValueError, r"size 1; a coupling flow needs dim >= 2"),
        (np.ones((5, 4)), {}, ValueError, r"all 5 embeddings are the same vector"),
        ("nan-row-7", {}, ValueError, r"row 7 \(0-based\) has a NaN or infinite value \(2 such row"),
        (None, {"steps": -1}, ValueError, r"steps must be an integer >= 0; got -1"),
        (None, {"batch_size": 0}, ValueError, r"batch_size must be an integer >= 1; got 0"),
        (None, {"learning_rate": 0.0}, ValueError, r"learning_rate must be a positive number; got 0\.0"),
        (None, {"validation_fraction": 1.0}, ValueError, r"validation_fraction must be in \[0, 1\); got 1\.0"),
        (None, {"patience": 0}, ValueError, r"patience must be an integer >= 1; got 0"),
    ],
)
def test_fit_rejects_bad_inputs(data, embeddings, kwargs, error, message):
    if embeddings is None:
        embeddings = data
    elif isinstance(embeddings, str):
        embeddings = data.copy()
        embeddings[7, 2], embeddings[9, 0] = np.nan, np.inf
    with pytest.raises(error, match=message):
        Flow(hidden_size=8).fit(embeddings, **kwargs)


def test_unfitted_flow_and_wrong_sizes_raise(fitted):
    flow = Flow()
    assert repr(flow) == "Flow(not fitted, num_steps=2, hidden_size=128, corpus=None)"
    for method in (flow.transform, flow.inverse, flow.log_prob, flow.save):
        with pytest.raises(RuntimeError, match=r"Flow is not fitted: call fit\(embeddings\) or Flow\.load"):
            method(np.zeros((2, DIM)))
    with pytest.raises(ValueError, match=r"Flow\.transform: expected shape \(n, 16\) or \(16,\); got \(3, 8\)"):
        fitted.transform(np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r"Flow\.inverse: expected shape \(n, 16\) or \(16,\); got \(2, 2, 16\)"):
        fitted.inverse(torch.zeros(2, 2, DIM))
    with pytest.raises(ValueError, match=r"Flow\.log_prob: expected shape .* got \(15,\)"):
        fitted.log_prob(np.zeros(15))
    with pytest.raises(ValueError, match=r"Flow: num_steps must be an integer >= 1; got 0"):
        Flow(num_steps=0)
    with pytest.raises(ValueError, match=r"Flow: hidden_size must be an integer >= 1; got 2\.5"):
        Flow(hidden_size=2.5)


# ------------------------------------------------------------------------------------------------------ fit_flow


def test_fit_flow_encodes_the_sentences_and_fits(data):
    sentences = [f"sentence {i}" for i in range(len(data))]
    vectors = dict(zip(sentences, data))
    calls = []

    def encode(batch):
        calls.append(len(batch))
        return torch.from_numpy(np.stack([vectors[s] for s in batch])).float()

    flow = fit_flow(encode, sentences, corpus="toy.txt", hidden_size=16, batch_size=64, steps=30)
    assert calls == [len(sentences)] and flow.corpus == "toy.txt" and flow.hidden_size == 16  # one call: it batches
    direct = Flow(hidden_size=16).fit(data.astype(np.float32), batch_size=64, steps=30)
    np.testing.assert_array_equal(flow.transform(data), direct.transform(data))
