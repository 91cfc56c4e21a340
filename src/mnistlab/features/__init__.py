"""The features and labels stage: from images and labels to what a model consumes.

- :mod:`mnistlab.features.preprocess`: scikit-learn transformers over batches of images
  (``(N, H, W)`` or flattened): :class:`PixelScaler`, :class:`Standardizer`,
  :class:`Flattener`, :class:`Deskewer`, and the hand-made features :class:`HOGFeatures`,
  :class:`GradientFeatures`, :class:`ShapeFeatures`. They compose in a
  :class:`sklearn.pipeline.Pipeline` (use :class:`sklearn.decomposition.PCA` for PCA).
- :mod:`mnistlab.features.labels`: :func:`one_hot`, :func:`smooth_labels`, :func:`decode`,
  :func:`top_k`.
- :mod:`mnistlab.features.augment`: seeded, batched data augmentation in torch (the same
  definitions serve the classic models and the deep-learning training engine).
- :mod:`mnistlab.features.corruptions`: an MNIST-C-style corruption suite (noise, blur,
  geometry, lighting, overlays, edges, inversion) with five severities, built on the same
  geometric ops; used as augmentation and by :mod:`mnistlab.robustness`.

Example::

    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from mnistlab.features import Deskewer, PixelScaler

    model = make_pipeline(Deskewer(), PixelScaler(), PCA(50), LogisticRegression(max_iter=1000))
    model.fit(train.images, train.labels)
"""

from mnistlab._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    globals(),
    {
        "augment": (
            "Augmenter",
            "affine",
            "augment_batch",
            "augment_images",
            "elastic",
            "elastic_displacement",
            "gaussian_noise",
            "rotate",
            "salt_pepper",
            "scale",
            "translate",
        ),
        "augment_config": (
            "AUGMENT_PRESETS",
            "AugmentConfig",
            "get_augment_preset",
            "resolve_augment",
        ),
        "corruptions": (
            "CORRUPTIONS",
            "SEVERITIES",
            "Corruption",
            "corrupt",
            "corruption_names",
            "get_corruption",
            "random_corruptions",
        ),
        "labels": ("decode", "one_hot", "smooth_labels", "top_k"),
        "preprocess": (
            "Deskewer",
            "Flattener",
            "GradientFeatures",
            "HOGFeatures",
            "PixelScaler",
            "ShapeFeatures",
            "Standardizer",
            "image_moments",
        ),
    },
)
