"""edgefit analyze end to end: the MLPerf Tiny reference counts, the JSON contract and the CLI."""

import json

import pytest

import edgefit
from edgefit.cli import main

# Keras reference parameter counts of the MLPerf Tiny models (with BatchNorm / with BN folded into the convs),
# and the MACs their papers quote (DS-CNN 2.7 M, MobileNetV1-0.25 7.5 M, ResNet-8 12.5 M, FC-AE 0.264 M).
MLPERF_TINY = {
    "kws_dscnn.onnx": (24_908, 22_604, 2_656_768),
    "vww_mobilenet_v1_025.onnx": (221_794, 210_850, 7_489_664),
    "ic_resnet8.onnx": (78_666, 77_706, 12_501_632),
    "ad_autoencoder.onnx": (269_992, 265_864, 264_192),
}


@pytest.mark.parametrize("name", sorted(MLPERF_TINY))
def test_mlperf_tiny_reference_counts(samples, name):
    with_bn, folded, macs = MLPERF_TINY[name]
    fp = edgefit.analyze(samples / name)
    bn_params = sum(layer.params for layer in fp.layers if layer.op_type == "BatchNormalization")
    assert fp.params == with_bn
    assert fp.params - bn_params == folded
    assert fp.weight_bytes == 4 * with_bn
    assert fp.macs == macs
    assert fp.unknowns == ()
    assert fp.activation_lower_bound_bytes <= fp.peak_activation_bytes <= fp.file_order_peak_bytes


def test_kws_activation_peak_by_hand(samples):
    # The first conv writes 64 x 25 x 5 float32 = 32,000 B; its BN reads that and writes as much: 64,000 B.
    fp = edgefit.analyze(samples / "kws_dscnn.onnx")
    assert fp.peak_activation_bytes == 64_000
    assert fp.inputs == {"input": [1, 1, 49, 10]}


def test_json_has_the_contract_keys(samples, capsys):
    assert main(["analyze", str(samples / "ic_resnet8.onnx"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("params", "weight_bytes", "macs", "flops", "peak_activation_bytes", "activation_lower_bound_bytes",
                "inputs", "unknowns", "layers"):
        assert key in data
    assert data["params"] == 78_666
    first = data["layers"][0]
    assert set(first) >= {"name", "op_type", "params", "macs", "output_bytes"}
    assert sum(layer["macs"] for layer in data["layers"]) == data["macs"]


def test_api_mirrors_cli(samples, capsys):
    path = samples / "digits_cnn.onnx"
    assert main(["analyze", str(path), "--dim", "batch=4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    fp = edgefit.analyze(path, dims={"batch": 4})
    assert data.pop("tier_summary").startswith("Fits: Cloud, Edge, Mobile")
    assert data == json.loads(json.dumps(fp.to_dict()))
    assert fp.inputs["input"] == [4, 1, 8, 8]
    assert fp.warnings == ()


def test_input_shape_scales_costs(samples):
    one = edgefit.analyze(samples / "digits_cnn.onnx", input_shapes={"input": [1, 1, 8, 8]})
    eight = edgefit.analyze(samples / "digits_cnn.onnx", input_shapes={"input": [8, 1, 8, 8]})
    assert eight.macs == 8 * one.macs
    assert eight.params == one.params


def test_unbound_batch_dim_warns_and_defaults_to_one(samples, capsys):
    assert main(["analyze", str(samples / "digits_cnn.onnx")]) == 0
    out = capsys.readouterr().out
    assert "batch dimension set to 1 (batch of input)" in out


def test_per_layer_lists_every_layer(samples, capsys):
    assert main(["analyze", str(samples / "kws_dscnn.onnx"), "--per-layer"]) == 0
    out = capsys.readouterr().out
    for name in ("conv1", "block4_pw", "fc"):
        assert name in out
    assert "Op histogram" in out


@pytest.mark.parametrize("name", sorted(MLPERF_TINY))
def test_fused_mlperf_models_have_the_bn_folded_reference_counts(samples, name):
    # The fuse pass folds every BatchNorm into its conv/dense layer: the folded Keras count, same MACs.
    import onnx

    from edgefit.passes import fuse

    with_bn, folded, macs = MLPERF_TINY[name]
    fp = edgefit.analyze(fuse(onnx.load(samples / name)).model)
    assert fp.params == folded
    assert fp.macs == macs
    assert "BatchNormalization" not in fp.op_histogram
