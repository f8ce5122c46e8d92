"""Installs microexp, its console script and its dependencies (ranges here; exact pins in constraints.txt).

``install_requires`` holds the ranges the library is known to need, so that microexp installs next to
other packages; the exact versions the README's set-up uses (and the tests were run with) live in
``constraints.txt`` and are applied by ``make install`` (``pip install -c constraints.txt -e '.[test]'``).

* torch >= 2.5 (``torch.onnx.export(dynamo=...)``, ``torch.load(mmap=...)``); torchvision releases each
  require one exact torch release, so pip picks a matching pair (0.20 pairs with 2.5).
* scikit-learn >= 1.6: ``GroupKFold(shuffle=True, random_state=...)`` is new in 1.6.
* decord has wheels only for x86_64 Linux and 64-bit Windows: elsewhere (ARM Linux, macOS) it is not
  installed and video files are read with PyAV (``av``), the fallback :mod:`microexp.data.video` uses
  whenever decord is missing.
* pytorchvideo 0.1.5 is the only release and only its ``models``/``layers``/``data`` modules are used.
* Only one OpenCV wheel may be installed: the contrib build carries TV-L1 optical flow and (4.x) the Haar
  face cascades that the predictor uses, so it is the one we require.
"""

from setuptools import find_packages, setup

#: where decord publishes wheels (PEP 508 environment marker)
DECORD_PLATFORMS = ('(platform_system == "Linux" and platform_machine == "x86_64") or '
                    '(platform_system == "Windows" and platform_machine == "AMD64")')

SLURM = ["submitit>=1.5,<2"]
ONNX = ["onnx>=1.16,<2", "onnxruntime>=1.18,<2", "onnxscript>=0.1,<1"]

INSTALL_REQUIRES = [
    "torch>=2.5,<3",
    "torchvision>=0.20,<1",
    "pytorchvideo>=0.1.5,<0.2",
    f"decord>=0.6,<0.7; {DECORD_PLATFORMS}",
    "av>=12,<20",
    "numpy>=1.24,<3",
    "pandas>=2.0,<4",
    "openpyxl>=3.1,<4",
    "scikit-learn>=1.6,<2",
    "optuna>=4.0,<6",
    "opencv-contrib-python-headless>=4.8,<5",
    "PyYAML>=6.0,<7",
    "tqdm>=4.60,<5",
    "matplotlib>=3.7,<4",
    "pillow>=10",
]

setup(
    name="microexp",
    version="0.1.0",
    description="Micro-expression video recognition toolkit: DFME-style data, models, protocols and studies",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["microexp", "microexp.*"]),
    package_data={"microexp.data": ["*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # psycopg2: the PostgreSQL sweep test, which writes postgresql+psycopg2:// (a bare postgresql:// URL
        # means psycopg 3 to SQLAlchemy 2.x: pip install 'psycopg[binary]')
        "test": ["pytest>=7", *ONNX, "psycopg2-binary>=2.9", "packaging>=23", *SLURM],
        "export": ONNX,
        "postgres": ["psycopg2-binary>=2.9"],
        # --launcher submitit: Slurm job arrays (the tests use submitit's local executor, no Slurm needed)
        "slurm": SLURM,
        # optional video backend (data.backend=torchcodec); needs the system FFmpeg 4-9 libraries
        # (Debian/Ubuntu: apt install ffmpeg); each torchcodec release pairs with one torch release
        "torchcodec": ["torchcodec>=0.7"],
    },
    entry_points={"console_scripts": ["microexp=microexp.cli:main"]},
)
