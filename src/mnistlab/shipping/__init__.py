"""The shipping stage: model files, prediction on real pictures, ONNX export, compression and
an HTTP API with a draw-a-digit page.

    from mnistlab.shipping import load_model, preprocess_image

    model = load_model("runs/fast")  # run folder, model folder, model.json, .safetensors, .onnx
    prediction = model.predict(preprocess_image(open("digit.jpg", "rb").read()))[0]
    print(prediction.label, prediction.confidence, prediction.top3)
    reading = read_number_file(open("postcode.jpg", "rb").read(), model)  # a whole number
    print(reading.text, reading.confidence, [d.box for d in reading.digits])

See docs/shipping.md. Names load on first use (:mod:`mnistlab._lazy`), so that importing one
module of the stage (e.g. the number reader's config, for the command line) loads no other;
:mod:`mnistlab.shipping.onnx` (``export_onnx``), :mod:`mnistlab.shipping.compress`
(``compress_model``) and :mod:`mnistlab.shipping.serve` (``create_app``, ``serve``) are
imported by name.
"""

from mnistlab._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    globals(),
    {
        "errors": ("InputError",),
        "model": (
            "Calibration",
            "Prediction",
            "ShippedModel",
            "find_manifest",
            "load_model",
            "read_calibration",
        ),
        "preprocess": ("decode_image", "preprocess_image", "to_mnist", "validate_array"),
        "read": ("NumberReading", "ReadDigit", "read_number", "read_number_file"),
    },
)
