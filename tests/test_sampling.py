import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.sampling import multistep_sample, sample_noise


def _spy():
  calls = []

  def f(params, x, t):
    calls.append((np.asarray(x), np.asarray(t)))
    return params * x

  return f, calls


def test_one_step_is_f_of_scaled_noise():
  f, calls = _spy()
  z = sample_noise(jax.random.key(0), 4, (8, 8, 1))
  out = multistep_sample(f, 0.5, z, (80.0,))
  np.testing.assert_allclose(calls[0][0], 80.0 * np.asarray(z), rtol=1e-6)
  np.testing.assert_array_equal(calls[0][1], np.full(4, 80.0, np.float32))
  np.testing.assert_allclose(np.asarray(out), 40.0 * np.asarray(z), rtol=1e-6)


@pytest.mark.parametrize("renoise,std", [("cm", (0.821**2 - 0.002**2) ** 0.5), ("plain", 0.821)])
def test_two_step_renoise_std(renoise, std):
  f, calls = _spy()
  z = jnp.zeros((4096, 1, 1, 1))
  multistep_sample(f, 1.0, z, (80.0, 0.821), key=jax.random.key(1), renoise=renoise)
  second_in, second_t = calls[1]
  assert np.allclose(second_t, 0.821)
  # x after step 1 is 0, so the second input is pure re-noising noise with std s(tau).
  assert abs(second_in.std() - std) < 0.03 * std


def test_samples_do_not_depend_on_chunking():
  f = lambda p, x, t: jnp.tanh(p * x) + 0.1 * t[:, None, None, None]
  key, rkey = jax.random.key(2), jax.random.key(3)
  whole = multistep_sample(f, 0.3, sample_noise(key, 8, (4, 4, 1)), (80.0, 1.0, 0.5), rkey)
  parts = [multistep_sample(f, 0.3, sample_noise(key, 4, (4, 4, 1), start=s), (80.0, 1.0, 0.5),
                            rkey, first_index=s) for s in (0, 4)]
  np.testing.assert_allclose(np.asarray(whole), np.concatenate([np.asarray(p) for p in parts]),
                             rtol=1e-6)
  # ... and the key matters.
  other = multistep_sample(f, 0.3, sample_noise(key, 8, (4, 4, 1)), (80.0, 1.0, 0.5),
                           jax.random.key(4))
  assert not np.allclose(np.asarray(whole), np.asarray(other))


def test_multistep_needs_key():
  with pytest.raises(ValueError, match="needs a key"):
    multistep_sample(lambda p, x, t: x, None, jnp.zeros((1, 2, 2, 1)), (80.0, 1.0))
