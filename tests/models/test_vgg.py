"""VGG19 feature extractor and perceptual loss: loading user-given weights, torch parity."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcavs_jax.convert import vgg as vgg_weights
from pcavs_jax.models import vgg

torch = pytest.importorskip("torch")


def _torch_features() -> "torch.nn.Sequential":
  """torchvision's `vgg19().features` layer for layer (indices match its state-dict keys)."""
  cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"]
  layers, c = [], 3
  for v in cfg:
    if v == "M":
      layers.append(torch.nn.MaxPool2d(2, 2))
    else:
      layers += [torch.nn.Conv2d(c, v, 3, padding=1), torch.nn.ReLU(inplace=False)]
      c = v
  return torch.nn.Sequential(*layers)


@pytest.fixture(scope="module")
def torch_vgg():
  torch.manual_seed(0)
  net = _torch_features().eval()
  state = {f"features.{k}": v.numpy() for k, v in net.state_dict().items()}
  return net, state


@pytest.fixture(scope="module")
def npz_path(torch_vgg, tmp_path_factory):
  path = tmp_path_factory.mktemp("vgg") / "vgg19.npz"
  np.savez(path, **torch_vgg[1])
  return path


def _torch_slices(net, x):
  outs, h = [], x
  for end, start in zip((2, 7, 12, 21, 30), (0, 2, 7, 12, 21)):
    h = net[start:end](h)
    outs.append(h)
  return outs


def test_features_match_torch(torch_vgg, npz_path):
  net, _ = torch_vgg
  params = vgg_weights.load_vgg19_weights(npz_path)
  assert sorted(params) == sorted(name for name, *_ in vgg.VGG19_CONVS)
  x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
  with torch.no_grad():
    want = [t.numpy() for t in _torch_slices(net, torch.from_numpy(x))]
  got = vgg.VGG19().apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1)))
  assert len(got) == 5
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_perceptual_loss_matches_torch_and_its_properties(torch_vgg, npz_path):
  net, _ = torch_vgg
  params = vgg_weights.load_vgg19_weights(npz_path)
  rng = np.random.default_rng(1)
  fake = rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)
  real = rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)

  def torch_loss(a, b):
    mean = torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
    prep = lambda t: ((torch.from_numpy(t.transpose(0, 3, 1, 2)) + 1) / 2 - mean) / std
    with torch.no_grad():
      fa, fb = _torch_slices(net, prep(a)), _torch_slices(net, prep(b))
    return sum(w * torch.mean(torch.abs(x - y)).item()
               for w, x, y in zip(vgg.PERCEPTUAL_WEIGHTS, fa, fb))

  loss_fn = jax.jit(vgg.perceptual_loss)
  ours = float(loss_fn(params, jnp.asarray(fake), jnp.asarray(real)))
  assert ours == pytest.approx(torch_loss(fake, real), rel=1e-4)
  assert float(loss_fn(params, jnp.asarray(real), jnp.asarray(real))) == 0.0
  g_fake, g_real = jax.grad(loss_fn, argnums=(1, 2))(params, jnp.asarray(fake), jnp.asarray(real))
  assert float(jnp.abs(g_fake).sum()) > 0 and float(jnp.abs(g_real).sum()) == 0


def test_loads_torchvision_pth(torch_vgg, tmp_path):
  pytest.importorskip("pcavs_jax.convert.torch_pickle")
  net, state = torch_vgg
  path = tmp_path / "vgg19-dcbb9e9d.pth"
  full = {f"features.{k}": v for k, v in net.state_dict().items()}
  full["classifier.0.weight"] = torch.zeros(4, 4)   # extra keys are ignored
  torch.save(full, path)
  params = vgg_weights.load_vgg19_weights(path)
  np.testing.assert_array_equal(params["conv3_1"]["kernel"],
                                state["features.10.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["conv5_1"]["bias"], state["features.28.bias"])


def test_bad_files_give_clear_errors(torch_vgg, tmp_path):
  _, state = torch_vgg
  with pytest.raises(FileNotFoundError):
    vgg_weights.load_vgg19_weights(tmp_path / "missing.npz")

  wrong = dict(state)
  wrong["features.0.weight"] = np.zeros((64, 1, 3, 3), np.float32)   # a grey-input VGG
  del wrong["features.28.bias"]
  path = tmp_path / "wrong.npz"
  np.savez(path, **wrong)
  with pytest.raises(vgg_weights.VGGWeightsError, match=r"features\.0.*expected \(64, 3, 3, 3\)") as e:
    vgg_weights.load_vgg19_weights(path)
  assert "features.28" in str(e.value)

  other = tmp_path / "resnet.npz"
  np.savez(other, **{"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
  with pytest.raises(vgg_weights.VGGWeightsError, match="does not hold torchvision VGG19"):
    vgg_weights.load_vgg19_weights(other)

  text = tmp_path / "notes.pth"
  text.write_text("not a checkpoint")
  with pytest.raises(vgg_weights.VGGWeightsError):
    vgg_weights.load_vgg19_weights(text)
