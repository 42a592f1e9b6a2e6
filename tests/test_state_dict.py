"""PyTorch weights without PyTorch: ``state_dict`` names, ``load_state_dict`` and safetensors files.

* ``model.state_dict()`` has exactly the names and shapes of the equal ``nn.Sequential``'s;
* a LeNet trained in PyTorch for a few steps, saved with ``safetensors.torch.save_file``, loads
  into ``numcnn.models.lenet5()`` (named ``conv1``...``fc3``) and into an equal Sequential
  (numeric names), and predicts what PyTorch predicts (1e-5); so does a net with batch norm
  (running statistics, ``num_batches_tracked``);
* mismatches are listed exactly (missing, unexpected, shape); ambiguous names ask for
  ``name_map=``; ``.pth`` pickles are refused with the conversion line.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

import numcnn
from numcnn import models
from numcnn.errors import DTypeError, ModelFileError
from numcnn.interop import StateDictError, load_torch_weights
from numcnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU

nn = torch.nn


class TorchLeNet(nn.Module):
    """The classic named LeNet-5 (conv1, conv2, fc1, fc2, fc3), as numcnn.models.lenet5."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def train_a_few_steps(net, shape, steps=5, seed=0):
    """SGD on random images and labels: weights (and BN statistics) no longer at their init."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for _ in range(steps):
        x = torch.randn(16, *shape, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def assert_predicts_like_torch(model, net, shape):
    x = np.random.default_rng(1).standard_normal((7, *shape)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    got = model.eval().forward(x)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    e = np.exp(ref - ref.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict(x), e / e.sum(axis=1, keepdims=True), rtol=1e-5,
                               atol=1e-6)


def torch_module_like(layer):
    """The torch module equal to numcnn ``layer`` (containers as test_graph.py writes them)."""
    from test_graph import TChannelPad, TConcat, TResidual
    L = numcnn.layers
    if isinstance(layer, L.Residual):
        return TResidual([torch_module_like(l) for l in layer.body],
                         None if layer.shortcut is None else [torch_module_like(l) for l in layer.shortcut])
    if isinstance(layer, L.Concat):
        return TConcat([[torch_module_like(l) for l in chain] for chain in layer.branches])
    if isinstance(layer, L.ChannelPadShortcut):
        return TChannelPad(layer.in_channels, layer.out_channels, layer.stride)
    if isinstance(layer, Conv2D):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                         layer.padding, layer.dilation, groups=layer.groups,
                         bias=layer.bias is not None)
    if isinstance(layer, (BatchNorm2D, L.BatchNorm1D)):
        return (nn.BatchNorm2d if isinstance(layer, BatchNorm2D) else nn.BatchNorm1d)(layer.num_features)
    if isinstance(layer, Dense):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if isinstance(layer, MaxPool2D):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, L.AvgPool2D):
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, L.GlobalAvgPool2D):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if isinstance(layer, L.Dropout):
        return nn.Dropout(layer.p)
    return {"ReLU": nn.ReLU, "Flatten": nn.Flatten, "Identity": nn.Identity}[type(layer).__name__]()


def torch_sequential_like(model):
    """The nn.Sequential equal to a numcnn Sequential."""
    return nn.Sequential(*[torch_module_like(l) for l in model.layers])


# -- names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(models.PRESETS))
def test_state_dict_names_and_shapes_are_nn_sequential_s(name):
    model = models.PRESETS[name]()
    ours = model.state_dict()
    theirs = torch_sequential_like(model).state_dict()
    assert list(ours) == list(theirs)                    # same names, in the same order
    for k, v in theirs.items():
        assert ours[k].shape == tuple(v.shape), k
    if name == "cifar-vgg":
        assert ours["1.num_batches_tracked"].dtype == np.int64 and ours["1.num_batches_tracked"].shape == ()


def test_state_dict_is_a_copy_and_loads_back_identically():
    model = models.cifar_vgg()
    sd = model.state_dict()
    sd["0.weight"][...] = 0                           # a copy: the model is unchanged
    assert np.abs(model.layers[0].weight.value).sum() > 0
    other = models.cifar_vgg(rng=5)
    res = other.load_state_dict(model.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert np.array_equal(a, b), k


# -- PyTorch-trained weights ---------------------------------------------------------------------------
def test_torch_trained_lenet_loads_from_safetensors_and_predicts_identically(tmp_path):
    net = train_a_few_steps(TorchLeNet(), (1, 28, 28))
    path = tmp_path / "lenet.safetensors"
    save_file(net.state_dict(), str(path))
    model = models.lenet5()
    res = load_torch_weights(model, path)      # names conv1...fc3 -> layers 0, 3, 7, 9, 11
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert_predicts_like_torch(model, net, (1, 28, 28))
    # the same through load_state_dict on safetensors.numpy's (sorted) mapping
    model2 = models.lenet5(rng=3)
    model2.load_state_dict(load_file(str(path)))
    assert_predicts_like_torch(model2, net, (1, 28, 28))


def test_torch_sequential_with_batch_norm_loads_by_index(tmp_path):
    model = models.cifar_vgg()
    net = train_a_few_steps(torch_sequential_like(model), (3, 32, 32), steps=3)
    assert int(net[1].num_batches_tracked) == 3
    save_file(net.state_dict(), str(tmp_path / "vgg.safetensors"))
    load_torch_weights(model, tmp_path / "vgg.safetensors")
    np.testing.assert_array_equal(model.layers[1].running_var, net[1].running_var.numpy())
    assert_predicts_like_torch(model, net, (3, 32, 32))


@pytest.mark.parametrize("name", ["resnet-digits", "mobilenet"])
def test_torch_graph_nets_load_by_nested_index(tmp_path, name):
    """Residual blocks (3.body.0.weight...) and grouped convolutions, trained in PyTorch."""
    model = models.PRESETS[name]()
    shape = model.input_shape
    net = train_a_few_steps(torch_sequential_like(model), shape, steps=2)
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    load_torch_weights(model, tmp_path / "w.safetensors")
    assert_predicts_like_torch(model, net, shape)


def test_named_submodules_with_batch_norm_interleave_by_shapes():
    """conv1, bn1, conv2, bn2, fc: three families whose order only the shapes reveal."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
            self.conv2, self.bn2 = nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8)
            self.fc = nn.Linear(8 * 2 * 2, 10)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
            return self.fc(torch.flatten(x, 1))

    net = train_a_few_steps(Net(), (1, 8, 8), steps=3)
    model = numcnn.Sequential([Conv2D(1, 4, 3), BatchNorm2D(4), ReLU(), Conv2D(4, 8, 3),
                               BatchNorm2D(8), ReLU(), MaxPool2D(2), Flatten(), Dense(32, 10)],
                              input_shape=(1, 8, 8))
    mapping = {k: v.numpy() for k, v in sorted(net.state_dict().items())}
    model.load_state_dict(mapping)
    assert_predicts_like_torch(model, net, (1, 8, 8))


# -- what doesn't fit --------------------------------------------------------------------------------
def test_mismatches_are_listed_exactly():
    model = models.lenet5()
    sd = model.state_dict()
    del sd["3.bias"]
    sd["9.weight"] = np.zeros((84, 99), np.float32)
    sd["20.weight"] = np.zeros((3,), np.float32)
    before = model.state_dict()
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(sd)
    assert info.value.problems == [
        "shape mismatch: 9.weight: file (84, 99), model (84, 120)",
        "missing: 3.bias (model shape (16,))",
        "unexpected: 20.weight (file shape (3,))",
    ]
    for k, v in model.state_dict().items():          # nothing changed
        assert np.array_equal(v, before[k]), k


def test_strict_false_reports_missing_and_unexpected_keys():
    model = models.lenet5()
    sd = models.lenet5(rng=9).state_dict()
    del sd["0.bias"]
    sd["99.weight"] = np.zeros(1, np.float32)
    res = model.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["0.bias"] and res.unexpected_keys == ["99.weight"]
    assert np.array_equal(model.layers[0].weight.value, sd["0.weight"])
    sd["0.weight"] = np.zeros((1, 1, 1, 1), np.float32)     # never a shape mismatch, strict or not
    with pytest.raises(StateDictError, match=r"shape mismatch: 0.weight"):
        model.load_state_dict(sd, strict=False)


def test_named_weights_with_wrong_shapes_say_which():
    net = TorchLeNet()
    net.fc2 = nn.Linear(120, 80)
    net.fc3 = nn.Linear(80, 10)
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    with pytest.raises(StateDictError) as info:
        models.lenet5().load_state_dict(sd)
    assert info.value.problems == [
        "shape mismatch: fc2.weight (-> 9.weight): file (80, 120), model (84, 120)",
        "shape mismatch: fc2.bias (-> 9.bias): file (80,), model (84,)",
        "shape mismatch: fc3.weight (-> 11.weight): file (10, 80), model (10, 84)",
    ]


def test_ambiguous_names_ask_for_a_name_map():
    """Two families of equal Dense layers: which comes first cannot be known from the names."""
    model = numcnn.Sequential([Dense(4, 4, rng=0), ReLU(), Dense(4, 4, rng=1)])
    src = {"head.weight": np.full((4, 4), 1, np.float32), "head.bias": np.zeros(4, np.float32),
           "stem.weight": np.full((4, 4), 2, np.float32), "stem.bias": np.zeros(4, np.float32)}
    with pytest.raises(StateDictError, match="name_map="):
        model.load_state_dict(src)
    model.load_state_dict(src, name_map={"stem": "0", "head": "2"})
    assert model.layers[0].weight.value[0, 0] == 2 and model.layers[2].weight.value[0, 0] == 1
    # and a whole name maps too
    model.load_state_dict({"w": np.full((4, 4), 3, np.float32), "0.bias": np.ones(4, np.float32),
                           "2.weight": np.ones((4, 4), np.float32), "2.bias": np.ones(4, np.float32)},
                          name_map={"w": "0.weight"})
    assert model.layers[0].weight.value[0, 0] == 3


def test_bad_name_map_is_listed():
    model = models.lenet5()
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(model.state_dict(), name_map={"conv9": "0", "0": "1"})
    assert "name_map names 'conv9', which is not in the weights" in info.value.problems
    assert any(p.startswith("name_map maps '0' to '1', which is not a layer") for p in info.value.problems)


def test_torch_tensors_and_non_mappings_are_refused_with_advice():
    model = models.lenet5()
    with pytest.raises(DTypeError, match="NumPy"):
        model.load_state_dict({"0.weight": torch.zeros(6, 1, 5, 5)})
    with pytest.raises(StateDictError, match="mapping"):
        model.load_state_dict([("0.weight", np.zeros(3))])


def test_nan_weights_are_refused():
    model = models.lenet5()
    sd = model.state_dict()
    sd["0.weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(StateDictError, match="non-finite values: 0.weight"):
        model.load_state_dict(sd)


# -- files ------------------------------------------------------------------------------------------
def test_pth_files_are_refused_with_the_conversion_line(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(TorchLeNet().state_dict(), str(path))
    with pytest.raises(ModelFileError, match="never unpickles") as info:
        load_torch_weights(models.lenet5(), path)
    assert 'save_file(model.state_dict(), "weights.safetensors")' in str(info.value)
    # also when renamed: the content gives it away (a zip or a pickle stream)
    renamed = tmp_path / "model.safetensors"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(ModelFileError, match="never unpickles"):
        load_torch_weights(models.lenet5(), renamed)
    legacy = tmp_path / "legacy.safetensors"
    torch.save(TorchLeNet().state_dict(), str(legacy), _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError, match="never unpickles"):
        load_torch_weights(models.lenet5(), legacy)


def test_damaged_safetensors_files_are_refused_cleanly(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_torch_weights(models.lenet5(), tmp_path / "none.safetensors")
    net = TorchLeNet()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    blob = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(ModelFileError, match="cut.safetensors"):
        load_torch_weights(models.lenet5(), tmp_path / "cut.safetensors")
