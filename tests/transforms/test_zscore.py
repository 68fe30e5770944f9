"""ZClip: its closed form, the numbers of the reference implementation (bluorion-com/ZClip), and its
options and defaults as the reference's."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import MODES

import keras_stability as ks


@pytest.mark.parametrize("mode", MODES)
def test_zclip_closed_form(mode):
    transform = ks.zclip(alpha=0.5, z_threshold=1.0, warmup=2, max_grad_norm=None)
    variables = [keras.Variable([0.0], name="w")]
    transform.build(variables)
    step = tf.function(transform, jit_compile=mode == "jit") if mode != "eager" else transform
    outputs = [float(step([tf.constant([n])], variables)[0][0][0]) for n in [1.0, 3.0, 2.5, 10.0]]
    # Warm-up norms 1, 3 → μ = 2, σ² = 1. Norm 2.5: z = 0.5 ≤ 1, kept; μ = 2.25, σ² = 0.5·1 + 0.5·0.0625
    # = 0.53125. Norm 10: σ = 0.72887, z = 7.75/0.72887 = 10.633 > 1 → threshold μ + σ/z = 2.31855.
    sigma = np.sqrt(0.53125)
    z = (10.0 - 2.25) / (sigma + 1e-6)
    np.testing.assert_allclose(outputs, [1.0, 3.0, 2.5, 2.25 + sigma / z], rtol=1e-5)
    effective = 2.25 + sigma / z
    mean = 0.5 * 2.25 + 0.5 * effective
    np.testing.assert_allclose(transform.mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(transform.variance.numpy(), 0.5 * 0.53125 + 0.5 * (effective - mean) ** 2, rtol=1e-5)


def reference_zclip(
    norms_seen,
    alpha=0.97,
    z_thresh=2.5,
    max_grad_norm=1.0,
    warmup_steps=25,
    mode="zscore",
    clip_option="adaptive_scaling",
    eps=1e-6,
):
    """bluorion-com/ZClip's `ZClip.step`, in plain Python: the norm each step is clipped to."""
    buffer, mean, var, applied = [], None, None, []
    for norm in norms_seen:
        if mean is None:
            buffer.append(norm)
            if len(buffer) >= warmup_steps:
                mean = sum(buffer) / len(buffer)
                var = sum((x - mean) ** 2 for x in buffer) / len(buffer)
            applied.append(min(norm, max_grad_norm) if max_grad_norm is not None else norm)
            continue
        std = var**0.5
        clip_val = None
        if mode == "percentile":
            clip_val = mean + z_thresh * std if norm > mean + z_thresh * std else None
        else:
            z = (norm - mean) / (std + eps)
            if z > z_thresh:
                clip_val = mean + z_thresh * std / (z / z_thresh) if clip_option == "adaptive_scaling" else mean
        effective = clip_val if clip_val is not None else norm
        if max_grad_norm is not None:
            effective_clip = min(effective, max_grad_norm)
        else:
            effective_clip = effective
        applied.append(min(norm, effective_clip))
        new = clip_val if clip_val is not None else norm
        mean = alpha * mean + (1 - alpha) * new
        var = alpha * var + (1 - alpha) * (new - mean) ** 2
    return np.array(applied)


@pytest.mark.parametrize(
    "options",
    [{}, {"max_grad_norm": None}, {"mode": "percentile"}, {"clip_option": "mean", "max_grad_norm": 2.0}],
    ids=["defaults", "uncapped", "percentile", "mean-capped-at-2"],
)
def test_zclip_matches_the_reference_implementation(options):
    # Norms of 0.8–2.4 with spikes: with the reference's defaults the cap at 1.0 acts on most steps.
    rng = np.random.default_rng(0)
    seen = rng.uniform(0.8, 2.4, 120)
    seen[[40, 70, 100]] = [9.0, 15.0, 30.0]
    keyword = {"max_grad_norm": "max_grad_norm", "mode": "mode", "clip_option": "clip_option"}
    transform = ks.zclip(**{keyword[k]: v for k, v in options.items()})
    variables = [keras.Variable([0.0], name="w")]
    transform.build(variables)
    got = [float(np.abs(transform([tf.constant([n], tf.float32)], variables)[0][0][0])) for n in seen]
    np.testing.assert_allclose(got, reference_zclip(seen, **options), rtol=1e-5)


def test_zclip_experiment_spec_takes_the_same_options():
    from typing import get_args

    from keras_stability.config.transform_specs import ZClipSpec
    from keras_stability.transforms import zscore

    fields = ZClipSpec.model_fields
    assert get_args(fields["mode"].annotation) == zscore.MODES
    assert get_args(fields["clip_option"].annotation) == zscore.CLIP_OPTIONS
    spec = ZClipSpec(name="zclip").model_dump()
    assert {k: v for k, v in spec.items() if k != "name"} == {
        k: v for k, v in ks.zclip().get_config().items() if k != "eps"
    }


def test_zclip_defaults_are_the_reference_defaults():
    assert ks.zclip().get_config() == {
        "alpha": 0.97,
        "z_threshold": 2.5,
        "warmup": 25,
        "eps": 1e-6,
        "max_grad_norm": 1.0,
        "mode": "zscore",
        "clip_option": "adaptive_scaling",
    }
