"""The device side: from a profile to an estimate to a verdict.

    profiles.py        one TOML file per device -> DeviceProfile (fields.py parses the values, stacks.py the
                       runtime stacks a device runs models with and their latency coefficients)
    operators/         each runtime's operator list and what ONNX ops lower to; coverage.py judges a model's nodes
    runtime_memory.py  what a runtime spends in RAM beside the activations (TFLM arena, onnxruntime BFC, ...)
    latency.py         latency features of a model and the per-layer-class cost model
    estimate.py        profile + footprint -> Estimate (flash, RAM, latency, energy) at a precision
    check.py           Estimate + budgets + operator coverage -> per-device verdicts and the tier summary
    calibrate.py       fits a stack's latency coefficients to measurements (timing.py measures in onnxruntime)

Import the submodule you need: this package's own namespace stays empty so that reading a profile never loads the
model-side modules (onnx, numpy).
"""
