"""The shipping stage: model files, prediction on real pictures, ONNX export, compression and
an HTTP API with a draw-a-digit page.

    from mnistlab.shipping import load_model, preprocess_image

    model = load_model("runs/fast")  # run folder, model folder, model.json, .safetensors, .onnx
    prediction = model.predict(preprocess_image(open("digit.jpg", "rb").read()))[0]
    print(prediction.label, prediction.confidence, prediction.top3)
    reading = read_number_file(open("postcode.jpg", "rb").read(), model)  # a whole number
    print(reading.text, reading.confidence, [d.box for d in reading.digits])

See docs/shipping.md. The heavier parts load on demand: :mod:`mnistlab.shipping.onnx`
(``export_onnx``), :mod:`mnistlab.shipping.compress` (``compress_model``) and
:mod:`mnistlab.shipping.serve` (``create_app``, ``serve``).
"""

from mnistlab.shipping.errors import InputError
from mnistlab.shipping.model import (
    Calibration,
    Prediction,
    ShippedModel,
    find_manifest,
    load_model,
    read_calibration,
)
from mnistlab.shipping.preprocess import decode_image, preprocess_image, to_mnist, validate_array
from mnistlab.shipping.read import NumberReading, ReadDigit, read_number, read_number_file

__all__ = [
    "Calibration",
    "InputError",
    "NumberReading",
    "Prediction",
    "ReadDigit",
    "ShippedModel",
    "decode_image",
    "find_manifest",
    "load_model",
    "preprocess_image",
    "read_calibration",
    "read_number",
    "read_number_file",
    "to_mnist",
    "validate_array",
]
