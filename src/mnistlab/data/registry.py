"""The registry of MNIST-format datasets: mirrors, files, sizes, checksums, class names.

Every file has the SHA-256 and size of the copy published on the public mirrors, and, where
known, the SHA-256 and size of its decompressed IDX payload. A download is accepted when
either matches: re-compressed copies of the official data are common (their gzip bytes
differ while the payload is identical), so the payload hash is the stronger identity.

Sources of the numbers: the files themselves (MNIST, Fashion-MNIST payloads, mnist-mini),
TensorFlow Datasets' published URL checksums (sizes and SHA-256 of the public .gz files),
and the datasets' own READMEs (class names, split sizes, QMNIST's label columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

SPLITS = ("train", "test")

#: The most classes a dataset may have (labels 0..MAX_CLASSES-1). An import whose largest label
#: is past it is refused before anything proportional to the label (its class names) is built.
MAX_CLASSES = 1000


@dataclass(frozen=True)
class RemoteFile:
    """One data file as published (``name`` on the mirrors) and as cached (``local_name``).

    ``size``/``sha256`` describe the published bytes (usually gzip); ``payload_size``/
    ``payload_sha256`` the decompressed IDX file that the cache keeps. ``None`` = unknown.
    """

    name: str
    size: int | None
    sha256: str | None
    payload_size: int | None
    payload_sha256: str | None

    @property
    def local_name(self) -> str:
        """The cached (decompressed) file name: ``name`` without ``.gz``."""
        return self.name[:-3] if self.name.endswith(".gz") else self.name


@dataclass(frozen=True)
class SplitFiles:
    """The image and label files of one split, and its number of examples."""

    images: RemoteFile
    labels: RemoteFile
    count: int


@dataclass(frozen=True)
class DatasetSpec:
    """Everything mnistlab knows about a dataset before it has a byte of it.

    Attributes:
        name: registry key, e.g. ``"fashion-mnist"``.
        title: human-readable name.
        description: one sentence.
        homepage: where the dataset is documented.
        license: the data's license.
        class_names: one name per label value.
        mirrors: base URLs tried in order (``https://``, ``http://``, ``file://`` or a path).
        splits: ``"train"``/``"test"`` -> files.
        label_column: for 2-D label files (QMNIST), the column holding the class.
        bundled: shipped inside the package (no download, always available).
        origin: ``"registry"`` for built-in datasets, ``"imported"`` for user imports.
        builder: ``"module:function"`` that builds the files locally instead of fetching them
            from mirrors (``function(spec, directory, force) -> directory``), e.g. from data
            another package ships; ``None`` for datasets fetched from mirrors.
    """

    name: str
    title: str
    description: str
    homepage: str
    license: str
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...]
    splits: Mapping[str, SplitFiles]
    label_column: int | None = None
    bundled: bool = False
    origin: str = "registry"
    image_shape: tuple[int, int] = (28, 28)
    notes: tuple[str, ...] = field(default=())
    builder: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def files(self) -> list[RemoteFile]:
        """All files of all splits, images before labels, train before test."""
        return [f for s in self.splits.values() for f in (s.images, s.labels)]

    @property
    def payload_bytes(self) -> int:
        """Bytes the decompressed dataset takes in the cache (0 if unknown)."""
        return sum(f.payload_size or 0 for f in self.files)

    @property
    def download_bytes(self) -> int:
        """Bytes of the published files (0 if unknown)."""
        return sum(f.size or 0 for f in self.files)


def _images(name: str, n: int, size: int | None, sha: str | None, psha: str | None) -> RemoteFile:
    return RemoteFile(name, size, sha, 16 + n * 28 * 28, psha)


def _labels(name: str, n: int, size: int | None, sha: str | None, psha: str | None) -> RemoteFile:
    return RemoteFile(name, size, sha, 8 + n, psha)


DIGITS = tuple(str(d) for d in range(10))

MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    description="Handwritten digits 0-9 (LeCun, Cortes, Burges), the official 60k/10k split.",
    homepage="http://yann.lecun.com/exdb/mnist/",
    license="CC BY-SA 3.0",
    class_names=DIGITS,
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    splits=MappingProxyType(
        {
            "train": SplitFiles(
                _images(
                    "train-images-idx3-ubyte.gz",
                    60000,
                    9912422,
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                ),
                _labels(
                    "train-labels-idx1-ubyte.gz",
                    60000,
                    28881,
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                ),
                60000,
            ),
            "test": SplitFiles(
                _images(
                    "t10k-images-idx3-ubyte.gz",
                    10000,
                    1648877,
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                ),
                _labels(
                    "t10k-labels-idx1-ubyte.gz",
                    10000,
                    4542,
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                ),
                10000,
            ),
        }
    ),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    description="Zalando article images in 10 clothing classes, a drop-in MNIST replacement.",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        # Debian's `dataset-fashion-mnist` package, when installed.
        "/usr/share/datasets/fashion-mnist/",
    ),
    splits=MappingProxyType(
        {
            "train": SplitFiles(
                _images(
                    "train-images-idx3-ubyte.gz",
                    60000,
                    26421880,
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                ),
                _labels(
                    "train-labels-idx1-ubyte.gz",
                    60000,
                    29515,
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                ),
                60000,
            ),
            "test": SplitFiles(
                _images(
                    "t10k-images-idx3-ubyte.gz",
                    10000,
                    4422102,
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                ),
                _labels(
                    "t10k-labels-idx1-ubyte.gz",
                    10000,
                    5148,
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                ),
                10000,
            ),
        }
    ),
)

KMNIST = DatasetSpec(
    name="kmnist",
    title="Kuzushiji-MNIST",
    description="Cursive Japanese (Kuzushiji) characters, 10 hiragana classes, MNIST format.",
    homepage="https://github.com/rois-codh/kmnist",
    license="CC BY-SA 4.0",
    class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    mirrors=(
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ),
    splits=MappingProxyType(
        {
            "train": SplitFiles(
                _images(
                    "train-images-idx3-ubyte.gz",
                    60000,
                    18165135,
                    "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                    None,
                ),
                _labels(
                    "train-labels-idx1-ubyte.gz",
                    60000,
                    29497,
                    "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                    None,
                ),
                60000,
            ),
            "test": SplitFiles(
                _images(
                    "t10k-images-idx3-ubyte.gz",
                    10000,
                    3041136,
                    "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                    None,
                ),
                _labels(
                    "t10k-labels-idx1-ubyte.gz",
                    10000,
                    5120,
                    "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                    None,
                ),
                10000,
            ),
        }
    ),
)

# QMNIST labels are an idx2-int file: (N, 8) int32 rows of class, NIST series, writer id,
# digit index, NIST class code, global NIST index, duplicate flag, unused. mnistlab keeps
# column 0 (the digit); the other columns are in the cached file for whoever wants them.
QMNIST = DatasetSpec(
    name="qmnist",
    title="QMNIST",
    description="MNIST rebuilt from NIST (Yadav & Bottou); its test split has all 60k digits.",
    homepage="https://github.com/facebookresearch/qmnist",
    license="BSD-style (see the QMNIST repository)",
    class_names=DIGITS,
    mirrors=("https://raw.githubusercontent.com/facebookresearch/qmnist/master/",),
    splits=MappingProxyType(
        {
            "train": SplitFiles(
                _images(
                    "qmnist-train-images-idx3-ubyte.gz",
                    60000,
                    9704059,
                    "9e26a7bf1683614e065d7b76460ccd52807165b3f22561fb782bd9f38c52b51d",
                    None,
                ),
                RemoteFile(
                    "qmnist-train-labels-idx2-int.gz",
                    463024,
                    "2c05dc77f6b916b38e455e97ab129a42a444f3dbef09b278a366f82904e0dd9f",
                    12 + 60000 * 8 * 4,
                    None,
                ),
                60000,
            ),
            "test": SplitFiles(
                _images(
                    "qmnist-test-images-idx3-ubyte.gz",
                    60000,
                    9742279,
                    "43fc22bf7498b8fc98de98369d72f752d0deabc280a43a7bcc364ab19e57b375",
                    None,
                ),
                RemoteFile(
                    "qmnist-test-labels-idx2-int.gz",
                    526800,
                    "9fbcbe594c3766fdf4f0b15c5165dc0d1e57ac604e01422608bb72c906030d06",
                    12 + 60000 * 8 * 4,
                    None,
                ),
                60000,
            ),
        }
    ),
    label_column=0,
    notes=("The first 10,000 test images reconstruct the MNIST test set.",),
)

# A stratified subset of the official MNIST splits, shipped in the package so that mnistlab
# and its tests work with no network. Made by scripts/make_mnist_mini.py (seed 0).
MNIST_MINI = DatasetSpec(
    name="mnist-mini",
    title="MNIST-mini",
    description="500 training and 100 test images per class from the official MNIST splits.",
    homepage="http://yann.lecun.com/exdb/mnist/",
    license="CC BY-SA 3.0",
    class_names=DIGITS,
    mirrors=(),
    splits=MappingProxyType(
        {
            "train": SplitFiles(
                _images(
                    "train-images-idx3-ubyte.gz",
                    5000,
                    None,
                    None,
                    "291661882f80bfc1e8fc3c7ea17a7ed78362748efbfa17feda6a4618fa3c6f3a",
                ),
                _labels(
                    "train-labels-idx1-ubyte.gz",
                    5000,
                    None,
                    None,
                    "1531493183c30b840499aae3621a48abf90a239236dbfe6c2e0e7e5b4847c49a",
                ),
                5000,
            ),
            "test": SplitFiles(
                _images(
                    "t10k-images-idx3-ubyte.gz",
                    1000,
                    None,
                    None,
                    "f4acc56b6ca9037bbe1a1d51e6ce3bed3a6cf91260c68e2afc9ce3c48b5a5f32",
                ),
                _labels(
                    "t10k-labels-idx1-ubyte.gz",
                    1000,
                    None,
                    None,
                    "4f20202d40f70716476f48d9e70df84ad3c74f31e2ab30690fc5a271c1cd4d55",
                ),
                1000,
            ),
        }
    ),
    bundled=True,
)

# scikit-learn's bundled 8x8 digits (the UCI optdigits test set: 13 writers), converted to
# MNIST form by mnistlab.data.sklearn_digits; built locally, no mirrors. Its payload hashes are
# those of that (integer, machine-independent) conversion.
_SKD_IMAGES = "45c23e0a063495cf914c297aba3f886ff587d8940a8c8571c9f60864a31ee69c"
_SKD_LABELS = "ce71631c1f31ce56fa54f31d1d498fafacff59b001e6c30c4a5e29508aa277ad"
SKLEARN_DIGITS = DatasetSpec(
    name="sklearn-digits",
    title="scikit-learn digits (MNIST form)",
    description="scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits test set, 13 "
    "writers), scaled to a 20-pixel box and centred by mass in 28x28; a test split only.",
    homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
    license="CC BY 4.0",
    builder="mnistlab.data.sklearn_digits:build_dataset",
    class_names=DIGITS,
    mirrors=(),
    splits=MappingProxyType(
        {
            "test": SplitFiles(
                _images("sklearn-digits-test-images-idx3-ubyte", 1797, None, None, _SKD_IMAGES),
                _labels("sklearn-digits-test-labels-idx1-ubyte", 1797, None, None, _SKD_LABELS),
                1797,
            ),
        }
    ),
    notes=("Built from scikit-learn's bundled copy by `mnistlab data fetch sklearn-digits`.",),
)

REGISTRY: Mapping[str, DatasetSpec] = MappingProxyType(
    {spec.name: spec for spec in (MNIST, FASHION_MNIST, KMNIST, QMNIST, MNIST_MINI, SKLEARN_DIGITS)}
)
